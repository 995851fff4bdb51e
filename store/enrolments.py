"""Recipients: who may enter a campaign, and the store's side of pause, resume and exits.

The store decides who may receive what; these functions change that decision and answer
which workflows must hear of it. They never commit: the caller signals after its commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Exists, bindparam, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError
from store import candidates as candidate_store
from store.models import (
    Campaign,
    CampaignStatus,
    Candidate,
    Company,
    Enrolment,
    EnrolmentBatch,
    Message,
    MessageSource,
    MessageState,
    RecipientEvent,
    RecipientEventKind,
    RecipientStatus,
    Touchpoint,
    table,
)
from store.session import locking
from workflows import timing
from workflows.contracts import ExitReason, NurtureInput, NurturePlan

_CHUNK = 500
STAYING = (RecipientStatus.ACTIVE, RecipientStatus.PAUSED)


class AddResult(StrEnum):
    ADDED = "added"
    ALREADY_ACTIVE = "already_active"
    REFUSED = "refused"


class RefusalReason(StrEnum):
    NOT_FOUND = "not_found"
    NO_EMAIL = "no_email"
    NO_CONSENT = "no_consent"
    UNSUBSCRIBED = "unsubscribed"
    ALREADY_LEFT = "already_left"
    # A segment's batch reached the candidate after its campaign was archived.
    CAMPAIGN_CLOSED = "campaign_closed"


@dataclass
class AddVerdict:
    candidate_id: int
    result: AddResult
    reason: RefusalReason | None = None
    detail: str | None = None
    enrolment: Enrolment | None = None


def _refused(candidate_id: int, reason: RefusalReason, detail: str) -> AddVerdict:
    return AddVerdict(candidate_id, AddResult.REFUSED, reason, detail)


def _check_candidate(candidate: Candidate | None, candidate_id: int) -> AddVerdict | None:
    if candidate is None:
        return _refused(candidate_id, RefusalReason.NOT_FOUND, "No candidate with this id.")
    if candidate.erased_at is not None:
        return _refused(
            candidate_id,
            RefusalReason.NOT_FOUND,
            f"The candidate was erased on {candidate.erased_at:%Y-%m-%d}.",
        )
    if not candidate.email:
        return _refused(
            candidate_id, RefusalReason.NO_EMAIL, "The candidate has no e-mail address."
        )
    if candidate.unsubscribed_at is not None:
        return _refused(
            candidate_id,
            RefusalReason.UNSUBSCRIBED,
            f"The candidate unsubscribed on {candidate.unsubscribed_at:%Y-%m-%d}.",
        )
    if candidate.consent_given_at is None:
        return _refused(
            candidate_id,
            RefusalReason.NO_CONSENT,
            "The candidate has not consented to be contacted (no consent recorded).",
        )
    return None


def check_campaign_open(campaign: Campaign) -> None:
    if campaign.status is CampaignStatus.DRAFT:
        raise ConflictError(f"Campaign {campaign.id} is a draft: save it before adding recipients.")
    if campaign.status is CampaignStatus.ARCHIVED:
        raise ConflictError(f"Campaign {campaign.id} is archived: no one can be added.")


async def add_recipients(
    session: AsyncSession,
    company: Company,
    campaign: Campaign,
    first: Touchpoint,
    candidate_ids: Sequence[int],
    *,
    re_enrol: bool,
    now: datetime,
    batch: EnrolmentBatch | None = None,
) -> list[AddVerdict]:
    """One verdict per candidate, in the order given; never fails as a whole for one row."""
    check_campaign_open(campaign)
    first_due = timing.first_send_at(
        now, time(first.send_hour, first.send_minute), company.time_zone
    )
    verdicts: list[AddVerdict] = []
    seen: set[int] = set()
    for start in range(0, len(candidate_ids), _CHUNK):
        chunk = list(dict.fromkeys(candidate_ids[start : start + _CHUNK]))
        candidates = {
            c.id: c
            for c in await session.scalars(
                select(Candidate).where(Candidate.company_id == company.id, Candidate.id.in_(chunk))
            )
        }
        existing = {
            e.candidate_id: e
            for e in await session.scalars(
                locking(
                    select(Enrolment).where(
                        Enrolment.campaign_id == campaign.id, Enrolment.candidate_id.in_(chunk)
                    )
                )
            )
        }
        for candidate_id in candidate_ids[start : start + _CHUNK]:
            verdict = _check_candidate(candidates.get(candidate_id), candidate_id)
            enrolment = existing.get(candidate_id)
            if verdict is None and (
                candidate_id in seen or (enrolment and enrolment.status in STAYING)
            ):
                verdict = AddVerdict(
                    candidate_id,
                    AddResult.ALREADY_ACTIVE,
                    detail="The candidate is already in this campaign; nothing changed.",
                )
            elif verdict is None and enrolment is not None and not re_enrol:
                how = enrolment.exit_reason or enrolment.status.value
                verdict = _refused(
                    candidate_id,
                    RefusalReason.ALREADY_LEFT,
                    f"The candidate already left this campaign ({how}); "
                    "ask re_enrol to enrol them again.",
                )
            elif verdict is None:
                if enrolment is None:
                    enrolment = Enrolment(
                        company_id=company.id, campaign_id=campaign.id, candidate_id=candidate_id
                    )
                    session.add(enrolment)
                    enrolment.run = 1
                else:
                    enrolment.run += 1
                enrolment.status = RecipientStatus.ACTIVE
                enrolment.exit_reason = None
                enrolment.entered_at = now
                enrolment.left_at = enrolment.workflow_started_at = None
                enrolment.paused_at = enrolment.resumed_at = None
                enrolment.next_position, enrolment.next_send_at = 0, first_due
                enrolment.batch_id = batch.id if batch else None
                verdict = AddVerdict(candidate_id, AddResult.ADDED, enrolment=enrolment)
            seen.add(candidate_id)
            verdicts.append(verdict)
    try:
        await session.flush()
    except IntegrityError:
        raise ConflictError(
            "Another request is adding some of these candidates to this campaign right now; "
            "retry in a moment (nothing was added)."
        ) from None
    if any(v.enrolment is not None for v in verdicts):
        # Read again under a share lock, after the enrolments' (the archive's order): an
        # archive that committed meanwhile refuses the add, one in flight waits for it.
        status = await session.scalar(
            select(Campaign.status).where(Campaign.id == campaign.id).with_for_update(read=True)
        )
        if status is CampaignStatus.ARCHIVED:
            raise ConflictError(f"Campaign {campaign.id} is archived: no one can be added.")
    await record(
        session,
        [
            event_row(v.enrolment, RecipientEventKind.ENTERED, now, position=0, due_at=first_due)
            for v in verdicts
            if v.enrolment is not None
        ],
    )
    return verdicts


_EVENTS = table(RecipientEvent)
_IDS = ("company_id", "id", "campaign_id", "candidate_id", "run")
# The same, as a timeline row's columns, and as the enrolment's (for INSERT ... SELECT).
EVENT_IDS = ("company_id", "enrolment_id", "campaign_id", "candidate_id", "run")


def event_row(
    enrolment: Enrolment | Any,
    kind: RecipientEventKind,
    at: datetime,
    *,
    reason: str | None = None,
    position: int | None = None,
    due_at: datetime | None = None,
) -> dict[str, Any]:
    """A timeline row for an enrolment (an entity, or a Core row or mapping of its columns)."""
    row = enrolment if isinstance(enrolment, Mapping) else {k: getattr(enrolment, k) for k in _IDS}
    return {
        "company_id": row["company_id"],
        "enrolment_id": row["id"],
        "campaign_id": row["campaign_id"],
        "candidate_id": row["candidate_id"],
        "run": row["run"],
        "kind": kind,
        "at": at,
        "reason": reason,
        "position": position,
        "due_at": due_at,
    }


async def record(session: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    """Timeline rows, in one statement (executemany), in the caller's transaction."""
    if events:
        await (await session.connection()).execute(insert(_EVENTS), list(events))


