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
    BatchResultPage,
    BulkAddOut,
    CancelledTouchpointOut,
    Limit,
    Offset,
    PathId,
    RecipientAdd,
    RecipientOut,
    RecipientPage,
    RecipientsAdd,
    SegmentAdd,
    TimelineEntryOut,
    TimelineOut,
)
from errors import ConflictError, NotFoundError, ValidationError, clause
from store import campaigns as campaign_store
from store import enrolments as store
from store import segments as segment_store
from store import timeline as timeline_store
from store.enrolments import AddResult, AddVerdict, Ended, RefusalReason
from store.messages import wait_for_sends
from store.models import Company, Enrolment, EnrolmentBatch, RecipientStatus
from store.session import transaction
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
        batch.already_active = counts[AddResult.ALREADY_ACTIVE]
        batch.refused = counts[AddResult.REFUSED]
        batch.total = len(verdicts)
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


@router.post("/segment", response_model=BatchOut, status_code=202, responses=answers(409, 503))
async def add_segment(
    campaign_id: PathId,
    body: SegmentAdd,
    company: CampaignAdminDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> BatchOut:
    """Every candidate the segment holds now, as one batch in the background: the
    candidates are taken at the request (one who matches later is not swept in by a batch
    that runs on), then the batch's activity decides and enrols each as a bulk add does
    (added, already active, refused with the reason) and starts their workflows at the
    pace of any batch. Progress at GET /batches/{batch_id}, each verdict at GET
    /batches/{batch_id}/results. (A segment that is not the company's is a fault of the
    body: 422.)"""
    async with transaction(sessions) as session:
        campaign = await campaign_store.get_campaign(session, company.id, campaign_id)
        store.check_campaign_open(campaign)
        try:
            segment = await segment_store.get_segment(session, company.id, body.segment_id)
        except NotFoundError as error:
            raise ValidationError(str(error)) from None
        batch = EnrolmentBatch(
            company_id=company.id, campaign_id=campaign.id, key=uuid.uuid4().hex, added=0,
            segment_id=segment.id, re_enrol=body.re_enrol,
        )  # fmt: skip
        session.add(batch)
        await session.flush()
        batch.total = await segment_store.take_candidates(session, company.id, segment, batch)
        if batch.total:
            await workflows.start_enrolment_batch(
                batch.id, batch.key, added=batch.total, campaign_id=campaign.id,
                campaign_name=campaign.name,
            )  # fmt: skip
        else:
            batch.finished_at = now
        await session.flush()
        return _batch_out(batch, started=0)


def _batch_out(batch: EnrolmentBatch, *, started: int) -> BatchOut:
    return BatchOut(
        batch_id=batch.id,
        added=batch.added,
        started=started,
        finished_at=batch.finished_at,
        segment_id=batch.segment_id,
        total=batch.total,
        already_active=batch.already_active,
        refused=batch.refused,
        decided=batch.added + batch.already_active + batch.refused,
    )


async def _batch(
    session: SessionDep, company: Company, campaign_id: int, batch_id: int
) -> EnrolmentBatch:
    batch = await session.scalar(
        select(EnrolmentBatch).where(
            EnrolmentBatch.company_id == company.id,
            EnrolmentBatch.campaign_id == campaign_id,
            EnrolmentBatch.id == batch_id,
        )
    )
    if batch is None:
        raise NotFoundError(f"Enrolment batch {batch_id} does not exist.")
    return batch


@router.get("/batches/{batch_id}", response_model=BatchOut)
async def get_batch(
    campaign_id: PathId, batch_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> BatchOut:
    """How far a bulk add has come: its candidates decided so far (a list's, all at its
    request), and their workflows started."""
    async with session.begin():
        batch = await _batch(session, company, campaign_id, batch_id)
        started = await session.scalar(
            select(func.count()).where(
                Enrolment.batch_id == batch.id, Enrolment.workflow_started_at.is_not(None)
            )
        )
    return _batch_out(batch, started=started or 0)


@router.get("/batches/{batch_id}/results", response_model=BatchResultPage)
async def list_batch_results(
    campaign_id: PathId,
    batch_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    result: AddResult | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> BatchResultPage:
    """A segment's batch: each candidate's verdict so far, in candidate order (`result`:
    only those added, already active, or refused). A list's verdicts were in the answer to
    its request and are not kept: none here."""
    async with session.begin():
        batch = await _batch(session, company, campaign_id, batch_id)
        rows, total = await segment_store.batch_results(
            session, batch.id, result=result, limit=limit, offset=offset
        )
    return BatchResultPage(
        total=total,
        items=[
            AddOut(
                candidate_id=r.candidate_id,
                result=r.result,
                reason=RefusalReason(r.reason) if r.reason else None,
                detail=r.detail,
            )
            for r in rows
        ],
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
    if row.held_since is not None:
        # The campaign was paused when it fell due: it goes after the resume.
        due = None
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
        held_since=row.held_since,
        cancelled_touchpoint=(
            CancelledTouchpointOut(
                campaign_id=row.campaign_id,
                candidate_id=row.candidate_id,
                touchpoint=row.cancelled[0] + 1,
                due_at=row.cancelled[1],
            )
            if row.cancelled is not None
            else None
        ),
        time_zone=company.time_zone,
    )


def cancelled_touchpoints(ended: list[Ended]) -> list[CancelledTouchpointOut]:
    """What exits cancelled, as every answer that ends campaigns lists it."""
    return [
        CancelledTouchpointOut(
            campaign_id=e.campaign_id,
            candidate_id=e.candidate_id,
            touchpoint=e.position + 1,
            due_at=e.due_at,
        )
        for e in ended
        if e.position is not None
    ]


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
            [Ended(campaign_id, candidate_id, enrolment.run, None, None)], ExitReason.REMOVED,
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


@router.get("/{candidate_id:int}/timeline", response_model=TimelineOut)
async def recipient_timeline(
    campaign_id: PathId, candidate_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> TimelineOut:
    """Every touchpoint with what happened and why (sent with its Message-ID, unconfirmed,
    failed with the error, skipped because the recipient had left, opened) and every
    change of state, each with its time, oldest first; last, what is scheduled next."""
    async with session.begin():
        enrolment = await store.get_enrolment(
            session, company.id, campaign_id, candidate_id, lock=False
        )
        entries = await timeline_store.timeline(session, enrolment)
    zone = ZoneInfo(company.time_zone)
    return TimelineOut(
        campaign_id=campaign_id,
        candidate_id=candidate_id,
        status=enrolment.status,
        exit_reason=enrolment.exit_reason,
        time_zone=company.time_zone,
        entries=[
            TimelineEntryOut(
                at=e.at,
                at_local=e.at.astimezone(zone).isoformat(),
                kind=e.kind,
                run=e.run,
                touchpoint=e.touchpoint,
                due_at=e.due_at,
                message_id=e.message_id,
                why=e.why,
            )
            for e in entries
        ],
    )
