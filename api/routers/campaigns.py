"""Campaigns: drafts, tests, saving; admins of a company with the add-on only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import time

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import (
    CampaignAdminDep,
    NowDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    TemplatesDep,
    WorkflowsDep,
)
from api.errors import answers
from api.schemas import (
    CampaignCreate,
    CampaignOut,
    CampaignStatusOut,
    CampaignSummary,
    CampaignTest,
    CampaignTestOut,
    CampaignUpdate,
    CancelledTouchpointOut,
    Limit,
    NumbersOut,
    Offset,
    PathId,
    TestSendOut,
    TouchpointIn,
    TouchpointOut,
)
from errors import UnavailableError
from mail.message import message_id_for
from orchestration import WorkflowsUnavailableError
from store import campaign_status
from store import campaigns as store
from store import numbers as numbers_store
from store.campaign_status import Told
from store.candidates import get_candidate
from store.messages import wait_for_sends
from store.models import (
    Campaign,
    CampaignStatus,
    Company,
    ExitOption,
    Message,
    MessageSource,
    MessageState,
    Touchpoint,
)
from store.session import transaction
from workflows.contracts import CampaignTestInput

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=answers(401, 403))


def _specs(touchpoints: Sequence[TouchpointIn]) -> list[store.TouchpointSpec]:
    return [
        store.TouchpointSpec(
            subject=t.subject,
            body=t.body,
            format=t.format,
            sender_user_id=t.sender_user_id,
            send_time=t.send_time,
            interval_days=t.interval_days,
        )
        for t in touchpoints
    ]


async def campaign_out(session: AsyncSession, company: Company, campaign: Campaign) -> CampaignOut:
    touchpoints: Sequence[Touchpoint] = await store.list_touchpoints(session, campaign.id)
    out, offset = [], 0
    for t in touchpoints:
        offset += t.interval_days
        out.append(
            TouchpointOut(
                number=t.position + 1,
                day_offset=offset,
                subject=t.subject,
                body=t.body,
                format=t.format,
                sender_user_id=t.sender_user_id,
                send_time=time(t.send_hour, t.send_minute),
                interval_days=t.interval_days if t.position else None,
            )
        )
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        description=campaign.description,
        status=campaign.status,
        exit_options=[ExitOption(o) for o in campaign.exit_options],
        time_zone=company.time_zone,
        created_at=campaign.created_at,
        saved_at=campaign.saved_at,
        touchpoints=out,
    )


@router.post("", status_code=201, response_model=CampaignOut, responses=answers(422, 503))
async def create_campaign(
    body: CampaignCreate, company: CampaignAdminDep, session: SessionDep, templates: TemplatesDep
) -> CampaignOut:
    # Templates take seconds to check: checked before the transaction, which holds a
    # connection of the pool from its first query to its end.
    checked = await store.check_touchpoints(company, _specs(body.touchpoints), templates)
    async with session.begin():
        campaign = await store.create_campaign(
            session,
            company,
            name=body.name,
            description=body.description,
            exit_options=sorted(o.value for o in body.exit_options),
            touchpoints=checked,
        )
        return await campaign_out(session, company, campaign)


@router.get("", response_model=list[CampaignSummary])
async def list_campaigns(company: CampaignAdminDep, session: SessionDep) -> list[CampaignSummary]:
    """Each campaign with its status and numbers (counted for the whole list at once)."""
    async with session.begin():
        campaigns = await store.list_campaigns(session, company.id)
        ids = [c.id for c in campaigns]
        counts = await store.count_touchpoints(session, ids)
        numbers = await numbers_store.numbers_by_campaign(session, company.id, ids)
    return [
        CampaignSummary(
            id=c.id,
            name=c.name,
            status=c.status,
            touchpoints=counts.get(c.id, 0),
            saved_at=c.saved_at,
            numbers=NumbersOut(**asdict(numbers[c.id])),
        )
        for c in campaigns
    ]


@router.get("/{campaign_id}", response_model=CampaignOut, responses=answers(404, 422))
async def get_campaign(
    campaign_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> CampaignOut:
    async with session.begin():
        campaign = await store.get_campaign(session, company.id, campaign_id)
        return await campaign_out(session, company, campaign)


@router.patch("/{campaign_id}", response_model=CampaignOut, responses=answers(404, 409, 422, 503))
async def edit_campaign(
    campaign_id: PathId,
    body: CampaignUpdate,
    company: CampaignAdminDep,
    session: SessionDep,
    templates: TemplatesDep,
) -> CampaignOut:
    """A draft changes freely; a saved campaign only its name and description (409)."""
    exit_options = (
        sorted(o.value for o in body.exit_options) if body.exit_options is not None else None
    )
    checked = None
    if body.touchpoints is not None:
        # 404 and 409 first, then the templates with no transaction open (see create).
        async with session.begin():
            await store.check_edit(
                session, company.id, campaign_id, touchpoints=True, exit_options=exit_options
            )
        checked = await store.check_touchpoints(company, _specs(body.touchpoints), templates)
    async with session.begin():
        campaign = await store.edit_campaign(
            session,
            company,
            campaign_id,
            name=body.name,
            description=body.description,
            exit_options=exit_options,
            touchpoints=checked,
        )
        return await campaign_out(session, company, campaign)


@router.post(
    "/{campaign_id}/save", response_model=CampaignOut, responses=answers(404, 409, 422, 503)
)
async def save_campaign(
    campaign_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    now: NowDep,
    templates: TemplatesDep,
) -> CampaignOut:
    """Saving activates the campaign; its touchpoints and intervals are fixed from here on."""
    async with session.begin():
        specs = await store.draft_touchpoints(session, company.id, campaign_id)
    # With no transaction open (see create); saving then finds them unchanged, or says so.
    checked = await store.check_touchpoints(company, specs, templates)
    async with session.begin():
        campaign = await store.save_campaign(session, company, campaign_id, now, checked)
        return await campaign_out(session, company, campaign)


@router.post(
    "/{campaign_id}/test", response_model=CampaignTestOut, responses=answers(404, 409, 422, 503)
)
async def test_campaign(
    campaign_id: PathId,
    body: CampaignTest,
    company: CampaignAdminDep,
    session: SessionDep,
    workflows: WorkflowsDep,
    settings: SettingsDep,
    templates: TemplatesDep,
) -> CampaignTestOut:
    """Every touchpoint at once, with no intervals, to each test recipient; marked as tests
    and counted in no statistic."""
    async with session.begin():
        campaign = await store.get_campaign(session, company.id, campaign_id)
        specs = [store.spec_of(t) for t in await store.list_touchpoints(session, campaign.id)]
    # With no transaction open (see create); the test then sends them unchanged, or says so.
    checked = await store.check_touchpoints(company, specs, templates)
    async with session.begin():
        touchpoints = await store.touchpoints_as_checked(session, campaign, checked)
        if body.candidate_id is not None:
            await get_candidate(session, company.id, body.candidate_id)
        run = uuid.uuid4().hex[:12]
        messages = [
            Message(
                company_id=company.id,
                idempotency_key=f"test/{campaign.id}/{run}/{t.position}/{n}",
                message_id=message_id_for(
                    f"test/{campaign.id}/{run}/{t.position}/{n}", settings.mail_domain
                ),
                source_kind=MessageSource.TEST,
                source_id=campaign.id,
                campaign_id=campaign.id,
                candidate_id=body.candidate_id,
                position=t.position,
                test_address=str(address),
                state=MessageState.PREPARED,
            )
            for t in touchpoints
            for n, address in enumerate(body.recipients)
        ]
        session.add_all(messages)
    workflow_id = f"campaign-test/{campaign.id}/{run}"
    try:
        await workflows.run_campaign_test(
            workflow_id,
            CampaignTestInput(campaign_id=campaign.id, message_ids=tuple(m.id for m in messages)),
            campaign_name=campaign.name,
            timeout_seconds=settings.test_send_timeout_seconds,
        )
    except WorkflowsUnavailableError as error:
        reason = error.reason
        # Nothing will move a test message the workflow did not reach: say how it ended.
        async with session.begin():
            went_out = await store.abandon_test_messages(
                session, [m.id for m in messages], f"not sent: {reason}"
            )
        if not went_out:
            raise UnavailableError(
                f"The test was not sent: {reason}. Nothing went out and its messages are "
                "recorded as failed; try again."
            ) from error
        # Some went out: trying again would send those twice, so say what happened to each.
    async with session.begin():
        ended = await store.test_messages(session, [m.id for m in messages])
    return CampaignTestOut(
        workflow_id=workflow_id,
        sends=[
            TestSendOut(
                touchpoint=(m.position or 0) + 1,
                to=m.test_address or "",
                outcome=m.state.value,
                error=m.error if m.state is not MessageState.SENT else None,
            )
            for m in ended
        ],
    )


async def _status_out(
    session: AsyncSession, campaign: Campaign, *, limit: int = 1000, offset: int = 0
) -> CampaignStatusOut:
    out = CampaignStatusOut(
        id=campaign.id,
        status=campaign.status,
        paused_at=campaign.paused_at,
        resumed_at=campaign.resumed_at,
        archived_at=campaign.archived_at,
    )
    if campaign.status is CampaignStatus.ACTIVE and campaign.resumed_at is not None:
        out.released = await campaign_status.released(session, campaign)
    if campaign.status is CampaignStatus.ARCHIVED:
        total, page = await campaign_status.archive_cancelled(
            session, campaign, limit=limit, offset=offset
        )
        out.cancelled_total = total
        out.cancelled = [
            CancelledTouchpointOut(
                campaign_id=campaign.id,
                candidate_id=c.candidate_id,
                name=c.name,
                touchpoint=c.position + 1,
                due_at=c.due_at,
            )
            for c in page
        ]
    return out


@router.post(
    "/{campaign_id}/pause", response_model=CampaignStatusOut, responses=answers(404, 409, 422)
)
async def pause_campaign(
    campaign_id: PathId,
    company: CampaignAdminDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    now: NowDep,
) -> CampaignStatusOut:
    """No e-mail of the campaign goes out until it is resumed (the answer comes once none
    is still on its way to the mail server); nothing that falls due meanwhile is lost.
    Pausing a paused campaign changes nothing."""
    async with transaction(sessions) as session:
        campaign = await campaign_status.pause_campaign(session, company.id, campaign_id, now)
        out = await _status_out(session, campaign)
    await wait_for_sends(
        sessions, company.id, None, campaign_id=campaign.id, seconds=settings.exit_wait_seconds
    )
    return out


@router.post(
    "/{campaign_id}/resume",
    response_model=CampaignStatusOut,
    responses=answers(404, 409, 422, 503),
)
async def resume_campaign(
    campaign_id: PathId,
    company: CampaignAdminDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> CampaignStatusOut:
    """Each touchpoint that fell due during the pause goes out at its send time on the
    first day after now, and the later ones keep their intervals after it: never a burst.
    Repeating the resume answers the same one (and tells the workflows again, if a first
    answer was a 503)."""
    async with transaction(sessions) as session:
        campaign = await campaign_status.resume_campaign(session, company, campaign_id, now)
        out = await _status_out(session, campaign)
    if campaign.resumed_at is not None:
        await workflows.start_campaign_signals(campaign.id, Told.RESUMED, campaign.resumed_at)
    return out


@router.post(
    "/{campaign_id}/archive", response_model=CampaignStatusOut, responses=answers(404, 422, 503)
)
async def archive_campaign(
    campaign_id: PathId,
    company: CampaignAdminDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> CampaignStatusOut:
    """Every recipient still in the campaign leaves (`archived`), and no one can be added
    any more. Answers the pending touchpoints it cancelled (the first 1,000; GET the same
    path for the others), once no e-mail of the campaign is still on its way to the peer.
    Archiving again answers the same."""
    async with transaction(sessions) as session:
        campaign = await campaign_status.archive_campaign(session, company.id, campaign_id, now)
        out = await _status_out(session, campaign)
    if campaign.archived_at is not None:
        await workflows.start_campaign_signals(campaign.id, Told.ARCHIVED, campaign.archived_at)
    await wait_for_sends(
        sessions, company.id, None, campaign_id=campaign.id, seconds=settings.exit_wait_seconds
    )
    return out


@router.get("/{campaign_id}/archive", response_model=CampaignStatusOut, responses=answers(404, 422))
async def archived_campaign(
    campaign_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> CampaignStatusOut:
    """The campaign's status; archived, what its archive cancelled, a page at a time."""
    async with session.begin():
        campaign = await store.get_campaign(session, company.id, campaign_id)
        return await _status_out(session, campaign, limit=limit, offset=offset)