async def get_enrolment(
    session: AsyncSession,
    company_id: int,
    campaign_id: int,
    candidate_id: int,
    *,
    lock: bool = True,
) -> Enrolment:
    query = select(Enrolment).where(
        Enrolment.company_id == company_id,
        Enrolment.campaign_id == campaign_id,
        Enrolment.candidate_id == candidate_id,
    )
    enrolment = await session.scalar(locking(query) if lock else query)
    if enrolment is None:
        raise NotFoundError(
            f"Candidate {candidate_id} is not a recipient of campaign {campaign_id}."
        )
    return enrolment


def _left(enrolment: Enrolment) -> ConflictError:
    how = enrolment.exit_reason or enrolment.status.value
    return ConflictError(
        f"Candidate {enrolment.candidate_id} has left campaign {enrolment.campaign_id} ({how})."
    )


async def pause_recipient(
    session: AsyncSession, company_id: int, campaign_id: int, candidate_id: int, now: datetime
) -> Enrolment:
    """Pausing a paused recipient changes nothing (so a retry after a failed signal is safe)."""
    enrolment = await get_enrolment(session, company_id, campaign_id, candidate_id)
    if enrolment.status is RecipientStatus.PAUSED:
        return enrolment
    if enrolment.status is not RecipientStatus.ACTIVE:
        raise _left(enrolment)
    enrolment.status, enrolment.paused_at, enrolment.resumed_at = RecipientStatus.PAUSED, now, None
    await session.flush()
    await record(session, [event_row(enrolment, RecipientEventKind.PAUSED, now)])
    return enrolment


