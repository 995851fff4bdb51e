"""A campaign's recipients: add one or many, list them, pause, resume, remove."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Response
from sqlalchemy import func, select

from api.deps import (
    CampaignAdminDep,
    NowDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    WorkflowsDep,
)
from api.errors import answers
from api.schemas import (
    AddOut,
    BatchOut,
    BulkAddOut,
    Limit,
    Offset,
    PathId,
    RecipientAdd,
    RecipientOut,
    RecipientPage,
    RecipientsAdd,
)
from errors import ConflictError, NotFoundError, clause
from store import campaigns as campaign_store
from store import enrolments as store
from store.enrolments import AddResult, AddVerdict, RefusalReason
from store.messages import wait_for_sends
from store.models import Company, Enrolment, EnrolmentBatch, RecipientStatus
from workflows.contracts import ExitReason

router = APIRouter(
    prefix="/campaigns/{campaign_id}/recipients",
    tags=["recipients"],
    responses=answers(401, 403, 404, 422),
)


def _out(verdict: AddVerdict) -> AddOut:
    return AddOut(
        candidate_id=verdict.candidate_id,
        result=verdict.result,
        reason=verdict.reason,
        detail=verdict.detail,
    )


@router.post(
    "",
    response_model=AddOut,
    status_code=201,
    responses={
        200: {"model": AddOut, "description": "Already in the campaign: nothing changed"},
        **answers(409, 503),
    },
)
async def add_recipient(
    campaign_id: PathId,
    body: RecipientAdd,
    response: Response,
    company: CampaignAdminDep,
    session: SessionDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> AddOut:
    """Adds one candidate and starts their workflow before committing: if the start fails,
    nothing is kept and the answer says so."""
    async with session.begin():
        campaign = await campaign_store.get_campaign(session, company.id, campaign_id)
        touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
        [verdict] = await store.add_recipients(
            session, company, campaign, touchpoints[0], [body.candidate_id],
            re_enrol=body.re_enrol, now=now,
        )  # fmt: skip
        if verdict.reason is RefusalReason.NOT_FOUND:
            raise NotFoundError(f"Candidate {body.candidate_id} does not exist.")
        if verdict.result is AddResult.REFUSED:
            raise ConflictError(
                f"Candidate {body.candidate_id} cannot be added: {clause(verdict.detail or '')}."
            )
        if verdict.result is AddResult.ALREADY_ACTIVE:
            response.status_code = 200
            return _out(verdict)
        assert verdict.enrolment is not None
        plan = campaign_store.plan_of(company, campaign, touchpoints)
        await workflows.start_nurture(
            store.nurture_input(verdict.enrolment, plan),
            campaign_name=campaign.name,
            replace_running=True,
        )
        verdict.enrolment.workflow_started_at = now
    return _out(verdict)


@router.post("/bulk", response_model=BulkAddOut, status_code=202, responses=answers(409, 503))
async def add_recipients(
    campaign_id: PathId,
    body: RecipientsAdd,
    company: CampaignAdminDep,
    session: SessionDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> BulkAddOut:
    """One result per candidate. The enrolments are saved at once; their workflows are
    started in the background at a pace the Temporal server can take (see the batch)."""
    async with session.begin():
        campaign = await campaign_store.get_campaign(session, company.id, campaign_id)
        touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
        batch = EnrolmentBatch(
            company_id=company.id, campaign_id=campaign.id, key=uuid.uuid4().hex, added=0
        )
        session.add(batch)
        await session.flush()
        verdicts = await store.add_recipients(
            session, company, campaign, touchpoints[0], body.candidate_ids,
            re_enrol=body.re_enrol, now=now, batch=batch,
        )  # fmt: skip
        counts = {result: 0 for result in AddResult}
        for verdict in verdicts:
            counts[verdict.result] += 1
        batch.added = counts[AddResult.ADDED]
        batch_id: int | None = batch.id
        if batch.added:
            await workflows.start_enrolment_batch(
                batch.id, batch.key, added=batch.added, campaign_id=campaign.id,
                campaign_name=campaign.name,
            )  # fmt: skip
        else:
            await session.delete(batch)
            batch_id = None
    return BulkAddOut(
        batch_id=batch_id,
        added=counts[AddResult.ADDED],
        already_active=counts[AddResult.ALREADY_ACTIVE],
        refused=counts[AddResult.REFUSED],
        results=[_out(v) for v in verdicts],
    )


@router.get("/batches/{batch_id}", response_model=BatchOut)
async def get_batch(
    campaign_id: PathId, batch_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> BatchOut:
    """How far the background start of a bulk add has come."""
    async with session.begin():
        batch = await session.scalar(
            select(EnrolmentBatch).where(
                EnrolmentBatch.company_id == company.id,
                EnrolmentBatch.campaign_id == campaign_id,
                EnrolmentBatch.id == batch_id,
            )
        )
        if batch is None:
            raise NotFoundError(f"Enrolment batch {batch_id} does not exist.")
        started = await session.scalar(
            select(func.count()).where(
                Enrolment.batch_id == batch.id, Enrolment.workflow_started_at.is_not(None)
            )
        )
    return BatchOut(
        batch_id=batch.id, added=batch.added, started=started or 0, finished_at=batch.finished_at
    )


@router.get("", response_model=RecipientPage)
async def list_recipients(
    campaign_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> RecipientPage:
    """Each recipient's status, next touchpoint and when it goes out (UTC and local)."""
    async with session.begin():
        await campaign_store.get_campaign(session, company.id, campaign_id)
        rows, total = await store.list_recipients(
            session, company.id, campaign_id, limit=limit, offset=offset
        )
    return RecipientPage(total=total, items=[_recipient(company, r) for r in rows])


