"""Campaign numbers: for one campaign, for each campaign of a list, and for all campaigns
together, counted in SQL (a fixed number of grouped queries whatever the number of
recipients, each read from an index of models.py), never by asking workflows.

What counts:
- candidates: those who ever entered the campaign (a re-enrolled one counts once; its
  `entries` count each entry), from `enrolments`;
- e-mails: a campaign's touchpoints sent to its recipients, by their last state: `sent`
  (the peer's 250), `unconfirmed` (the peer may or may not have taken it, RFC 1047) beside
  it, never folded in, and `failed`. Test sends (MessageSource.TEST) count nowhere;
- opens: the e-mails sent that a person opened at least once (the pixel, store/opens.py),
  and apart those a machine fetched; open rate = opened by a person / sent;
- meetings, offers and hires: the backend's `meeting_scheduled`, `offer_made` and `hired`
  events about a candidate of the campaign from their entry on (occurred at or after the
  enrolment's `entered_at`), whether or not they are still in it. Meetings and offers
  count events; hires count candidates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.models import (
    Campaign,
    Enrolment,
    Message,
    MessageOpen,
    MessageSource,
    MessageState,
    ReceivedEvent,
    RecipientStatus,
)

MEETING_SCHEDULED, OFFER_MADE, HIRED = "meeting_scheduled", "offer_made", "hired"
COUNTED_EVENTS = (MEETING_SCHEDULED, OFFER_MADE, HIRED)


@dataclass
class Numbers:
    """The numbers of one campaign, or of all together."""

    total_candidates: int = 0
    emails_sent: int = 0
    emails_unconfirmed: int = 0
    meetings_scheduled: int = 0
    offers_made: int = 0
    candidates_hired: int = 0


@dataclass
class TouchpointNumbers:
    position: int
    sent: int = 0
    unconfirmed: int = 0
    failed: int = 0
    # Sent e-mails with at least one open by a person, and with one by a machine.
    opened: int = 0
    machine_opened: int = 0
    # Fetches of their pixels, by people and by machines.
    opens: int = 0
    machine_opens: int = 0


@dataclass
class CampaignNumbers(Numbers):
    """One campaign's numbers: the common ones and what only one campaign has."""

    entries: int = 0
    active: int = 0
    paused: int = 0
    completed: int = 0
    # Recipients whose last run ended early, by exit reason.
    exits: dict[str, int] = field(default_factory=dict)
    emails_failed: int = 0
    opened: int = 0
    machine_opened: int = 0
    touchpoints: list[TouchpointNumbers] = field(default_factory=list)


def rate(part: int, whole: int) -> float | None:
    """A share of 1, to four places; none of nothing."""
    return round(part / whole, 4) if whole else None


async def _enrolments(
    session: AsyncSession, campaign_ids: Sequence[int]
) -> list[tuple[int, RecipientStatus, str | None, int, int]]:
    """(campaign, status, exit reason, recipients, entries), index-only."""
    rows = await session.execute(
        select(
            Enrolment.campaign_id,
            Enrolment.status,
            Enrolment.exit_reason,
            func.count(),
            func.coalesce(func.sum(Enrolment.run), 0),
        )
        .where(Enrolment.campaign_id.in_(campaign_ids))
        .group_by(Enrolment.campaign_id, Enrolment.status, Enrolment.exit_reason)
    )
    return [(c, s, r, int(n), int(e)) for c, s, r, n, e in rows]


async def _events(
    session: AsyncSession, company_id: int, campaign_ids: Sequence[int]
) -> list[tuple[int, str, int, int]]:
    """(campaign, event type, events, candidates) of the counted events from each
    candidate's entry on."""
    rows = await session.execute(
        select(
            Enrolment.campaign_id,
            ReceivedEvent.type,
            func.count(),
            func.count(func.distinct(ReceivedEvent.candidate_id)),
        )
        .join(
            Enrolment,
            and_(
                Enrolment.candidate_id == ReceivedEvent.candidate_id,
                Enrolment.campaign_id.in_(campaign_ids),
                ReceivedEvent.occurred_at >= Enrolment.entered_at,
            ),
        )
        .where(ReceivedEvent.company_id == company_id, ReceivedEvent.type.in_(COUNTED_EVENTS))
        .group_by(Enrolment.campaign_id, ReceivedEvent.type)
    )
    return [(c, t, int(n), int(k)) for c, t, n, k in rows]


def _add_events(numbers: Numbers, kind: str, events: int, candidates: int) -> None:
    if kind == MEETING_SCHEDULED:
        numbers.meetings_scheduled = events
    elif kind == OFFER_MADE:
        numbers.offers_made = events
    elif kind == HIRED:
        numbers.candidates_hired = candidates


