"""A recipient's timeline: every touchpoint with what happened to it and why, and every
change of their state, each with its time. It answers "why did this person not get that
e-mail?" from the store alone: the recipient's events (store.enrolments records them), the
messages of the enrolment, and their opens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import (
    Enrolment,
    Message,
    MessageOpen,
    MessageSource,
    MessageState,
    RecipientEvent,
    RecipientEventKind,
    RecipientStatus,
)

# What a message's state says on the timeline.
_MESSAGE_WHY = {
    MessageState.PREPARED: "being sent",
    MessageState.SENDING: "handed to the mail server, waiting for its answer",
    MessageState.SENT: "delivered to the mail server",
    MessageState.UNCONFIRMED: "may have been delivered: not sent again",
    MessageState.FAILED: "not sent",
    MessageState.WITHDRAWN: "not sent: the store said stop first",
}


_RANK = {"entered": 0, "opened": 2, "completed": 3}


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    run: int
    touchpoint: int | None = None
    due_at: datetime | None = None
    message_id: str | None = None
    why: str | None = None


def _event_entries(event: RecipientEvent) -> list[Entry]:
    number = event.position + 1 if event.position is not None else None
    kind = event.kind
    if kind is RecipientEventKind.EXITED:
        out = [Entry(event.at, "exited", event.run, why=event.reason)]
        if number is not None:
            # What the exit cancelled: it never goes out.
            out.append(
                Entry(
                    event.at, "skipped", event.run, number, event.due_at,
                    why=f"the recipient had left ({event.reason})",
                )
            )  # fmt: skip
        return out
    why = {
        RecipientEventKind.ENTERED: "first touchpoint scheduled",
        RecipientEventKind.RESUMED: "the wait left at the pause goes on",
        RecipientEventKind.HELD: "the campaign was paused when it fell due",
        RecipientEventKind.RELEASED: "the campaign was resumed: at its send time, the first "
        "day after the resume",
        RecipientEventKind.COMPLETED: "every touchpoint has been sent",
    }.get(kind, event.reason)
    return [Entry(event.at, kind.value, event.run, number, event.due_at, why=why)]


def _message_entry(message: Message, run: int) -> Entry:
    number = message.position + 1 if message.position is not None else None
    state = message.state
    why = _MESSAGE_WHY[state]
    if message.error and state is not MessageState.SENT:
        why = f"{why}: {message.error}"
    return Entry(
        message.sent_at or message.created_at, state.value, run, number,
        message.scheduled_at, message_id=message.message_id, why=why,
    )  # fmt: skip


def _run_of(message: Message) -> int:
    # The key is nurture/<enrolment>/<run>/<position> (activities.nurture.touchpoint_key).
    parts = message.idempotency_key.split("/")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else 0


async def timeline(session: AsyncSession, enrolment: Enrolment) -> list[Entry]:
    """Every run of the enrolment, oldest first; ends with what is scheduled next."""
    events = await session.scalars(
        select(RecipientEvent)
        .where(RecipientEvent.enrolment_id == enrolment.id)
        .order_by(RecipientEvent.id)
    )
    entries = [entry for event in events for entry in _event_entries(event)]
    messages = (
        await session.scalars(
            select(Message).where(
                Message.enrolment_id == enrolment.id,
                Message.source_kind == MessageSource.TOUCHPOINT,
            )
        )
    ).all()
    entries += [_message_entry(m, _run_of(m)) for m in messages]
    entries += await _opens(session, messages)
    # Within a second, the order of cause and effect: a send before the completion it
    # makes, an exit before the touchpoint it skipped (the sort keeps ties in place).
    entries.sort(key=lambda e: (e.run, e.at.replace(microsecond=0), _RANK.get(e.kind, 1)))
    if enrolment.status in (RecipientStatus.ACTIVE, RecipientStatus.PAUSED) and (
        enrolment.next_position is not None
    ):
        paused = enrolment.status is RecipientStatus.PAUSED
        held = enrolment.held_since is not None
        entries.append(
            Entry(
                enrolment.next_send_at or enrolment.entered_at,
                "scheduled", enrolment.run, enrolment.next_position + 1,
                None if paused or held else enrolment.next_send_at,
                why="the recipient is paused: after the resume" if paused
                else "the campaign is paused: after its resume" if held
                else "next",
            )
        )  # fmt: skip
    return entries


async def _opens(session: AsyncSession, messages: Sequence[Message]) -> list[Entry]:
    """Opens of these messages, with whether a person or a machine fetched the pixel."""
    by_id = {m.id: m for m in messages}
    if not by_id:
        return []
    opens = await session.scalars(
        select(MessageOpen).where(MessageOpen.message_id.in_(list(by_id))).order_by(MessageOpen.id)
    )
    out = []
    for opened in opens:
        message = by_id[opened.message_id]
        out.append(
            Entry(
                opened.opened_at, "opened", _run_of(message),
                message.position + 1 if message.position is not None else None,
                message_id=message.message_id,
                why=f"by a machine: {opened.why}" if opened.machine else "by a person",
            )
        )  # fmt: skip
    return out
