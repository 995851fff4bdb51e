"""Events from backend services, recorded once per company and event id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.enrolments import Ended
from store.models import ReceivedEvent


async def find_event(session: AsyncSession, company_id: int, event_id: str) -> ReceivedEvent | None:
    return await session.scalar(
        select(ReceivedEvent).where(
            ReceivedEvent.company_id == company_id, ReceivedEvent.event_id == event_id
        )
    )


async def record_event(
    session: AsyncSession,
    company_id: int,
    *,
    event_id: str,
    type: str,
    candidate_id: int,
    occurred_at: datetime,
    ended: list[Ended],
) -> ReceivedEvent:
    event = ReceivedEvent(
        company_id=company_id,
        event_id=event_id,
        type=type,
        candidate_id=candidate_id,
        occurred_at=occurred_at,
        ended={"ended": [e.to_json() for e in ended]},
    )
    session.add(event)
    await session.flush()
    return event


def ended_of(event: ReceivedEvent) -> list[Ended]:
    """What a recorded event ended, as it answered the first time."""
    return [Ended.from_json(event.candidate_id, e) for e in event.ended.get("ended", [])]
