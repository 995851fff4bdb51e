"""A whole campaign paused, resumed or archived: the store's side.

A pause is one row: the send path finds it when a touchpoint falls due, holds that
recipient (`hold`), and its workflow waits for the campaign's resume. The resume releases
the held recipients, each to its touchpoint's send time on the first day after the resume
(the later touchpoints keep their intervals after it: the workflow counts them from the
send), and answers which workflows to tell. An archive ends every recipient still in the
campaign, with what each had pending. Every statement here is per campaign or per
touchpoint, never per recipient. None of these commit: the caller tells the workflows after
its commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError
from store import campaigns as campaign_store
from store import enrolments as enrolment_store
from store.models import (
    Campaign,
    CampaignStatus,
    Candidate,
    Company,
    Enrolment,
    Message,
    RecipientEvent,
    RecipientEventKind,
    RecipientStatus,
    Touchpoint,
    table,
)
from store.session import locking
from workflows import timing
from workflows.contracts import ExitReason

_CAMPAIGNS, _ENROLMENTS, _EVENTS = table(Campaign), table(Enrolment), table(RecipientEvent)
_STAYING = _ENROLMENTS.c.status.in_(enrolment_store.STAYING)
_SENDING = enrolment_store.in_flight(table(Message).c.position == _ENROLMENTS.c.next_position)


class Told(StrEnum):
    """What a campaign's workflows are told, in bulk (activities/campaign_signals.py)."""

    ARCHIVED = "archived"
    RESUMED = "resumed"


@dataclass(frozen=True)
class Held:
    """A send the campaign's pause holds: since `paused_at`, until a resume; `resumed_at`
    when the resume came already (the touchpoint fell due in the pause, its send only
    now), which releases it at once."""

    paused_at: datetime
    resumed_at: datetime | None = None


async def hold_if_paused(
    session: AsyncSession, enrolment: Any, position: int, due: datetime | None, now: datetime
) -> Held | None:
    """The send path's last question about the campaign: None lets the send go.

    Paused, the recipient is held until the resume. The campaign is read again under a
    share lock (PostgreSQL): a resume in flight commits first (then this sees it resumed),
    or waits for this hold to commit and then releases it. A recipient held already (a
    retry) takes no lock: a resume releasing it would wait for this transaction's lock on
    the enrolment while this one waited for the resume's on the campaign.

    Resumed, a touchpoint that fell due during the pause and reaches its send only now
    (its workflow's task waited past the resume) goes at its send time after the resume,
    as the resume would have released it: never at once, in a burst."""
    if enrolment["held_since"] is not None:
        return Held(enrolment["held_since"])
    campaign = enrolment
    if enrolment["campaign_status"] is CampaignStatus.PAUSED:
        found = (
            await (await session.connection()).execute(
                select(
                    _CAMPAIGNS.c.status.label("campaign_status"),
                    _CAMPAIGNS.c.paused_at.label("campaign_paused_at"),
                    _CAMPAIGNS.c.resumed_at.label("campaign_resumed_at"),
                )
                .where(_CAMPAIGNS.c.id == enrolment["campaign_id"])
                .with_for_update(read=True)
            )
        ).first()
        if found is None:
            return None
        campaign = found._mapping
    paused, resumed = campaign["campaign_paused_at"], campaign["campaign_resumed_at"]
    if campaign["campaign_status"] is CampaignStatus.PAUSED and paused is not None:
        await _set(session, enrolment["id"], held_since=paused)
        await enrolment_store.record(session, [_held(enrolment, position, due, now)])
        return Held(paused)
    late = (
        due is not None and paused is not None and resumed is not None and paused <= due < resumed
    )
    if not late:
        return None
    moment = await _release_moment(session, enrolment["campaign_id"], position, resumed)
    await _set(session, enrolment["id"], next_send_at=moment, released_at=resumed)
    await enrolment_store.record(
        session,
        [
            _held(enrolment, position, due, now),
            enrolment_store.event_row(
                enrolment, RecipientEventKind.RELEASED, now, position=position, due_at=moment
            ),
        ],
    )
    return Held(paused, resumed)


def _held(enrolment: Any, position: int, due: datetime | None, now: datetime) -> dict[str, Any]:
    return enrolment_store.event_row(
        enrolment, RecipientEventKind.HELD, now,
        reason="campaign paused", position=position, due_at=due,
    )  # fmt: skip


