"""Events from backend services: applied, replied, connected, unsubscribed, and the
meetings scheduled, offers made and hires that campaigns' numbers count."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from api.deps import NowDep, ServiceDep, SessionsDep, SettingsDep, WorkflowsDep
from api.errors import answers
from api.idempotency import IdempotencyKey
from api.routers.pipelines import cancelled_out
from api.routers.recipients import cancelled_touchpoints
from api.schemas import EventIn, EventOut, EventType
from config import Settings
from errors import ConflictError, ValidationError
from orchestration import Workflows
from store import enrolments as enrolment_store
from store import events as store
from store import moves as move_store
from store.candidates import get_candidate
from store.enrolments import Ended
from store.messages import wait_for_sends
from store.models import Move
from store.moves import Cancelled
from store.session import SessionFactory, transaction
from workflows.contracts import ExitReason

# What each type of event ends (an exit reason, if the campaign has it as an exit
# option); the meetings, offers and hires the numbers count end nothing.
EXIT_REASONS: dict[EventType, ExitReason | None] = {
    EventType.APPLIED: ExitReason.APPLIED,
    EventType.REPLIED: ExitReason.REPLIED,
    EventType.CONNECTED: ExitReason.CONNECTED,
    EventType.UNSUBSCRIBED: ExitReason.UNSUBSCRIBED,
    EventType.MEETING_SCHEDULED: None,
    EventType.OFFER_MADE: None,
    EventType.HIRED: None,
}

router = APIRouter(prefix="/events", tags=["events"], responses=answers(401, 403, 422))


async def tell_exits(
    workflows: Workflows,
    sessions: SessionFactory,
    settings: Settings,
    company_id: int,
    ended: list[Ended],
    candidate_id: int,
    reason: ExitReason,
) -> None:
    """After the commit: tell the workflows, and answer only once no e-mail to the
    candidate is still on its way to the peer (bounded), so that nothing arrives after the
    answer."""
    await workflows.exit_nurtures(
        ended, reason,
        consequence="The event is recorded and no e-mail will go out, but the workflows were "
        "not told yet; send the same event again",
    )  # fmt: skip
    await wait_for_sends(sessions, company_id, candidate_id, seconds=settings.exit_wait_seconds)


def _by_move(cancelled: list[Cancelled]) -> dict[int, list[int]]:
    by_move: dict[int, list[int]] = {}
    for action in cancelled:
        by_move.setdefault(action.move_id, []).append(action.action_id)
    return by_move


@router.post("", response_model=EventOut, responses=answers(404, 409, 503))
async def receive_event(
    body: EventIn,
    caller: ServiceDep,
    workflows: WorkflowsDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> EventOut:
    """Records the event once, ends the candidate's campaigns whose exit options say so
    (unsubscribed ends every campaign of the company), then tells their workflows. A repeat
    of the same event id changes nothing and answers as the first did."""
    event_id = body.id or idempotency_key
    if not event_id:
        raise ValidationError("An event needs an id, or an Idempotency-Key header.")
    reason = EXIT_REASONS[body.type]
    rules: list[Move] = []
    cancelled: list[Cancelled] = []
    try:
        async with transaction(sessions) as session:
            seen = await store.find_event(session, caller.company_id, event_id)
            if seen is not None:
                if seen.type != body.type.value or seen.candidate_id != body.candidate_id:
                    raise ValidationError(
                        f"Event '{event_id}' was already received with another type or "
                        "candidate; use a new event id."
                    )
                ended = store.ended_of(seen)
                duplicate = True
            else:
                if reason is None:
                    # It ends nothing, but its candidate must be the company's all the same.
                    await get_candidate(session, caller.company_id, body.candidate_id)
                ended = (
                    await enrolment_store.end_campaigns(
                        session, caller.company_id, body.candidate_id, reason, now
                    )
                    if reason is not None
                    else []
                )
                if reason is ExitReason.REPLIED:
                    rules, cancelled = await move_store.cancel_on_reply(
                        session, caller.company_id, body.candidate_id, body.occurred_at or now,
                        now,
                    )  # fmt: skip
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
    # A repeat signals again: the first answer may have been a 5xx after the commit. (A
    # rule a reply ended and whose workflow is not told finds itself cancelled when due.)
    await workflows.tell_moves(rules, move_store.REPLIED, only=_by_move(cancelled))
    if reason is not None:
        await tell_exits(
            workflows, sessions, settings, caller.company_id, ended, body.candidate_id, reason
        )
    return EventOut(
        event_id=event_id,
        type=EventType(body.type),
        candidate_id=body.candidate_id,
        ended_campaigns=[e.campaign_id for e in ended],
        cancelled_touchpoints=cancelled_touchpoints(ended),
        cancelled_actions=cancelled_out(cancelled),
        duplicate=duplicate,
    )