def _recipient(company: Company, row: store.RecipientRow) -> RecipientOut:
    zone = ZoneInfo(company.time_zone)
    due, remaining = row.next_send_at, None
    if row.status is RecipientStatus.PAUSED:
        # Nothing goes out while paused: what is left is a wait, not a date.
        if due is not None and row.paused_at is not None:
            remaining = max(0, int((due - row.paused_at).total_seconds()))
        due = None
    return RecipientOut(
        candidate_id=row.candidate_id,
        name=f"{row.first_name} {row.last_name}".strip(),
        status=row.status,
        exit_reason=row.exit_reason,
        entered_at=row.entered_at,
        left_at=row.left_at,
        next_touchpoint=row.next_position + 1 if row.next_position is not None else None,
        next_send_at=due,
        next_send_at_local=due.astimezone(zone).isoformat() if due else None,
        paused_at=row.paused_at if row.status is RecipientStatus.PAUSED else None,
        remaining_wait_seconds=remaining,
        time_zone=company.time_zone,
    )


async def _one(session: SessionDep, company: Company, enrolment: Enrolment) -> RecipientOut:
    rows, _ = await store.list_recipients(
        session,
        company.id,
        enrolment.campaign_id,
        limit=1,
        offset=0,
        candidate_id=enrolment.candidate_id,
    )
    return _recipient(company, rows[0])


async def _change(
    session: SessionDep,
    company: Company,
    change: Callable[[], Awaitable[Enrolment]],
    tell: Callable[[Enrolment], Awaitable[None]],
) -> RecipientOut:
    """The store decides in one transaction; its workflow hears of it after the commit
    (a failure to tell it only delays that: the request is safe to retry)."""
    async with session.begin():
        enrolment = await change()
        out = await _one(session, company, enrolment)
    await tell(enrolment)
    return out


# `:int` in the paths: `bulk` and `batches` are never read as a candidate id, so that a
# wrong method on them answers 405, not 422.
@router.post("/{candidate_id:int}/pause", response_model=RecipientOut, responses=answers(409, 503))
async def pause_recipient(
    campaign_id: PathId,
    candidate_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> RecipientOut:
    """Temporarily out of the campaign: nothing is sent until resumed."""
    return await _change(
        session,
        company,
        lambda: store.pause_recipient(session, company.id, campaign_id, candidate_id, now),
        lambda e: workflows.pause_nurture(campaign_id, candidate_id, e.paused_at or now),
    )


@router.post("/{candidate_id:int}/resume", response_model=RecipientOut, responses=answers(409, 503))
async def resume_recipient(
    campaign_id: PathId,
    candidate_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> RecipientOut:
    """The wait left at pause continues from now, then snaps to the touchpoint's send time."""
    return await _change(
        session,
        company,
        lambda: store.resume_recipient(session, company, campaign_id, candidate_id, now),
        lambda e: workflows.resume_nurture(campaign_id, candidate_id, e.resumed_at or now),
    )


@router.delete("/{candidate_id:int}", response_model=RecipientOut, responses=answers(409, 503))
async def remove_recipient(
    campaign_id: PathId,
    candidate_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> RecipientOut:
    """The recipient leaves with reason `removed`; nothing more is sent, even if due. It
    answers once no e-mail of theirs in this campaign is still on its way to the peer."""

    async def tell(enrolment: Enrolment) -> None:
        await workflows.exit_nurtures(
            [(campaign_id, enrolment.run)], candidate_id, ExitReason.REMOVED,
            consequence="The removal is saved, but its workflow was not told yet",
        )  # fmt: skip
        await wait_for_sends(
            sessions, company.id, candidate_id, enrolment_id=enrolment.id,
            seconds=settings.exit_wait_seconds,
        )  # fmt: skip

    return await _change(
        session,
        company,
        lambda: store.remove_recipient(session, company.id, campaign_id, candidate_id, now),
        tell,
    )
