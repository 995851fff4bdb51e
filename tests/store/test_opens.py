"""Which fetches of a pixel are a person's and which a machine's; the first of each kind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from store.companies import create_company
from store.models import Campaign, CampaignStatus, Message, MessageOpen, MessageSource, MessageState
from store.opens import DELIVERY_SECONDS, RecordedOpen, classify, record_open
from store.session import SessionFactory

SENT = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
LATER = SENT + timedelta(hours=2)
READER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"  # noqa: E501


@pytest.mark.parametrize(
    ("agent", "says"),
    [
        ("Mozilla/5.0", "Apple Mail Privacy Protection"),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
            "GoogleImageProxy)",
            "Google's image proxy",
        ),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "Yahoo"),
        ("Barracuda Sentinel (EE)", "Barracuda"),
        ("python-requests/2.32", "a script"),
        ("curl/8.5.0", "a script"),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", "robot"),
        ("", "no user agent"),
        (None, "no user agent"),
    ],
)
def test_proxies_scanners_and_scripts_are_machines_with_why(agent: str | None, says: str) -> None:
    verdict = classify(agent, LATER, SENT)
    assert verdict.machine and says in (verdict.why or "")


def test_a_fetch_within_seconds_of_delivery_is_a_machine_s_and_a_later_one_a_person_s() -> None:
    soon = classify(READER, SENT + timedelta(seconds=DELIVERY_SECONDS - 1), SENT)
    assert soon.machine and f"within {DELIVERY_SECONDS} s of delivery" in (soon.why or "")
    early = classify(READER, SENT, None)
    assert early.machine and "before the delivery was recorded" in (early.why or "")
    late = classify(READER, SENT + timedelta(seconds=DELIVERY_SECONDS), SENT)
    assert not late.machine and late.why is None
    assert classify(READER, LATER, SENT) == late


async def test_two_first_fetches_at_once_make_one_first_open(sessions: SessionFactory) -> None:
    async with sessions() as session, session.begin():
        company = await create_company(session, name="Acme", time_zone="Europe/Paris")
        company.open_tracking = True
        campaign = Campaign(company_id=company.id, name="C", status=CampaignStatus.ACTIVE)
        session.add(campaign)
        await session.flush()
        message = Message(
            company_id=company.id, idempotency_key="k", message_id="<k@n>",
            source_kind=MessageSource.TOUCHPOINT, source_id=campaign.id,
            campaign_id=campaign.id, position=0, state=MessageState.SENT, sent_at=SENT,
        )  # fmt: skip
        session.add(message)
    ids = (company.id, message.id)

    async def fetch() -> RecordedOpen | None:
        async with sessions() as session, session.begin():
            return await record_open(session, *ids, user_agent=READER, now=LATER)

    recorded = await asyncio.gather(fetch(), fetch(), fetch())
    assert sorted(r.first_of_kind for r in recorded if r) == [False, False, True]
    async with sessions() as session:
        rows = (await session.scalars(select(MessageOpen))).all()
    assert sorted((o.machine, o.first_of_kind) for o in rows) == [
        (False, False),
        (False, False),
        (False, True),
    ]
