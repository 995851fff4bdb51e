"""Erasure (GDPR): a candidate's personal data gone from the store, their campaigns and
pending actions ended, and what the numbers count kept, anonymous.

What each table keeps, decided here once:
- `candidates`: the row stays as a tombstone (its id, company, creation and erasure times,
  and what the erasure cancelled) with no name, address, custom field, consent or
  unsubscription left. Enrolments, messages, received events, the recipient timeline,
  applications and moves keep their rows and their ids, so the campaign numbers (entries,
  exits, e-mails sent, opens, meetings, offers, hires) stay as they were.
- notes, tasks, tags, evaluation requests, followers and talent-pool memberships of the
  candidate are deleted: they are about the person, and no number counts them.
- Every other row about the candidate, in any table (read from `Base.metadata` at run
  time, so a table added later is covered): a row with a `candidate_id` column, or a
  foreign key, naming them, and a row whose foreign key points at such a row (the actions
  of their moves, the opens of their messages). Each copy of their name, address or
  custom field values in its text and JSON columns is replaced by a mark; the user agent
  of an open is dropped. A table that holds candidates' data without naming them so is
  not covered: it needs a rule here.
- Idempotent request answers about the candidate (their creation and updates, their
  moves) become a 409 saying they were erased: a retry neither shows their data again nor
  creates them anew. Their fingerprints stay: a SHA-256 over the whole request, which
  names no one without that whole request.

The SMTP sink's files and the Temporal histories are not the store: the histories carry
ids only, and the sink is a development tool.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Enum,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import JSON

from errors import NotFoundError
from store.enrolments import Ended, end_campaigns
from store.models import (
    ActionKind,
    ActionState,
    Base,
    Candidate,
    CandidateTag,
    EvaluationRequest,
    Follower,
    IdempotentRequest,
    MessageOpen,
    Move,
    MoveAction,
    Note,
    PoolMember,
    Task,
    table,
)
from store.moves import Cancelled, _cancel_pending
from store.session import locking
from workflows.contracts import ExitReason

# Why the erasure cancelled a pending action (its record, and the move's workflow signal).
ERASED = "the candidate was erased"

# About the person, and counted by no number: deleted.
_DELETED = (Note, Task, CandidateTag, EvaluationRequest, Follower, PoolMember)

# Personal whatever they say: dropped from the rows about the candidate that stay.
_DROPPED = (table(MessageOpen).c.user_agent,)

_CANDIDATES = table(Candidate)


def _words(strings: set[str]) -> re.Pattern[str] | None:
    # A single character is no trace of anyone, and would take every "a" of a text.
    kept = sorted({s.strip() for s in strings if len(s.strip()) > 1}, key=len, reverse=True)
    if not kept:
        return None
    return re.compile("|".join(rf"(?<!\w){re.escape(s)}(?!\w)" for s in kept), re.IGNORECASE)


@dataclass(frozen=True)
class Traces:
    """The candidate's personal strings (held in memory for the erasure's passes, never
    stored), and the mark that replaces each copy of them. Text and JSON columns hold
    prose and documents: every trace is looked for there (names, address, custom field
    values). Other string columns hold ids and codes (an event's type, an exit reason),
    which a custom field's value such as "hired" must not take: only the address and the
    full name are looked for there, and in the records of others."""

    mark: str
    every: re.Pattern[str] | None
    whole: re.Pattern[str] | None
    distinctive: tuple[str, ...]

    @classmethod
    def of(cls, candidate: Candidate) -> Traces:
        first, last = candidate.first_name.strip(), candidate.last_name.strip()
        values = {str(v) for v in (candidate.custom_fields or {}).values() if v is not None}
        distinctive = {candidate.email or "", f"{first} {last}" if first and last else ""}
        return cls(
            mark=f"[erased {candidate.id}]",
            every=_words({first, last, *distinctive, *values}),
            whole=_words(distinctive),
            distinctive=tuple(sorted(s for s in distinctive if len(s) > 1)),
        )

    def redact(self, value: Any, *, prose: bool = True) -> Any:
        """The value with every copy replaced (in a string, and in the strings of a JSON
        document); `prose=False`: the distinctive copies only."""
        pattern = self.every if prose else self.whole
        if pattern is None:
            return value
        return _replaced(value, pattern, self.mark)


def _replaced(value: Any, pattern: re.Pattern[str], mark: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(mark, value)
    if isinstance(value, dict):
        return {key: _replaced(item, pattern, mark) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, pattern, mark) for item in value]
    return value


@dataclass(frozen=True)
class Erasure:
    """What an erasure did, and (`repeated`) whether an earlier one had done it."""

    candidate_id: int
    erased_at: datetime
    repeated: bool
    # The campaigns it ended, each with the touchpoint it cancelled, if one was pending.
    ended: list[Ended]
    # The pending stage actions it cancelled, and the moves whose workflows to tell.
    cancelled: list[Cancelled]
    moves: list[Move]
    traces: Traces | None = field(default=None, repr=False)


async def erase_candidate(
    session: AsyncSession, company_id: int, candidate_id: int, now: datetime
) -> Erasure:
    """Erase the candidate, in the open transaction (the caller tells the workflows after
    its commit). Erasing an erased candidate changes nothing and answers what the first
    erasure cancelled, so that a retry can tell the workflows again."""
    candidate = await session.scalar(
        locking(
            select(Candidate).where(
                Candidate.company_id == company_id, Candidate.id == candidate_id
            )
        )
    )
    if candidate is None:
        raise NotFoundError(f"Candidate {candidate_id} does not exist.")
    if candidate.erased_at is not None:
        return await _repeated(session, company_id, candidate)
    traces = Traces.of(candidate)
    # Before the enrolments are locked: a send locks its message, then its enrolment, and
    # so does this (store.session.locking; PostgreSQL would otherwise break the deadlock).
    await forget(session, company_id, candidate_id, traces)
    ended = await end_campaigns(session, company_id, candidate_id, ExitReason.ERASED, now)
    moves, cancelled = await _cancel_actions(session, company_id, candidate_id, now)
    # After the cancel: on PostgreSQL an action that was running has committed what it
    # wrote by then (the cancel waited for its lock), and it is deleted with the rest.
    for model in _DELETED:
        rows = table(model)
        await session.execute(
            delete(rows).where(rows.c.company_id == company_id, rows.c.candidate_id == candidate_id)
        )
    await _answer_erased(session, company_id, candidate_id, traces, now)
    candidate.first_name = candidate.last_name = ""
    candidate.email = candidate.consent_method = candidate.consent_source = None
    candidate.custom_fields = {}
    candidate.consent_given_at = candidate.unsubscribed_at = None
    candidate.erased_at = candidate.updated_at = now
    candidate.erasure = _report(ended, cancelled)
    await session.flush()
    return Erasure(candidate_id, now, False, ended, cancelled, moves, traces)


async def _cancel_actions(
    session: AsyncSession, company_id: int, candidate_id: int, now: datetime
) -> tuple[list[Move], list[Cancelled]]:
    """Every pending action of the candidate's moves, cancelled by the statement every
    cancel uses (store/moves.py), which a send's last check serialises with."""
    pending = exists().where(
        and_(MoveAction.move_id == Move.id, MoveAction.state == ActionState.PENDING)
    )
    moves = list(
        await session.scalars(
            select(Move).where(
                Move.company_id == company_id, Move.candidate_id == candidate_id, pending
            )
        )
    )
    cancelled = await _cancel_pending(session, [m.id for m in moves], ERASED, now)
    told = {c.move_id for c in cancelled}
    return [m for m in moves if m.id in told], cancelled


def _naming(rows: Table) -> list[Column[Any]]:
    """The columns of a table that name a candidate."""
    return [
        column
        for column in rows.columns
        if column.name == "candidate_id"
        or any(fk.column.table is _CANDIDATES for fk in column.foreign_keys)
    ]


def _free_text(column: Column[Any]) -> bool:
    """A column that can hold a copy of someone's words (not an enum's values)."""
    return isinstance(column.type, String | JSON) and not isinstance(column.type, Enum)


def _prose(column: Column[Any]) -> bool:
    return isinstance(column.type, Text | JSON)


def _about(rows: Table, company_id: int, candidate_id: int) -> ColumnElement[bool] | None:
    """Which rows of a table are about the candidate: they name them, or point at a row
    that does. None: the table holds nothing about candidates."""
    naming = _naming(rows)
    if naming:
        return or_(*(column == candidate_id for column in naming))
    pointing = []
    for column in rows.columns:
        for fk in column.foreign_keys:
            parent = fk.column.table
            if not isinstance(parent, Table) or parent is _CANDIDATES:
                continue
            if parent_naming := _naming(parent):
                ids = select(fk.column).where(or_(*(c == candidate_id for c in parent_naming)))
                if "company_id" in parent.c:
                    ids = ids.where(parent.c.company_id == company_id)
                pointing.append(column.in_(ids))
    return or_(*pointing) if pointing else None


async def forget(session: AsyncSession, company_id: int, candidate_id: int, traces: Traces) -> None:
    """Every copy of the candidate's personal strings in the rows about them, replaced;
    what is personal by nature, dropped. Safe to run again: the route runs it once more
    after the sends in flight have ended, since a send that was past its last check may
    still write its peer's reply (which can quote the address)."""
    # The tables that name the candidate first, then those pointing at them: a send locks
    # its message before its action, and so does this.
    tables = sorted(Base.metadata.sorted_tables, key=lambda rows: not _naming(rows))
    for rows in tables:
        if rows is _CANDIDATES or rows.name == IdempotentRequest.__tablename__:
            continue
        where = _about(rows, company_id, candidate_id)
        dropped = [c for c in _DROPPED if c.table is rows]
        texts = [c for c in rows.columns if _free_text(c) and all(c is not d for d in dropped)]
        if where is None or not (texts or dropped):
            continue
        keys = list(rows.primary_key.columns)
        scope = [where, rows.c.company_id == company_id] if "company_id" in rows.c else [where]
        found = await session.execute(select(*keys, *texts, *dropped).where(*scope))
        for row in found:
            values = row._mapping
            changes: dict[str, Any] = {c.name: None for c in dropped if values[c.name] is not None}
            for column in texts:
                before = values[column.name]
                after = traces.redact(before, prose=_prose(column))
                if after != before:
                    changes[column.name] = _fitted(column, after, rows, values, keys, traces)
            if changes:
                await session.execute(
                    update(rows).where(*(key == values[key.name] for key in keys)).values(changes)
                )


def _fitted(
    column: Column[Any],
    value: Any,
    rows: Table,
    values: Any,
    keys: list[Column[Any]],
    traces: Traces,
) -> Any:
    """A redacted value as its column can hold it: one that must be unique (an event's
    id, say) becomes the mark and the row's key, which no other row has; a string is cut
    to the column's length."""
    if not isinstance(value, str):
        return value
    if _unique(rows, column):
        value = f"{traces.mark} {rows.name} {'/'.join(str(values[k.name]) for k in keys)}"
    length = getattr(column.type, "length", None)
    return value[:length] if length else value


def _unique(rows: Table, column: Column[Any]) -> bool:
    if column.unique or column.primary_key:
        return True
    constraints = [c for c in rows.constraints if isinstance(c, UniqueConstraint)]
    unique = [list(c.columns) for c in constraints] + [
        list(i.columns) for i in rows.indexes if i.unique
    ]
    return any(any(column is c for c in columns) for columns in unique)


async def _answer_erased(
    session: AsyncSession, company_id: int, candidate_id: int, traces: Traces, now: datetime
) -> None:
    """Idempotent request answers: one about the candidate (their creation or update, one
    of their moves) now answers 409 erased; any other that quotes them is redacted."""
    rows = table(IdempotentRequest)
    text = rows.c.body.cast(String)
    near = [
        text.like(f'%"{name}": {candidate_id}{end}%')
        for name in ("id", "candidate_id")
        for end in (",", "}")
    ]
    near += [text.ilike(f"%{_like(json.dumps(s)[1:-1])}%", escape="\\") for s in traces.distinctive]
    found = await session.execute(
        select(rows.c.id, rows.c.body).where(rows.c.company_id == company_id, or_(*near))
    )
    erased = {
        "answer": {
            "detail": f"Candidate {candidate_id} was erased on {now:%Y-%m-%d}: this request's "
            "answer named them and is gone. Nothing was done now."
        }
    }
    for row_id, body in found:
        answer = body.get("answer") if isinstance(body, dict) else None
        if _names(answer, candidate_id):
            await session.execute(
                update(rows).where(rows.c.id == row_id).values(status_code=409, body=erased)
            )
        elif (redacted := traces.redact(body, prose=False)) != body:
            await session.execute(update(rows).where(rows.c.id == row_id).values(body=redacted))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _names(answer: Any, candidate_id: int) -> bool:
    """An answer about the candidate: the candidate themselves, or a record of theirs."""
    if not isinstance(answer, dict):
        return False
    if answer.get("candidate_id") == candidate_id:
        return True
    return answer.get("id") == candidate_id and "first_name" in answer


def _report(ended: list[Ended], cancelled: list[Cancelled]) -> dict[str, Any]:
    """What the erasure cancelled, ids and times only, to answer a repeat with."""
    return {
        "ended": [e.to_json() for e in ended],
        "cancelled": [
            [c.move_id, c.action_id, c.kind.value, c.due_at.isoformat()] for c in cancelled
        ],
    }


async def _repeated(session: AsyncSession, company_id: int, candidate: Candidate) -> Erasure:
    assert candidate.erased_at is not None
    report = candidate.erasure or {}
    ended = [Ended.from_json(candidate.id, e) for e in report.get("ended", [])]
    cancelled = [
        Cancelled(move, action, ActionKind(kind), datetime.fromisoformat(due))
        for move, action, kind, due in report.get("cancelled", [])
    ]
    told = sorted({c.move_id for c in cancelled})
    moves = (
        list(
            await session.scalars(
                select(Move).where(Move.company_id == company_id, Move.id.in_(told))
            )
        )
        if told
        else []
    )
    return Erasure(candidate.id, candidate.erased_at, True, ended, cancelled, moves)
