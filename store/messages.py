"""Messages as the store keeps them: how an unfinished one ends, and the sends in flight."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, fields

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import Message, MessageSource, MessageState, table
from store.session import SessionFactory


@dataclass(frozen=True)
class MessageRow:
    """What the send path reads of a message (a Core row, not an entity: store/models.table)."""

    id: int
    company_id: int
    idempotency_key: str
    message_id: str
    source_kind: MessageSource
    campaign_id: int | None
    position: int | None
    candidate_id: int | None
    test_address: str | None
    state: MessageState
    error: str | None


MESSAGES = table(Message)
MESSAGE_ROW = tuple(MESSAGES.c[field.name] for field in fields(MessageRow))


def unfinished_ending(
    state: MessageState, error: str | None, reason: str
) -> tuple[MessageState, str | None]:
    """How a message nothing will move any more ends (its last retry is over, its test was
    given up): one still `prepared` never reached the peer and is failed; one `sending` had
    its whole content handed to the peer, which may have delivered it (RFC 1047), so it is
    unconfirmed and never sent again. Any other state stays as it is."""
    if state is MessageState.PREPARED:
        seen = f"; the last error was: {error}" if error else ""
        return MessageState.FAILED, f"{reason}{seen}"
    if state is MessageState.SENDING:
        return MessageState.UNCONFIRMED, (
            f"{reason}, after its content was handed to the peer: it may have been "
            "delivered, so it is not sent again"
        )
    return state, error


def end_unfinished(message: Message, reason: str) -> None:
    """`unfinished_ending` on an entity; its holder loses its claim."""
    message.state, message.error = unfinished_ending(message.state, message.error, reason)
    message.holder = None


async def sends_in_flight(
    session: AsyncSession,
    company_id: int,
    candidate_id: int | None,
    enrolment_id: int | None = None,
    campaign_id: int | None = None,
) -> int:
    query = select(func.count()).where(
        Message.company_id == company_id, Message.state == MessageState.SENDING
    )
    if candidate_id is not None:
        query = query.where(Message.candidate_id == candidate_id)
    if enrolment_id is not None:
        query = query.where(Message.enrolment_id == enrolment_id)
    if campaign_id is not None:
        query = query.where(Message.campaign_id == campaign_id)
    return await session.scalar(query) or 0


async def wait_for_sends(
    sessions: SessionFactory,
    company_id: int,
    candidate_id: int | None,
    *,
    enrolment_id: int | None = None,
    campaign_id: int | None = None,
    seconds: float,
) -> int:
    """After an exit has committed: wait (at most `seconds`) until no e-mail to the
    candidate (of that enrolment or campaign, if named; of the whole campaign when no
    candidate is) is past its last check and before the peer's reply. A send's last check
    and its step into `sending` are one transaction that the exit's serialises with
    (activities/sending.py), so from then on nothing more reaches the peer. Answers how
    many are still in flight (a worker frozen mid-send)."""
    deadline = time.monotonic() + seconds
    while True:
        async with sessions() as session:
            left = await sends_in_flight(
                session, company_id, candidate_id, enrolment_id, campaign_id
            )
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.02)
