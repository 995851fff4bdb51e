"""Writes of a campaign whose templates are checked with no transaction open: one that
another request overtook meanwhile ends as if the two had run one after the other, and
changes nothing when it cannot."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from errors import ConflictError
from mail.sandbox import TemplateSandbox
from store import campaigns as store
from store.companies import get_company
from store.models import CampaignStatus, Company, Format, Message, MessageSource, MessageState
from store.session import SessionFactory
from tests.conftest import Tenant
from tests.snapshot import unchanged

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def spec(tenant: Tenant, subject: str, interval_days: int | None = None) -> store.TouchpointSpec:
    return store.TouchpointSpec(
        subject=subject,
        body="Hello {{ first_name }}",
        format=Format.PLAIN,
        sender_user_id=tenant.admin_id,
        send_time=time(9, 0),
        interval_days=interval_days,
    )


async def company_of(sessions: SessionFactory, tenant: Tenant) -> Company:
    async with sessions() as session:
        return await get_company(session, tenant.company_id)


async def draft(
    sessions: SessionFactory, tenant: Tenant, company: Company, templates: TemplateSandbox
) -> int:
    specs = [spec(tenant, "First"), spec(tenant, "Second", interval_days=2)]
    checked = await store.check_touchpoints(company, specs, templates)
    async with sessions() as session, session.begin():
        campaign = await store.create_campaign(
            session, company, name="Passive engineers", description="", exit_options=[],
            touchpoints=checked,
        )  # fmt: skip
    return campaign.id


async def checked_for_save(
    sessions: SessionFactory, company: Company, campaign_id: int, templates: TemplateSandbox
) -> store.CheckedTouchpoints:
    """What a save does before its transaction: read the draft, then check it."""
    async with sessions() as session, session.begin():
        specs = await store.draft_touchpoints(session, company.id, campaign_id)
    return await store.check_touchpoints(company, specs, templates)


async def save(
    sessions: SessionFactory, company: Company, campaign_id: int, checked: store.CheckedTouchpoints
) -> None:
    async with sessions() as session, session.begin():
        await store.save_campaign(session, company, campaign_id, NOW, checked)


async def edit(
    sessions: SessionFactory,
    company: Company,
    campaign_id: int,
    *,
    name: str | None = None,
    touchpoints: store.CheckedTouchpoints | None = None,
) -> None:
    async with sessions() as session, session.begin():
        await store.edit_campaign(
            session, company, campaign_id, name=name, description=None, exit_options=None,
            touchpoints=touchpoints,
        )  # fmt: skip


async def status_of(sessions: SessionFactory, company: Company, campaign_id: int) -> str:
    async with sessions() as session:
        campaign = await store.get_campaign(session, company.id, campaign_id)
        return campaign.status.value


async def test_a_save_whose_touchpoints_an_edit_replaced_meanwhile_changes_nothing(
    tenant: Tenant, sessions: SessionFactory, templates: TemplateSandbox
) -> None:
    company = await company_of(sessions, tenant)
    cid = await draft(sessions, tenant, company, templates)
    checked = await checked_for_save(sessions, company, cid, templates)
    replaced = await store.check_touchpoints(company, [spec(tenant, "Other")], templates)
    await edit(sessions, company, cid, touchpoints=replaced)
    async with unchanged(sessions):
        with pytest.raises(ConflictError) as refused:
            await save(sessions, company, cid, checked)
    assert str(refused.value) == (
        f"The touchpoints of campaign {cid} changed while they were being checked; try again."
    )
    # Saved again, it saves what the edit wrote.
    checked = await checked_for_save(sessions, company, cid, templates)
    assert checked == replaced
    await save(sessions, company, cid, checked)
    assert await status_of(sessions, company, cid) == CampaignStatus.ACTIVE.value


async def test_a_save_that_another_save_overtook_answers_already_saved(
    tenant: Tenant, sessions: SessionFactory, templates: TemplateSandbox
) -> None:
    company = await company_of(sessions, tenant)
    cid = await draft(sessions, tenant, company, templates)
    late = await checked_for_save(sessions, company, cid, templates)
    await save(sessions, company, cid, await checked_for_save(sessions, company, cid, templates))
    async with unchanged(sessions):
        with pytest.raises(ConflictError, match=rf"^Campaign {cid} is already saved \(active\)\.$"):
            await save(sessions, company, cid, late)


async def test_an_edit_that_a_save_overtook_changes_nothing(
    tenant: Tenant, sessions: SessionFactory, templates: TemplateSandbox
) -> None:
    company = await company_of(sessions, tenant)
    cid = await draft(sessions, tenant, company, templates)
    async with sessions() as session, session.begin():
        await store.check_edit(session, company.id, cid, touchpoints=True, exit_options=None)
    replacing = await store.check_touchpoints(company, [spec(tenant, "Other")], templates)
    await save(sessions, company, cid, await checked_for_save(sessions, company, cid, templates))
    async with unchanged(sessions):
        with pytest.raises(ConflictError, match="once saved, its touchpoints and intervals"):
            await edit(sessions, company, cid, touchpoints=replacing)


async def test_a_save_goes_on_when_an_edit_meanwhile_changed_only_the_name(
    tenant: Tenant, sessions: SessionFactory, templates: TemplateSandbox
) -> None:
    company = await company_of(sessions, tenant)
    cid = await draft(sessions, tenant, company, templates)
    checked = await checked_for_save(sessions, company, cid, templates)
    await edit(sessions, company, cid, name="Renamed")
    await save(sessions, company, cid, checked)
    async with sessions() as session:
        campaign = await store.get_campaign(session, company.id, cid)
    assert (campaign.name, campaign.status) == ("Renamed", CampaignStatus.ACTIVE)


async def test_a_test_given_up_fails_what_it_did_not_reach_and_says_whether_any_went_out(
    sessions: SessionFactory, tenant: Tenant, templates: TemplateSandbox
) -> None:
    campaign_id = await draft(sessions, tenant, await company_of(sessions, tenant), templates)
    states = [MessageState.PREPARED, MessageState.SENDING, MessageState.SENT]
    async with sessions() as session, session.begin():
        rows = [
            Message(
                company_id=tenant.company_id,
                idempotency_key=f"test/x/{n}",
                message_id=f"<{n}@nurture.test>",
                source_kind=MessageSource.TEST,
                source_id=campaign_id,
                campaign_id=campaign_id,
                position=0,
                test_address="me@acme.example",
                state=state,
                error="ConnectionRefusedError: relay down" if n == 0 else None,
            )
            for n, state in enumerate(states)
        ]
        session.add_all(rows)
    ids = [m.id for m in rows]
    async with sessions() as session, session.begin():
        assert await store.abandon_test_messages(session, ids[:1], "not sent: x") is False
        assert await store.abandon_test_messages(session, ids, "not sent: x") is True
    async with sessions() as session:
        ended = [(m.state, m.error) for m in await store.test_messages(session, ids)]
    assert ended == [
        (
            MessageState.FAILED,
            "not sent: x; the last error was: ConnectionRefusedError: relay down",
        ),
        (
            MessageState.UNCONFIRMED,
            "not sent: x, after its content was handed to the peer: it may have been "
            "delivered, so it is not sent again",
        ),
        (MessageState.SENT, None),
    ]