async def _set(session: AsyncSession, enrolment_id: int, **values: Any) -> None:
    await (await session.connection()).execute(
        update(_ENROLMENTS).where(_ENROLMENTS.c.id == enrolment_id).values(**values)
    )


async def _release_moment(
    session: AsyncSession, campaign_id: int, position: int, resumed_at: datetime
) -> datetime | None:
    found = (
        await (await session.connection()).execute(
            select(Touchpoint.send_hour, Touchpoint.send_minute, Company.time_zone)
            .join(Company, Company.id == Touchpoint.company_id)
            .where(Touchpoint.campaign_id == campaign_id, Touchpoint.position == position)
        )
    ).first()
    if found is None:
        return None
    return timing.resume_send_at(
        timedelta(0), resumed_at, time(found.send_hour, found.send_minute), found.time_zone
    )


async def pause_campaign(
    session: AsyncSession, company_id: int, campaign_id: int, now: datetime
) -> Campaign:
    """No e-mail of the campaign goes out from here on; pausing a paused one changes nothing."""
    campaign = await campaign_store.get_campaign(session, company_id, campaign_id, for_update=True)
    if campaign.status is CampaignStatus.PAUSED:
        return campaign
    if campaign.status is not CampaignStatus.ACTIVE:
        raise ConflictError(
            f"Campaign {campaign_id} is {campaign.status.value}: only an active campaign can "
            "be paused."
        )
    campaign.status, campaign.paused_at = CampaignStatus.PAUSED, now
    await session.flush()
    return campaign


def _resumed(campaign: Campaign) -> bool:
    return (
        campaign.status is CampaignStatus.ACTIVE
        and campaign.paused_at is not None
        and campaign.resumed_at is not None
        and campaign.resumed_at >= campaign.paused_at
    )


async def resume_campaign(
    session: AsyncSession, company: Company, campaign_id: int, now: datetime
) -> Campaign:
    """Every held recipient's touchpoint goes out at its send time on the first day after
    now (never a burst). Resuming again answers the same resume.

    The held recipients are locked before the campaign, in the archive's order (see
    `archive_campaign`), so that the two never wait for each other."""
    await campaign_store.get_campaign(session, company.id, campaign_id)
    connection = await session.connection()
    await connection.execute(
        locking(
            select(_ENROLMENTS.c.id).where(
                _ENROLMENTS.c.campaign_id == campaign_id, _ENROLMENTS.c.held_since.is_not(None)
            )
        )
    )
    campaign = await campaign_store.get_campaign(session, company.id, campaign_id, for_update=True)
    if _resumed(campaign):
        return campaign
    if campaign.status is not CampaignStatus.PAUSED:
        raise ConflictError(f"Campaign {campaign_id} is {campaign.status.value}, not paused.")
    campaign.status, campaign.resumed_at = CampaignStatus.ACTIVE, now
    for touchpoint in await campaign_store.list_touchpoints(session, campaign.id):
        due = release_at(now, time(touchpoint.send_hour, touchpoint.send_minute), company)
        held = (
            _ENROLMENTS.c.campaign_id == campaign.id,
            _ENROLMENTS.c.held_since.is_not(None),
            _ENROLMENTS.c.next_position == touchpoint.position,
        )
        await connection.execute(
            insert(_EVENTS).from_select(
                [*enrolment_store.EVENT_IDS, "kind", "at", "position", "due_at"],
                select(
                    *enrolment_store.ENROLMENT_IDS,
                    literal(RecipientEventKind.RELEASED.value),
                    literal(now, _EVENTS.c.at.type),
                    _ENROLMENTS.c.next_position,
                    literal(due, _EVENTS.c.due_at.type),
                ).where(*held),
            )
        )
        await connection.execute(
            update(_ENROLMENTS)
            .where(*held)
            .values(held_since=None, released_at=now, next_send_at=due)
        )
    await session.flush()
    return campaign


def release_at(resumed_at: datetime, at: time, company: Company) -> datetime:
    """Where a held touchpoint goes after the resume: its send time on the first day that
    moment is ahead (the workflow computes the same, from the same resume moment)."""
    return timing.resume_send_at(timedelta(0), resumed_at, at, company.time_zone)