async def resume_recipient(
    session: AsyncSession,
    company: Company,
    campaign_id: int,
    candidate_id: int,
    now: datetime,
) -> Enrolment:
    """Resuming answers the same resume again when repeated, so a retry is safe."""
    enrolment = await get_enrolment(session, company.id, campaign_id, candidate_id)
    if enrolment.status is RecipientStatus.ACTIVE and enrolment.resumed_at is not None:
        return enrolment
    if enrolment.status is RecipientStatus.ACTIVE:
        raise ConflictError(f"Candidate {candidate_id} is not paused in this campaign.")
    if enrolment.status is not RecipientStatus.PAUSED or enrolment.paused_at is None:
        raise _left(enrolment)
    if enrolment.next_position is not None and enrolment.next_send_at is not None:
        touchpoint = await session.scalar(
            select(Touchpoint).where(
                Touchpoint.campaign_id == campaign_id,
                Touchpoint.position == enrolment.next_position,
            )
        )
        if touchpoint is not None:
            enrolment.next_send_at = timing.resume_send_at(
                enrolment.next_send_at - enrolment.paused_at,
                now,
                time(touchpoint.send_hour, touchpoint.send_minute),
                company.time_zone,
            )
    enrolment.status, enrolment.resumed_at = RecipientStatus.ACTIVE, now
    await session.flush()
    await record(
        session,
        [
            event_row(
                enrolment, RecipientEventKind.RESUMED, now,
                position=enrolment.next_position, due_at=enrolment.next_send_at,
            )
        ],
    )  # fmt: skip
    return enrolment


@dataclass(frozen=True)
class Ended:
    """An enrolment an exit ended, and the touchpoint it cancelled (`position`, `due_at`),
    if one was pending: no exit is silent."""

    campaign_id: int
    candidate_id: int
    run: int
    position: int | None
    due_at: datetime | None

    def to_json(self) -> list[Any]:
        """As a stored answer keeps it (ids and times only): [campaign, run, position, due]."""
        return [self.campaign_id, self.run, self.position, self.due_at and self.due_at.isoformat()]

    @classmethod
    def from_json(cls, candidate_id: int, stored: list[Any]) -> Ended:
        """From `to_json`; answers recorded before it held only [campaign, run]."""
        campaign_id, run, *rest = stored
        position, due = [*rest, None, None][:2]
        return cls(
            campaign_id, candidate_id, run, position, datetime.fromisoformat(due) if due else None
        )


def _exited(reason: ExitReason, now: datetime) -> dict[str, Any]:
    return {
        "status": RecipientStatus.EXITED,
        "exit_reason": reason,
        "left_at": now,
        "next_position": None,
        "next_send_at": None,
        "held_since": None,
    }


async def exit_enrolment(
    session: AsyncSession, enrolment: Enrolment, reason: ExitReason, now: datetime
) -> Ended:
    """The enrolment leaves, and its timeline says what it cancelled: its pending
    touchpoint, unless that one's e-mail is already with the mail server (`sending`: it
    will be delivered, or end unconfirmed, and is not cancelled)."""
    position, due = enrolment.next_position, enrolment.next_send_at
    if position is not None and await session.scalar(
        select(in_flight(_ENROLMENTS.c.id == enrolment.id, _MESSAGES.c.position == position))
    ):
        position = due = None
    ended = Ended(enrolment.campaign_id, enrolment.candidate_id, enrolment.run, position, due)
    await record(
        session,
        [
            event_row(
                enrolment, RecipientEventKind.EXITED, now,
                reason=reason.value, position=ended.position, due_at=ended.due_at,
            )
        ],
    )  # fmt: skip
    for name, value in _exited(reason, now).items():
        setattr(enrolment, name, value)
    return ended


_ENROLMENTS, _MESSAGES = table(Enrolment), table(Message)
ENROLMENT_IDS = tuple(_ENROLMENTS.c[name] for name in _IDS)


