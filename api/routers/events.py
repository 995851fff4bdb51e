"""Events from backend services: applied, replied, connected, unsubscribed."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError

import orchestration
from api.deps import NowDep, ServiceDep, SessionDep, TemporalDep
from api.errors import answers
from api.idempotency import IdempotencyKey
from api.schemas import EventIn, EventOut, EventType
from errors import ConflictError, UnavailableError, ValidationError
from store import candidates as candidate_store
from store import enrolments as enrolment_store
from store import events as store
from workflows.contracts import ExitReason

router = APIRouter(prefix="/events", tags=["events"], responses=answers(401, 403, 422))


async def end_campaigns(
    session: AsyncSession,
    company_id: int,
    candidate_id: int,
    reason: ExitReason,
    now: datetime,
) -> list[tuple[int, int]]:
    """In the open transaction: the store ends the campaigns this reason ends (and records
    an unsubscription). Answers the campaigns to signal once the caller has committed."""
    if reason is ExitReason.UNSUBSCRIBED:
        await candidate_store.mark_unsubscribed(session, company_id, candidate_id, now)
    return await enrolment_store.exit_candidate(session, company_id, candidate_id, reason, now)


async def tell_exits(
    temporal: Client, ended: list[tuple[int, int]], candidate_id: int, reason: ExitReason
) -> None:
    try:
        await orchestration.signal_exit(temporal, ended, candidate_id, reason)
    except RPCError as error:
        raise UnavailableError(
            f"The event is recorded and no e-mail will go out, but the workflows were not told "
            f"yet ({error.message}); send the same event again."
        ) from error


@router.post("", response_model=EventOut, responses=answers(404, 409, 503))
async def receive_event(
    body: EventIn,
    caller: ServiceDep,
    session: SessionDep,
    temporal: TemporalDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> EventOut:
    """Records the event once, ends the candidate's campaigns whose exit options say so
    (unsubscribed ends every campaign of the company), then tells their workflows. A repeat
    of the same event id changes nothing and answers as the first did."""
    event_id = body.id or idempotency_key
    if not event_id:
        raise ValidationError("An event needs an id, or an Idempotency-Key header.")
    reason = ExitReason(body.type.value)
    try:
        async with session.begin():
            seen = await store.find_event(session, caller.company_id, event_id)
            if seen is not None:
                if seen.type != body.type.value or seen.candidate_id != body.candidate_id:
                    raise ValidationError(
                        f"Event '{event_id}' was already received with another type or "
                        "candidate; use a new event id."
                    )
                ended = [(campaign, run) for campaign, run in seen.ended.get("ended", [])]
                duplicate = True
            else:
                await candidate_store.get_candidate(session, caller.company_id, body.candidate_id)
                ended = await end_campaigns(
                    session, caller.company_id, body.candidate_id, reason, now
                )
                await store.record_event(
                    session,
                    caller.company_id,
                    event_id=event_id,
                    type=body.type.value,
                    candidate_id=body.candidate_id,
                    occurred_at=body.occurred_at or now,
                    ended=ended,
                )
                duplicate = False
    except IntegrityError:
        raise ConflictError(
            f"Event '{event_id}' is being recorded by another request; retry in a moment."
        ) from None
    # A repeat signals again: the first answer may have been a 5xx after the commit.
    await tell_exits(temporal, ended, body.candidate_id, reason)
    return EventOut(
        event_id=event_id,
        type=EventType(body.type),
        candidate_id=body.candidate_id,
        ended_campaigns=[campaign for campaign, _ in ended],
        duplicate=duplicate,
    )