async def archive_campaign(
    session: AsyncSession, company_id: int, campaign_id: int, now: datetime
) -> Campaign:
    """Every recipient still in the campaign leaves (`archived`), its timeline naming the
    touchpoint it cancelled; no one can be added any more. Archiving again changes nothing.

    The recipients are locked before the campaign (PostgreSQL), the order a send takes
    them in (its enrolment, then a held one's campaign): a send advancing one finishes
    before the pending touchpoints are read, so what is recorded as cancelled is what was
    pending, and no send waits for the campaign while the archive waits for it."""
    await campaign_store.get_campaign(session, company_id, campaign_id)
    connection = await session.connection()
    staying = (_ENROLMENTS.c.campaign_id == campaign_id, _STAYING)
    await connection.execute(locking(select(_ENROLMENTS.c.id).where(*staying)))
    campaign = await campaign_store.get_campaign(session, company_id, campaign_id, for_update=True)
    if campaign.status is CampaignStatus.ARCHIVED:
        return campaign
    campaign.status, campaign.archived_at = CampaignStatus.ARCHIVED, now
    await session.flush()
    await connection.execute(
        insert(_EVENTS).from_select(
            [*enrolment_store.EVENT_IDS, "kind", "at", "reason", "position", "due_at"],
            select(
                *enrolment_store.ENROLMENT_IDS,
                literal(RecipientEventKind.EXITED.value),
                literal(now, _EVENTS.c.at.type),
                literal(ExitReason.ARCHIVED.value),
                # A touchpoint whose e-mail is with the mail server is not cancelled.
                case((_SENDING, None), else_=_ENROLMENTS.c.next_position),
                case((_SENDING, None), else_=_ENROLMENTS.c.next_send_at),
            ).where(*staying),
        )
    )
    await connection.execute(
        update(_ENROLMENTS)
        .where(*staying)
        .values(
            status=RecipientStatus.EXITED,
            exit_reason=ExitReason.ARCHIVED.value,
            left_at=now,
            next_position=None,
            next_send_at=None,
            held_since=None,
        )
    )
    return campaign


async def released(session: AsyncSession, campaign: Campaign) -> int:
    """How many held recipients the campaign's last resume released."""
    count = await session.scalar(
        select(func.count())
        .select_from(Enrolment)
        .where(Enrolment.campaign_id == campaign.id, Enrolment.released_at == campaign.resumed_at)
    )
    return count or 0


@dataclass(frozen=True)
class CancelledTouchpoint:
    candidate_id: int
    name: str
    position: int
    due_at: datetime | None


async def archive_cancelled(
    session: AsyncSession, campaign: Campaign, *, limit: int, offset: int
) -> tuple[int, list[CancelledTouchpoint]]:
    """What the archive cancelled: the total, and a page of it by candidate."""
    where = (
        RecipientEvent.campaign_id == campaign.id,
        RecipientEvent.kind == RecipientEventKind.EXITED,
        RecipientEvent.reason == ExitReason.ARCHIVED.value,
        RecipientEvent.at == campaign.archived_at,
        RecipientEvent.position.is_not(None),
    )
    total = await session.scalar(select(func.count()).select_from(RecipientEvent).where(*where))
    rows = await session.execute(
        select(RecipientEvent, Candidate.first_name, Candidate.last_name)
        .join(Candidate, Candidate.id == RecipientEvent.candidate_id)
        .where(*where)
        .order_by(RecipientEvent.candidate_id)
        .limit(limit)
        .offset(offset)
    )
    return total or 0, [
        CancelledTouchpoint(
            candidate_id=event.candidate_id,
            name=f"{first} {last}".strip(),
            position=event.position or 0,
            due_at=event.due_at,
        )
        for event, first, last in rows
    ]


async def to_tell(
    session: AsyncSession, campaign_id: int, told: Told, at: datetime, *, after: int, limit: int
) -> Sequence[tuple[int, int, int]]:
    """(enrolment id, candidate id, run) of the workflows an archive or a resume at `at`
    must tell, in id order after `after`: a retry pages on from where it stopped."""
    which: tuple[ColumnElement[bool], ...]
    if told is Told.ARCHIVED:
        which = (
            _ENROLMENTS.c.exit_reason == ExitReason.ARCHIVED.value,
            _ENROLMENTS.c.left_at == at,
        )
    else:
        which = (_ENROLMENTS.c.released_at == at,)
    rows = await (await session.connection()).execute(
        select(_ENROLMENTS.c.id, _ENROLMENTS.c.candidate_id, _ENROLMENTS.c.run)
        .where(_ENROLMENTS.c.campaign_id == campaign_id, _ENROLMENTS.c.id > after, *which)
        .order_by(_ENROLMENTS.c.id)
        .limit(limit)
    )
    return [(row.id, row.candidate_id, row.run) for row in rows]