def in_flight(*where: ColumnElement[bool]) -> Exists:
    """Whether a touchpoint e-mail of the enrolment is with the mail server right now."""
    return exists().where(
        _MESSAGES.c.enrolment_id == _ENROLMENTS.c.id,
        _MESSAGES.c.source_kind == MessageSource.TOUCHPOINT,
        _MESSAGES.c.state == MessageState.SENDING,
        *where,
    )


_EXIT = update(_ENROLMENTS).where(_ENROLMENTS.c.id == bindparam("enrolment_id"))


async def exit_enrolment_by_id(
    session: AsyncSession,
    enrolment: Any,
    reason: ExitReason,
    now: datetime,
    *,
    position: int,
    due_at: datetime | None,
) -> None:
    """`exit_enrolment` for an enrolment read as a Core row (the send path's, which names
    the touchpoint it was about to send)."""
    connection = await session.connection()
    await connection.execute(_EXIT.values(_exited(reason, now)), {"enrolment_id": enrolment.id})
    await record(
        session,
        [
            event_row(
                enrolment, RecipientEventKind.EXITED, now,
                reason=reason.value, position=position, due_at=due_at,
            )
        ],
    )  # fmt: skip


async def remove_recipient(
    session: AsyncSession, company_id: int, campaign_id: int, candidate_id: int, now: datetime
) -> Enrolment:
    """Removing a removed recipient changes nothing (a retry after a failed signal)."""
    enrolment = await get_enrolment(session, company_id, campaign_id, candidate_id)
    if enrolment.exit_reason == ExitReason.REMOVED:
        return enrolment
    if enrolment.status not in STAYING:
        raise _left(enrolment)
    await exit_enrolment(session, enrolment, ExitReason.REMOVED, now)
    await session.flush()
    return enrolment


_STAYING_IN_RUN = (
    _ENROLMENTS.c.id == bindparam("enrolment_id"),
    _ENROLMENTS.c.run == bindparam("enrolment_run"),
    _ENROLMENTS.c.status.in_(STAYING),
)
_ADVANCE = (
    update(_ENROLMENTS)
    .where(*_STAYING_IN_RUN)
    .values(next_position=bindparam("position"), next_send_at=bindparam("send_at"))
)
_COMPLETE = (
    update(_ENROLMENTS)
    .where(*_STAYING_IN_RUN)
    .values(
        status=RecipientStatus.COMPLETED,
        left_at=bindparam("now"),
        next_position=None,
        next_send_at=None,
    )
    .returning(
        _ENROLMENTS.c.id,
        _ENROLMENTS.c.company_id,
        _ENROLMENTS.c.campaign_id,
        _ENROLMENTS.c.candidate_id,
        _ENROLMENTS.c.run,
    )
)


async def advance(
    session: AsyncSession,
    enrolment_id: int,
    run: int,
    next_position: int | None,
    next_send_at: datetime | None,
    now: datetime,
) -> None:
    """A touchpoint of run `run` has ended: record the next one, or the campaign completed
    after the last. A recipient who left meanwhile stays as they left; one paused keeps
    their place. One statement, built once: it runs in every send's last transaction."""
    connection = await session.connection()
    where = {"enrolment_id": enrolment_id, "enrolment_run": run}
    if next_position is None:
        done = (await connection.execute(_COMPLETE, {**where, "now": now})).first()
        if done is not None:
            await record(session, [event_row(done, RecipientEventKind.COMPLETED, now)])
    else:
        await connection.execute(
            _ADVANCE, {**where, "position": next_position, "send_at": next_send_at}
        )


async def end_campaigns(
    session: AsyncSession, company_id: int, candidate_id: int, reason: ExitReason, now: datetime
) -> list[Ended]:
    """What an event or an unsubscribe ends, in the open transaction: the campaigns this
    reason ends, and an unsubscription recorded. The candidate row is locked, then the
    enrolments: a send holding an enrolment may meanwhile insert a message naming the
    candidate, whose KEY SHARE this lock lets through (store.session.locking). Answers
    the (campaign, run) of each enrolment ended, to signal once the caller has committed."""
    candidate = await candidate_store.get_candidate(session, company_id, candidate_id, lock=True)
    if reason is ExitReason.UNSUBSCRIBED and candidate.unsubscribed_at is None:
        candidate.unsubscribed_at = now
    return await exit_candidate(session, company_id, candidate_id, reason, now)


