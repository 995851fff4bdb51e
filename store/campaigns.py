"""Campaigns and their touchpoints: drafts, the checks of saving, and the frozen plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from mail.sandbox import TemplateSandbox
from store.messages import end_unfinished
from store.models import (
    Campaign,
    CampaignStatus,
    Company,
    Format,
    Message,
    MessageSource,
    MessageState,
    Touchpoint,
    User,
)
from store.session import locking
from workflows.contracts import NurturePlan, TouchpointPlan

MIN_INTERVAL, MAX_INTERVAL = 1, 100
# Saving checks each touchpoint's two templates (up to LIMITS.render_seconds each): the
# count bounds how long one request can keep the template processes busy.
MAX_TOUCHPOINTS = 20


@dataclass(frozen=True)
class TouchpointSpec:
    """One touchpoint as a client writes it; `interval_days` is the wait after the previous
    touchpoint (the first has none)."""

    subject: str
    body: str
    format: Format
    sender_user_id: int
    send_time: time
    interval_days: int | None = None


@dataclass(frozen=True)
class CheckedTouchpoints:
    """Touchpoints that meet every rule but one, as `check_touchpoints` made them: what
    writes them still checks their senders, in its own transaction."""

    specs: tuple[TouchpointSpec, ...]


async def check_touchpoints(
    company: Company, specs: Sequence[TouchpointSpec], templates: TemplateSandbox
) -> CheckedTouchpoints:
    """Every rule a touchpoint must meet before it can be saved, but its sender; raises
    naming the first that fails, with the touchpoint's number as an admin counts them (from
    1). Templates are checked in `templates`' processes, never on the caller's event loop,
    and take seconds: call this with no transaction open, so that no database connection
    waits on them."""
    if not specs:
        raise ValidationError("A campaign needs at least one touchpoint.")
    if len(specs) > MAX_TOUCHPOINTS:
        raise ValidationError(
            f"A campaign has at most {MAX_TOUCHPOINTS} touchpoints; this one has {len(specs)}."
        )
    for number, spec in enumerate(specs, start=1):
        where = f"touchpoint {number}"
        if number == 1 and spec.interval_days is not None:
            raise ValidationError(
                f"The first touchpoint has no interval: it goes out at its send time on the "
                f"first day that moment is ahead (remove interval_days from {where})."
            )
        interval = MIN_INTERVAL if spec.interval_days is None else spec.interval_days
        if number > 1 and not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValidationError(
                f"The interval before {where} is {spec.interval_days} days; "
                f"it must be a whole number of days from {MIN_INTERVAL} to {MAX_INTERVAL}."
            )
        await check_email(company, spec.subject, spec.body, where, templates)
    return CheckedTouchpoints(tuple(specs))


async def check_email(
    company: Company,
    subject: str,
    body: str,
    where: str,
    templates: TemplateSandbox,
    *,
    unsubscribe: bool = True,
) -> None:
    """An e-mail's subject and body, as any e-mail we send must have them (a touchpoint's,
    a stage action's); `unsubscribe=False` for one that carries no unsubscribe link.
    Checked in `templates`' processes: call it with no transaction open."""
    if "\r" in subject or "\n" in subject:
        raise ValidationError(f"The subject of {where} contains a line break.")
    if not subject.strip():
        raise ValidationError(f"The subject of {where} is empty.")
    custom = company.custom_fields
    await templates.check(subject, "subject", where, custom, unsubscribe=unsubscribe)
    await templates.check(body, "body", where, custom, unsubscribe=unsubscribe)


async def _check_senders(
    session: AsyncSession, company_id: int, touchpoints: CheckedTouchpoints
) -> None:
    senders = set(await session.scalars(select(User.id).where(User.company_id == company_id)))
    for number, spec in enumerate(touchpoints.specs, start=1):
        if spec.sender_user_id not in senders:
            raise ValidationError(
                f"The sender of touchpoint {number} (user {spec.sender_user_id}) is not a "
                "user of this company."
            )


def _rows(company_id: int, campaign_id: int, specs: Sequence[TouchpointSpec]) -> list[Touchpoint]:
    return [
        Touchpoint(
            company_id=company_id,
            campaign_id=campaign_id,
            position=position,
            interval_days=0
            if position == 0
            else (MIN_INTERVAL if spec.interval_days is None else spec.interval_days),
            send_hour=spec.send_time.hour,
            send_minute=spec.send_time.minute,
            sender_user_id=spec.sender_user_id,
            format=spec.format,
            subject=spec.subject,
            body=spec.body,
        )
        for position, spec in enumerate(specs)
    ]


