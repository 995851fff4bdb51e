"""Recipients: who may enter a campaign, and the store's side of pause, resume and exits.

The store decides who may receive what; these functions change that decision and answer
which workflows must hear of it. They never commit: the caller signals after its commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, func, select, update
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
    return verdicts


async def get_enrolment(
    session: AsyncSession, company_id: int, campaign_id: int, candidate_id: int
) -> Enrolment:
    enrolment = await session.scalar(
        locking(
            select(Enrolment).where(
                Enrolment.company_id == company_id,
                Enrolment.campaign_id == campaign_id,
                Enrolment.candidate_id == candidate_id,
            )
        )
    )
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
    return enrolment


def _exited(reason: ExitReason, now: datetime) -> dict[str, Any]:
    return {
        "status": RecipientStatus.EXITED,
        "exit_reason": reason,
        "left_at": now,
        "next_position": None,
        "next_send_at": None,
    }


def exit_enrolment(enrolment: Enrolment, reason: ExitReason, now: datetime) -> None:
    for name, value in _exited(reason, now).items():
        setattr(enrolment, name, value)


_ENROLMENTS = table(Enrolment)
_EXIT = update(_ENROLMENTS).where(_ENROLMENTS.c.id == bindparam("enrolment_id"))


async def exit_enrolment_by_id(
    session: AsyncSession, enrolment_id: int, reason: ExitReason, now: datetime
) -> None:
    """`exit_enrolment` for an enrolment read as a Core row (the send path's)."""
    connection = await session.connection()
    await connection.execute(_EXIT.values(_exited(reason, now)), {"enrolment_id": enrolment_id})


async def remove_recipient(
    session: AsyncSession, company_id: int, campaign_id: int, candidate_id: int, now: datetime
) -> Enrolment:
    """Removing a removed recipient changes nothing (a retry after a failed signal)."""
    enrolment = await get_enrolment(session, company_id, campaign_id, candidate_id)
    if enrolment.exit_reason == ExitReason.REMOVED:
        return enrolment
    if enrolment.status not in STAYING:
        raise _left(enrolment)
    exit_enrolment(enrolment, ExitReason.REMOVED, now)
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
        await connection.execute(_COMPLETE, {**where, "now": now})
    else:
        await connection.execute(
            _ADVANCE, {**where, "position": next_position, "send_at": next_send_at}
        )


async def end_campaigns(
    session: AsyncSession, company_id: int, candidate_id: int, reason: ExitReason, now: datetime
) -> list[tuple[int, int]]:
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
) -> list[tuple[int, int]]:
    """End the candidate's campaigns that this reason ends (unsubscribing ends all of them);
    answers the (campaign, run) of each enrolment ended."""
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
            exit_enrolment(enrolment, reason, now)
            ended.append((enrolment.campaign_id, enrolment.run))
    await session.flush()
    return sorted(ended)


@dataclass(frozen=True)
class RecipientRow:
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
    return [
        RecipientRow(
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
        )
        for e, first, last in rows
    ], total or 0


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
