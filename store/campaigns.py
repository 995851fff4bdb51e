"""Campaigns and their touchpoints: drafts, the checks of saving, and the frozen plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from activities.template_sandbox import TemplateSandbox
from errors import ConflictError, NotFoundError, ValidationError
from store.models import (
    Campaign,
    CampaignStatus,
    Company,
    Format,
    Message,
    MessageState,
    Touchpoint,
    User,
)
from workflows.contracts import NurturePlan, TouchpointPlan

MIN_INTERVAL, MAX_INTERVAL = 1, 100


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


async def check_touchpoints(
    session: AsyncSession,
    company: Company,
    specs: Sequence[TouchpointSpec],
    templates: TemplateSandbox,
) -> None:
    """Every rule a touchpoint must meet before it can be saved; raises naming the first
    that fails, with the touchpoint's number as an admin counts them (from 1). Templates
    are checked in `templates`' processes, never on the caller's event loop."""
    if not specs:
        raise ValidationError("A campaign needs at least one touchpoint.")
    senders = set(await session.scalars(select(User.id).where(User.company_id == company.id)))
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
        if "\r" in spec.subject or "\n" in spec.subject:
            raise ValidationError(f"The subject of {where} contains a line break.")
        if not spec.subject.strip():
            raise ValidationError(f"The subject of {where} is empty.")
        if spec.sender_user_id not in senders:
            raise ValidationError(
                f"The sender of {where} (user {spec.sender_user_id}) is not a user of this company."
            )
        await templates.check(spec.subject, "subject", where, company.custom_fields)
        await templates.check(spec.body, "body", where, company.custom_fields)


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
    touchpoints: Sequence[TouchpointSpec],
    templates: TemplateSandbox,
) -> Campaign:
    await check_touchpoints(session, company, touchpoints, templates)
    campaign = Campaign(
        company_id=company.id, name=name, description=description, exit_options=exit_options
    )
    session.add(campaign)
    await session.flush()
    session.add_all(_rows(company.id, campaign.id, touchpoints))
    await session.flush()
    return campaign


async def edit_campaign(
    session: AsyncSession,
    company: Company,
    campaign_id: int,
    *,
    name: str | None,
    description: str | None,
    exit_options: list[str] | None,
    touchpoints: Sequence[TouchpointSpec] | None,
    templates: TemplateSandbox,
) -> Campaign:
    campaign = await get_campaign(session, company.id, campaign_id, for_update=True)
    if campaign.status is not CampaignStatus.DRAFT:
        if touchpoints is not None:
            raise ConflictError(
                f"Campaign {campaign_id} is {campaign.status.value}: once saved, its "
                "touchpoints and intervals can no longer be added, removed or changed. "
                "Only its name and description can."
            )
        if exit_options is not None and sorted(exit_options) != sorted(campaign.exit_options):
            raise ConflictError(
                f"Campaign {campaign_id} is {campaign.status.value}: its exit options were "
                "fixed when it was saved. Only its name and description can change."
            )
    if touchpoints is not None:
        await check_touchpoints(session, company, touchpoints, templates)
        await session.execute(delete(Touchpoint).where(Touchpoint.campaign_id == campaign.id))
        session.add_all(_rows(company.id, campaign.id, touchpoints))
    if name is not None:
        campaign.name = name
    if description is not None:
        campaign.description = description
    if exit_options is not None:
        campaign.exit_options = exit_options
    await session.flush()
    return campaign


async def save_campaign(
    session: AsyncSession,
    company: Company,
    campaign_id: int,
    now: datetime,
    templates: TemplateSandbox,
) -> Campaign:
    campaign = await get_campaign(session, company.id, campaign_id, for_update=True)
    if campaign.status is not CampaignStatus.DRAFT:
        raise ConflictError(f"Campaign {campaign_id} is already saved ({campaign.status.value}).")
    touchpoints = await list_touchpoints(session, campaign.id)
    await check_touchpoints(session, company, [spec_of(t) for t in touchpoints], templates)
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
    campaign = await session.scalar(query.with_for_update() if for_update else query)
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
        .where(Message.id.in_(message_ids), Message.is_test)
        .order_by(Message.id)
        .execution_options(populate_existing=True)
    )
    return rows.all()


async def abandon_test_messages(
    session: AsyncSession, message_ids: Sequence[int], reason: str
) -> None:
    """A test whose workflow did not finish: what it did not reach is failed, not left
    `prepared` with nothing to move it."""
    await session.execute(
        update(Message)
        .where(
            Message.id.in_(message_ids),
            Message.is_test,
            Message.state == MessageState.PREPARED,
        )
        .values(state=MessageState.FAILED, error=reason)
    )