async def create_campaign(
    session: AsyncSession,
    company: Company,
    *,
    name: str,
    description: str,
    exit_options: list[str],
    touchpoints: CheckedTouchpoints,
) -> Campaign:
    await _check_senders(session, company.id, touchpoints)
    campaign = Campaign(
        company_id=company.id, name=name, description=description, exit_options=exit_options
    )
    session.add(campaign)
    await session.flush()
    session.add_all(_rows(company.id, campaign.id, touchpoints.specs))
    await session.flush()
    return campaign


def _refuse_edit(campaign: Campaign, *, touchpoints: bool, exit_options: list[str] | None) -> None:
    if campaign.status is CampaignStatus.DRAFT:
        return
    if touchpoints:
        raise ConflictError(
            f"Campaign {campaign.id} is {campaign.status.value}: once saved, its "
            "touchpoints and intervals can no longer be added, removed or changed. "
            "Only its name and description can."
        )
    if exit_options is not None and sorted(exit_options) != sorted(campaign.exit_options):
        raise ConflictError(
            f"Campaign {campaign.id} is {campaign.status.value}: its exit options were "
            "fixed when it was saved. Only its name and description can change."
        )


async def check_edit(
    session: AsyncSession,
    company_id: int,
    campaign_id: int,
    *,
    touchpoints: bool,
    exit_options: list[str] | None,
) -> None:
    """`edit_campaign`'s 404 and 409, answered before new touchpoints are checked (which
    takes seconds); `edit_campaign` asks again, under its lock."""
    campaign = await get_campaign(session, company_id, campaign_id)
    _refuse_edit(campaign, touchpoints=touchpoints, exit_options=exit_options)


async def edit_campaign(
    session: AsyncSession,
    company: Company,
    campaign_id: int,
    *,
    name: str | None,
    description: str | None,
    exit_options: list[str] | None,
    touchpoints: CheckedTouchpoints | None,
) -> Campaign:
    campaign = await get_campaign(session, company.id, campaign_id, for_update=True)
    _refuse_edit(campaign, touchpoints=touchpoints is not None, exit_options=exit_options)
    if touchpoints is not None:
        await _check_senders(session, company.id, touchpoints)
        await session.execute(delete(Touchpoint).where(Touchpoint.campaign_id == campaign.id))
        session.add_all(_rows(company.id, campaign.id, touchpoints.specs))
    if name is not None:
        campaign.name = name
    if description is not None:
        campaign.description = description
    if exit_options is not None:
        campaign.exit_options = exit_options
    await session.flush()
    return campaign


def _refuse_saved(campaign: Campaign) -> None:
    if campaign.status is not CampaignStatus.DRAFT:
        raise ConflictError(f"Campaign {campaign.id} is already saved ({campaign.status.value}).")


async def draft_touchpoints(
    session: AsyncSession, company_id: int, campaign_id: int
) -> list[TouchpointSpec]:
    """What `save_campaign` needs checked first: the touchpoints of a draft (404, or 409
    once saved)."""
    campaign = await get_campaign(session, company_id, campaign_id)
    _refuse_saved(campaign)
    return [spec_of(t) for t in await list_touchpoints(session, campaign.id)]


async def touchpoints_as_checked(
    session: AsyncSession, campaign: Campaign, touchpoints: CheckedTouchpoints
) -> Sequence[Touchpoint]:
    """The campaign's touchpoints, if they are still those that were checked (an edit may
    have replaced them meanwhile: 409) and their senders are the company's users."""
    rows = await list_touchpoints(session, campaign.id)
    if tuple(spec_of(t) for t in rows) != touchpoints.specs:
        raise ConflictError(
            f"The touchpoints of campaign {campaign.id} changed while they were being "
            "checked; try again."
        )
    await _check_senders(session, campaign.company_id, touchpoints)
    return rows