async def exit_candidate(
    session: AsyncSession, company_id: int, candidate_id: int, reason: ExitReason, now: datetime
) -> list[Ended]:
    """End the candidate's campaigns that this reason ends (unsubscribing ends all of them);
    answers each enrolment ended, with the touchpoint it cancelled."""
    rows = await session.execute(
        locking(
            select(Enrolment, Campaign.exit_options)
            .join(Campaign, Campaign.id == Enrolment.campaign_id)
            .where(
                Enrolment.company_id == company_id,
                Enrolment.candidate_id == candidate_id,
                Enrolment.status.in_(STAYING),
            ),
            of=Enrolment,
        )
    )
    ended = []
    for enrolment, exit_options in rows:
        if reason in (ExitReason.UNSUBSCRIBED, ExitReason.ERASED) or reason.value in exit_options:
            ended.append(await exit_enrolment(session, enrolment, reason, now))
    await session.flush()
    return sorted(ended, key=lambda e: e.campaign_id)


@dataclass(frozen=True)
class RecipientRow:
    enrolment_id: int
    run: int
    campaign_id: int
    candidate_id: int
    first_name: str
    last_name: str
    status: RecipientStatus
    exit_reason: str | None
    entered_at: datetime
    left_at: datetime | None
    next_position: int | None
    next_send_at: datetime | None
    paused_at: datetime | None
    held_since: datetime | None
    # What the exit of this run cancelled, if it has left: (position, due).
    cancelled: tuple[int, datetime | None] | None = None


async def list_recipients(
    session: AsyncSession,
    company_id: int,
    campaign_id: int,
    *,
    limit: int,
    offset: int,
    candidate_id: int | None = None,
) -> tuple[list[RecipientRow], int]:
    where = [Enrolment.company_id == company_id, Enrolment.campaign_id == campaign_id]
    if candidate_id is not None:
        where.append(Enrolment.candidate_id == candidate_id)
    total = await session.scalar(select(func.count()).select_from(Enrolment).where(*where))
    rows = await session.execute(
        select(Enrolment, Candidate.first_name, Candidate.last_name)
        .join(Candidate, Candidate.id == Enrolment.candidate_id)
        .where(*where)
        .order_by(Enrolment.id)
        .limit(limit)
        .offset(offset)
    )
    enrolments = [(e, first, last) for e, first, last in rows]
    cancelled = await _cancelled_by_exits(
        session, [e for e, _, _ in enrolments if e.status is RecipientStatus.EXITED]
    )
    return [
        RecipientRow(
            enrolment_id=e.id,
            run=e.run,
            campaign_id=e.campaign_id,
            candidate_id=e.candidate_id,
            first_name=first,
            last_name=last,
            status=e.status,
            exit_reason=e.exit_reason,
            entered_at=e.entered_at,
            left_at=e.left_at,
            next_position=e.next_position,
            next_send_at=e.next_send_at,
            paused_at=e.paused_at,
            held_since=e.held_since,
            cancelled=cancelled.get(e.id),
        )
        for e, first, last in enrolments
    ], total or 0


async def _cancelled_by_exits(
    session: AsyncSession, exited: Sequence[Enrolment]
) -> dict[int, tuple[int, datetime | None]]:
    """The touchpoint each enrolment's exit (of its current run) cancelled, if any; one
    query for them all."""
    if not exited:
        return {}
    runs = {e.id: e.run for e in exited}
    rows = await session.execute(
        select(RecipientEvent.enrolment_id, RecipientEvent.run, RecipientEvent.position,
               RecipientEvent.due_at)
        .where(
            RecipientEvent.enrolment_id.in_(list(runs)),
            RecipientEvent.kind == RecipientEventKind.EXITED,
            RecipientEvent.position.is_not(None),
        )
        .order_by(RecipientEvent.id)
    )  # fmt: skip
    return {
        enrolment_id: (position, due)
        for enrolment_id, run, position, due in rows
        if runs[enrolment_id] == run and position is not None
    }


async def unstarted(session: AsyncSession, batch_id: int, limit: int) -> Sequence[Enrolment]:
    rows = await session.scalars(
        select(Enrolment)
        .where(Enrolment.batch_id == batch_id, Enrolment.workflow_started_at.is_(None))
        .order_by(Enrolment.id)
        .limit(limit)
    )
    return rows.all()


async def mark_started(session: AsyncSession, enrolment_ids: Iterable[int], now: datetime) -> None:
    await session.execute(
        update(Enrolment)
        .where(Enrolment.id.in_(list(enrolment_ids)))
        .values(workflow_started_at=now)
    )


def nurture_input(enrolment: Enrolment, plan: NurturePlan) -> NurtureInput:
    return NurtureInput(
        company_id=enrolment.company_id,
        campaign_id=enrolment.campaign_id,
        candidate_id=enrolment.candidate_id,
        enrolment_id=enrolment.id,
        run=enrolment.run,
        entered_at=enrolment.entered_at,
        plan=plan,
    )
