"""Campaign numbers (one campaign's, and all campaigns' together) and a campaign's
schedule; admins of a company with the add-on only. Read from the store, never from the
workflows (store/numbers.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import time

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import CampaignAdminDep, SessionDep
from api.errors import answers
from api.schemas import (
    AllNumbersOut,
    CampaignNumbersOut,
    PathId,
    ScheduleEntryOut,
    ScheduleOut,
    TouchpointNumbersOut,
)
from store import campaigns as campaign_store
from store import numbers as store
from store.models import Campaign, CampaignStatus

# All campaigns' numbers are at /numbers: under /campaigns, every method of
# /campaigns/{campaign_id} would take "numbers" for a campaign id and refuse it (422).
router = APIRouter(tags=["numbers"], responses=answers(401, 403))


@router.get("/numbers", response_model=AllNumbersOut)
async def all_numbers(company: CampaignAdminDep, session: SessionDep) -> AllNumbersOut:
    """Every campaign of the company together: total candidates, e-mails sent (and
    unconfirmed), meetings scheduled, offers made, candidates hired."""
    async with session.begin():
        campaigns = (
            await session.scalars(select(Campaign.id).where(Campaign.company_id == company.id))
        ).all()
        numbers = await store.overall_numbers(session, company.id, campaigns)
    return AllNumbersOut(**asdict(numbers), campaigns=len(campaigns))


@router.get(
    "/campaigns/{campaign_id}/numbers",
    response_model=CampaignNumbersOut,
    responses=answers(404, 422),
)
async def campaign_numbers(
    campaign_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> CampaignNumbersOut:
    """One campaign's numbers, with a line for each touchpoint."""
    async with session.begin():
        campaign = await campaign_store.get_campaign(session, company.id, campaign_id)
        touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
        numbers = await store.campaign_numbers(
            session, company.id, campaign, [t.position for t in touchpoints]
        )
    return CampaignNumbersOut(
        campaign_id=campaign.id,
        status=campaign.status,
        total_candidates=numbers.total_candidates,
        emails_sent=numbers.emails_sent,
        emails_unconfirmed=numbers.emails_unconfirmed,
        meetings_scheduled=numbers.meetings_scheduled,
        offers_made=numbers.offers_made,
        candidates_hired=numbers.candidates_hired,
        entries=numbers.entries,
        active=numbers.active,
        paused=numbers.paused,
        completed=numbers.completed,
        exited=sum(numbers.exits.values()),
        exits=dict(sorted(numbers.exits.items())),
        emails_failed=numbers.emails_failed,
        opened=numbers.opened,
        machine_opened=numbers.machine_opened,
        open_rate=store.rate(numbers.opened, numbers.emails_sent),
        open_tracking=company.open_tracking,
        touchpoints=[
            TouchpointNumbersOut(
                number=line.position + 1,
                sent=line.sent,
                unconfirmed=line.unconfirmed,
                failed=line.failed,
                opened=line.opened,
                machine_opened=line.machine_opened,
                opens=line.opens,
                machine_opens=line.machine_opens,
                open_rate=store.rate(line.opened, line.sent),
            )
            for line in numbers.touchpoints
        ],
    )


@router.get(
    "/campaigns/{campaign_id}/schedule", response_model=ScheduleOut, responses=answers(404, 422)
)
async def campaign_schedule(
    campaign_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> ScheduleOut:
    """The campaign's agenda: each touchpoint with its day offset from entry and its send
    time in the company's time zone. A saved campaign's is fixed."""
    async with session.begin():
        campaign = await campaign_store.get_campaign(session, company.id, campaign_id)
        touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
    entries, offset = [], 0
    for t in touchpoints:
        offset += t.interval_days
        entries.append(
            ScheduleEntryOut(
                number=t.position + 1,
                day_offset=offset,
                send_time=time(t.send_hour, t.send_minute),
                interval_days=t.interval_days if t.position else None,
                subject=t.subject,
                format=t.format,
                sender_user_id=t.sender_user_id,
            )
        )
    return ScheduleOut(
        campaign_id=campaign.id,
        status=campaign.status,
        time_zone=company.time_zone,
        fixed=campaign.status is not CampaignStatus.DRAFT,
        touchpoints=entries,
    )