async def save_campaign(
    session: AsyncSession,
    company: Company,
    campaign_id: int,
    now: datetime,
    touchpoints: CheckedTouchpoints,
) -> Campaign:
    """`touchpoints`: what `check_touchpoints` made of `draft_touchpoints`."""
    campaign = await get_campaign(session, company.id, campaign_id, for_update=True)
    _refuse_saved(campaign)  # by a save that ran while this one's templates were checked
    await touchpoints_as_checked(session, campaign, touchpoints)
    campaign.status = CampaignStatus.ACTIVE
    campaign.saved_at = now
    await session.flush()
    return campaign


def spec_of(touchpoint: Touchpoint) -> TouchpointSpec:
    return TouchpointSpec(
        subject=touchpoint.subject,
        body=touchpoint.body,
        format=touchpoint.format,
        sender_user_id=touchpoint.sender_user_id,
        send_time=time(touchpoint.send_hour, touchpoint.send_minute),
        interval_days=None if touchpoint.position == 0 else touchpoint.interval_days,
    )


async def get_campaign(
    session: AsyncSession, company_id: int, campaign_id: int, *, for_update: bool = False
) -> Campaign:
    query = select(Campaign).where(Campaign.company_id == company_id, Campaign.id == campaign_id)
    if for_update:
        # Locked, it reads what was committed last, even over a row this session has read.
        query = locking(query).execution_options(populate_existing=True)
    campaign = await session.scalar(query)
    if campaign is None:
        raise NotFoundError(f"Campaign {campaign_id} does not exist.")
    return campaign


async def list_campaigns(session: AsyncSession, company_id: int) -> Sequence[Campaign]:
    rows = await session.scalars(
        select(Campaign).where(Campaign.company_id == company_id).order_by(Campaign.id)
    )
    return rows.all()


async def list_touchpoints(session: AsyncSession, campaign_id: int) -> Sequence[Touchpoint]:
    rows = await session.scalars(
        select(Touchpoint)
        .where(Touchpoint.campaign_id == campaign_id)
        .order_by(Touchpoint.position)
    )
    return rows.all()


async def count_touchpoints(session: AsyncSession, campaign_ids: Sequence[int]) -> dict[int, int]:
    rows = await session.execute(
        select(Touchpoint.campaign_id, func.count())
        .where(Touchpoint.campaign_id.in_(campaign_ids))
        .group_by(Touchpoint.campaign_id)
    )
    return {campaign_id: count for campaign_id, count in rows}


def plan_of(company: Company, campaign: Campaign, touchpoints: Sequence[Touchpoint]) -> NurturePlan:
    """The schedule a workflow carries: positions, intervals, send times, zone; no text."""
    return NurturePlan(
        touchpoints=tuple(
            TouchpointPlan(
                position=t.position,
                interval_days=t.interval_days,
                send_hour=t.send_hour,
                send_minute=t.send_minute,
            )
            for t in touchpoints
        ),
        time_zone=company.time_zone,
        exit_options=tuple(sorted(campaign.exit_options)),
    )


async def test_messages(session: AsyncSession, message_ids: Sequence[int]) -> Sequence[Message]:
    """A test's messages as they ended, in the order they were written."""
    rows = await session.scalars(
        select(Message)
        .where(Message.id.in_(message_ids), Message.source_kind == MessageSource.TEST)
        .order_by(Message.id)
        .execution_options(populate_existing=True)
    )
    return rows.all()


async def abandon_test_messages(
    session: AsyncSession, message_ids: Sequence[int], reason: str
) -> bool:
    """A test whose workflow did not finish: no test message waits for something to move
    it (store.messages.end_unfinished; an attempt still running finds its claim gone and
    sends nothing). Answers whether any message went out, or may have."""
    # Taken from whatever attempt holds them, first: on SQLite this write takes the lock
    # before the reads below, so that an attempt in the worker either sees its claim gone
    # or has moved them on before they are read here.
    await session.execute(
        update(Message)
        .where(Message.id.in_(message_ids), Message.source_kind == MessageSource.TEST)
        .values(holder=None)
    )
    rows = await session.scalars(
        locking(
            select(Message).where(
                Message.id.in_(message_ids), Message.source_kind == MessageSource.TEST
            )
        ).execution_options(populate_existing=True)
    )
    went_out = False
    for message in rows:
        end_unfinished(message, reason)
        went_out = went_out or message.state in (MessageState.SENT, MessageState.UNCONFIRMED)
    return went_out