async def campaign_numbers(
    session: AsyncSession, company_id: int, campaign: Campaign, positions: Sequence[int]
) -> CampaignNumbers:
    """One campaign's numbers (the caller found it in the company), with a line for each
    of its touchpoints' `positions`: four queries."""
    numbers = CampaignNumbers()
    for _, status, reason, recipients, entries in await _enrolments(session, [campaign.id]):
        numbers.total_candidates += recipients
        numbers.entries += entries
        if status is RecipientStatus.ACTIVE:
            numbers.active += recipients
        elif status is RecipientStatus.PAUSED:
            numbers.paused += recipients
        elif status is RecipientStatus.COMPLETED:
            numbers.completed += recipients
        else:
            key = reason or "unknown"
            numbers.exits[key] = numbers.exits.get(key, 0) + recipients

    lines = {p: TouchpointNumbers(position=p) for p in positions}
    emails = await session.execute(
        select(Message.position, Message.state, func.count())
        .where(Message.campaign_id == campaign.id, Message.source_kind == MessageSource.TOUCHPOINT)
        .group_by(Message.position, Message.state)
    )
    for position, state, count in emails:
        line = lines.setdefault(position or 0, TouchpointNumbers(position=position or 0))
        if state is MessageState.SENT:
            line.sent += count
        elif state is MessageState.UNCONFIRMED:
            line.unconfirmed += count
        elif state is MessageState.FAILED:
            line.failed += count

    # A person's open is always of an e-mail sent: one fetched before the peer's 250 was
    # recorded (`sent_at`) is a machine's (store/opens.py), and `sent` is a message's last
    # state. So this counts from the opens alone, with no join; a message's first open of
    # each kind is marked, so opened messages need no DISTINCT.
    opens = await session.execute(
        select(MessageOpen.position, MessageOpen.machine, MessageOpen.first_of_kind, func.count())
        .where(MessageOpen.campaign_id == campaign.id)
        .group_by(MessageOpen.machine, MessageOpen.position, MessageOpen.first_of_kind)
    )
    for position, machine, first, fetches in opens:
        line = lines.setdefault(position, TouchpointNumbers(position=position))
        if machine:
            line.machine_opens += fetches
            line.machine_opened += fetches if first else 0
        else:
            line.opens += fetches
            line.opened += fetches if first else 0

    numbers.touchpoints = [lines[p] for p in sorted(lines)]
    for line in numbers.touchpoints:
        numbers.emails_sent += line.sent
        numbers.emails_unconfirmed += line.unconfirmed
        numbers.emails_failed += line.failed
        numbers.opened += line.opened
        numbers.machine_opened += line.machine_opened

    for _, kind, events, candidates in await _events(session, company_id, [campaign.id]):
        _add_events(numbers, kind, events, candidates)
    return numbers


async def numbers_by_campaign(
    session: AsyncSession, company_id: int, campaign_ids: Sequence[int]
) -> dict[int, Numbers]:
    """The numbers of each of the company's campaigns `campaign_ids`, for a list: three
    queries for the whole list."""
    numbers: dict[int, Numbers] = defaultdict(Numbers)
    if not campaign_ids:
        return {}
    for campaign_id, _, _, recipients, _ in await _enrolments(session, campaign_ids):
        numbers[campaign_id].total_candidates += recipients
    emails = await session.execute(
        select(Message.campaign_id, Message.state, func.count())
        .where(
            Message.campaign_id.in_(campaign_ids),
            Message.source_kind == MessageSource.TOUCHPOINT,
            Message.state.in_((MessageState.SENT, MessageState.UNCONFIRMED)),
        )
        .group_by(Message.campaign_id, Message.state)
    )
    for of, state, count in emails:
        if of is None:
            continue
        if state is MessageState.SENT:
            numbers[of].emails_sent = count
        else:
            numbers[of].emails_unconfirmed = count
    for campaign_id, kind, events, candidates in await _events(session, company_id, campaign_ids):
        _add_events(numbers[campaign_id], kind, events, candidates)
    return {campaign_id: numbers[campaign_id] for campaign_id in campaign_ids}


async def overall_numbers(
    session: AsyncSession, company_id: int, campaign_ids: Sequence[int]
) -> Numbers:
    """All the company's campaigns together (`campaign_ids`: all of them): a candidate in
    two campaigns counts once, and so does an event about them. Three queries."""
    numbers = Numbers()
    # Grouped rather than count(DISTINCT): the grouping follows the index's order.
    each_candidate = (
        select(Enrolment.candidate_id)
        .where(Enrolment.company_id == company_id)
        .group_by(Enrolment.candidate_id)
        .subquery()
    )
    numbers.total_candidates = (
        await session.scalar(select(func.count()).select_from(each_candidate)) or 0
    )
    emails = await session.execute(
        select(Message.state, func.count())
        .where(
            # By campaign (and so the company): the index of the numbers leads with it.
            Message.campaign_id.in_(campaign_ids),
            Message.source_kind == MessageSource.TOUCHPOINT,
            Message.state.in_((MessageState.SENT, MessageState.UNCONFIRMED)),
        )
        .group_by(Message.state)
    )
    for state, count in emails:
        if state is MessageState.SENT:
            numbers.emails_sent = count
        else:
            numbers.emails_unconfirmed = count
    entered_before = exists().where(
        Enrolment.candidate_id == ReceivedEvent.candidate_id,
        Enrolment.company_id == company_id,
        Enrolment.entered_at <= ReceivedEvent.occurred_at,
    )
    events = await session.execute(
        select(
            ReceivedEvent.type,
            func.count(),
            func.count(func.distinct(ReceivedEvent.candidate_id)),
        )
        .where(
            ReceivedEvent.company_id == company_id,
            ReceivedEvent.type.in_(COUNTED_EVENTS),
            entered_before,
        )
        .group_by(ReceivedEvent.type)
    )
    for kind, count, hired in events:
        _add_events(numbers, kind, int(count), int(hired))
    return numbers
