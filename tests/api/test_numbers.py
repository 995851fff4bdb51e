"""Campaign numbers, open tracking and the schedule over HTTP: a scripted history counted
by hand, per campaign, in the list and all together; forged pixels; tracking off; who may
see what."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from config import Settings
from mail import links
from store.models import Message, MessageOpen, MessageSource, MessageState
from store.session import SessionFactory
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from tests.snapshot import unchanged

READER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
APPLE_PROXY = "Mozilla/5.0"
GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
_PIXEL = re.compile(r'<img src="https://nurture\.test(/opens/[^"]+)"')


def _html(message: EmailMessage) -> str | None:
    part = message.get_body(("html",))
    return None if part is None else str(part.get_content())


def _pixel(message: EmailMessage) -> str:
    html = _html(message)
    assert html is not None, "a branded e-mail has an HTML part"
    [path] = _PIXEL.findall(html)
    return str(path)


async def _track_opens(api: httpx.AsyncClient, tenant: Tenant, on: bool) -> None:
    answer = await api.patch("/company", json={"open_tracking": on}, headers=tenant.admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["open_tracking"] is on


async def _event(
    api: httpx.AsyncClient, tenant: Tenant, kind: str, candidate: int, at: datetime
) -> dict[str, Any]:
    answer = await api.post(
        "/events",
        json={
            "id": f"{kind}-{candidate}-{at.timestamp()}",
            "type": kind,
            "candidate_id": candidate,
            "occurred_at": at.isoformat(),
        },
        headers=tenant.service,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _open(api: httpx.AsyncClient, path: str, agent: str) -> None:
    # No key: images in e-mails are fetched by anyone who reads them.
    answer = await api.get(path, headers={"User-Agent": agent})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/gif"
    assert answer.content.startswith(b"GIF89a") and "no-store" in answer.headers["cache-control"]


async def _numbers(api: httpx.AsyncClient, tenant: Tenant, campaign: int) -> dict[str, Any]:
    answer = await api.get(f"/campaigns/{campaign}/numbers", headers=tenant.admin)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_numbers_after_a_scripted_history_are_the_ones_counted_by_hand(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
    sessions: SessionFactory, settings: Settings,
) -> None:  # fmt: skip
    mail, _ = inbox
    await _track_opens(api, tenant, True)
    branded = [
        touchpoint(tenant, "One", format="branded"),
        touchpoint(tenant, "Two", format="branded", interval_days=3),
    ]
    first = await saved_campaign(api, tenant, branded, exit_options=["applied"])
    second = await saved_campaign(api, tenant, [touchpoint(tenant, "Plain")])
    # First, while no recipient waits: the test's workflow is awaited, and the test server
    # skips time while it waits.
    test = await api.post(
        f"/campaigns/{first}/test", json={"recipients": ["qa@example.org"]}, headers=tenant.admin
    )
    assert test.status_code == 200, test.text
    tested = await mail.wait_for(2)
    assert all("/opens/" not in m.as_string() for m in tested), "a test carries no pixel"
    c1, c2, c3, c4, c5, c6, c7 = [
        await add_candidate(api, tenant, first_name=f"C{n}", email=f"c{n}@example.org")
        for n in range(1, 8)
    ]
    # Before c4 entered: not one of the campaign's meetings.
    await _event(
        api, tenant, "meeting_scheduled", c4, await env.get_current_time() - timedelta(days=1)
    )
    for candidate in (c1, c2, c3, c4, c5):
        await enrol(api, tenant, first, candidate)
    for candidate in (c1, c6):
        await enrol(api, tenant, second, candidate)
    await env.sleep(timedelta(days=1, hours=1))
    await mail.wait_for(9)
    # An hour on: an open now is no scanner's fetch on delivery.
    await env.sleep(timedelta(hours=1))

    mine = {n: mail.to(f"c{n}@example.org") for n in range(1, 7)}
    assert [m["Subject"] for m in mine[1]] == ["One", "Plain"] or [
        m["Subject"] for m in mine[1]
    ] == ["Plain", "One"]
    pixels = {n: _pixel(mine[n][0]) for n in range(2, 6)}
    pixels[1] = _pixel(next(m for m in mine[1] if m["Subject"] == "One"))
    # Plain-text e-mails have no HTML part, so no pixel.
    plain = [m for n in (1, 6) for m in mine[n] if m["Subject"] == "Plain"]
    assert len(plain) == 2 and all(_html(m) is None for m in plain)
    assert all("/opens/" not in m.as_string() for m in plain)
    assert len(set(pixels.values())) == 5, "one pixel per message"

    await _open(api, pixels[1], READER)
    await _open(api, pixels[1], READER)
    await _open(api, pixels[2], APPLE_PROXY)
    await _open(api, pixels[2], GOOGLE_PROXY)

    # Forged pixels: another message's id under c3's signature, an altered signature, a
    # token signed with another secret, an unsubscribe token. Each gets the GIF, and
    # counts nothing.
    token = pixels[3].rsplit("/", 1)[1]
    company, message, signature = token.split(".")
    other_message = pixels[4].rsplit("/", 1)[1].split(".")[1]
    altered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forged = [
        f"{company}.{other_message}.{signature}",
        f"{company}.{message}.{altered}",
        links.sign_open("not-our-secret", tenant.company_id, int(message)),
        links.sign_unsubscribe(settings.signing_secret.get_secret_value(), int(company), c3),
        "garbage",
    ]
    async with unchanged(sessions):
        for bad in forged:
            await _open(api, f"/opens/{bad}", READER)
        # Signed by us for a message that is not there: 404, nothing counted.
        gone = links.sign_open(settings.signing_secret.get_secret_value(), int(company), 999_999)
        assert (await api.get(f"/opens/{gone}", headers={"User-Agent": READER})).status_code == 404

    now = await env.get_current_time()
    left = await _event(api, tenant, "applied", c3, now)
    assert left["ended_campaigns"] == [first]
    for kind, candidate in (
        ("meeting_scheduled", c1),
        ("offer_made", c2),
        ("hired", c1),
        ("hired", c6),
        ("hired", c7),  # in no campaign
    ):
        ended = await _event(api, tenant, kind, candidate, now)
        assert ended["ended_campaigns"] == [], "a meeting, an offer or a hire ends nothing"

    # c5's e-mail ends as the send path leaves one whose peer's reply never came.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Message)
            .where(Message.campaign_id == first, Message.candidate_id == c5)
            .values(state=MessageState.UNCONFIRMED, sent_at=None)
        )
        tests = await session.scalars(
            select(Message).where(Message.source_kind == MessageSource.TEST)
        )
        assert len(tests.all()) == 2
        opens = (await session.scalars(select(MessageOpen).order_by(MessageOpen.id))).all()
    assert [(o.machine, o.first_of_kind, o.user_agent) for o in opens] == [
        (False, True, READER),
        (False, False, READER),
        (True, True, APPLE_PROXY),
        (True, False, GOOGLE_PROXY),
    ]
    assert opens[0].why is None and "Apple Mail Privacy Protection" in (opens[2].why or "")
    assert "Google" in (opens[3].why or "")

    numbers = await _numbers(api, tenant, first)
    assert numbers == {
        "campaign_id": first,
        "status": "active",
        "total_candidates": 5,
        "emails_sent": 4,
        "emails_unconfirmed": 1,
        "meetings_scheduled": 1,
        "offers_made": 1,
        "candidates_hired": 1,
        "entries": 5,
        "active": 4,
        "paused": 0,
        "completed": 0,
        "exited": 1,
        "exits": {"applied": 1},
        "emails_failed": 0,
        "opened": 1,
        "machine_opened": 1,
        "open_rate": 0.25,
        "open_tracking": True,
        "touchpoints": [
            {
                "number": 1, "sent": 4, "unconfirmed": 1, "failed": 0, "opened": 1,
                "machine_opened": 1, "opens": 2, "machine_opens": 2, "open_rate": 0.25,
            },
            {
                "number": 2, "sent": 0, "unconfirmed": 0, "failed": 0, "opened": 0,
                "machine_opened": 0, "opens": 0, "machine_opens": 0, "open_rate": None,
            },
        ],
    }  # fmt: skip
    listed = await api.get("/campaigns", headers=tenant.admin)
    assert listed.status_code == 200, listed.text
    assert {c["id"]: (c["status"], c["numbers"]) for c in listed.json()} == {
        first: (
            "active",
            {
                "total_candidates": 5, "emails_sent": 4, "emails_unconfirmed": 1,
                "meetings_scheduled": 1, "offers_made": 1, "candidates_hired": 1,
            },
        ),
        second: (
            "active",
            {
                "total_candidates": 2, "emails_sent": 2, "emails_unconfirmed": 0,
                "meetings_scheduled": 1, "offers_made": 0, "candidates_hired": 2,
            },
        ),
    }  # fmt: skip
    overall = await api.get("/numbers", headers=tenant.admin)
    assert overall.status_code == 200, overall.text
    # c1 is in both campaigns: one candidate, one meeting, one hire.
    assert overall.json() == {
        "campaigns": 2,
        "total_candidates": 6,
        "emails_sent": 6,
        "emails_unconfirmed": 1,
        "meetings_scheduled": 1,
        "offers_made": 1,
        "candidates_hired": 2,
    }


async def test_with_tracking_off_no_pixel_goes_out_and_no_fetch_counts(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    company = await api.get("/company", headers=tenant.recruiter)
    assert company.status_code == 200 and company.json()["open_tracking"] is False
    plan = [
        touchpoint(tenant, "One", format="branded"),
        touchpoint(tenant, "Two", format="branded", interval_days=2),
    ]
    campaign = await saved_campaign(api, tenant, plan)
    await enrol(api, tenant, campaign, await add_candidate(api, tenant))
    await env.sleep(timedelta(days=1, hours=1))
    [off] = await mail.wait_for(1)
    assert _html(off) is not None and "/opens/" not in off.as_string()

    await _track_opens(api, tenant, True)
    await env.sleep(timedelta(days=2))
    [_, on] = await mail.wait_for(2)
    pixel = _pixel(on)
    # Turned off again: the pixel already sent counts nothing any more.
    await _track_opens(api, tenant, False)
    async with unchanged(sessions):
        await _open(api, pixel, READER)
    numbers = await _numbers(api, tenant, campaign)
    assert (numbers["emails_sent"], numbers["opened"], numbers["open_rate"]) == (2, 0, 0.0)
    assert numbers["open_tracking"] is False


async def test_a_reader_s_reloads_record_a_bounded_number_of_opens(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    await _track_opens(api, tenant, True)
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One", format="branded")])
    await enrol(api, tenant, campaign, await add_candidate(api, tenant))
    await env.sleep(timedelta(days=1, hours=1))
    [message] = await mail.wait_for(1)
    pixel = _pixel(message)
    # Fetched at once: a scanner's, sooner than anyone reads.
    for _ in range(25):
        await _open(api, pixel, READER)
    async with sessions() as session:
        opens = (await session.scalars(select(MessageOpen))).all()
    assert len(opens) == 20
    [line] = (await _numbers(api, tenant, campaign))["touchpoints"]
    assert (line["opens"] + line["machine_opens"], line["opened"] + line["machine_opened"]) == (
        20,
        1,
    )


async def test_the_schedule_shows_each_touchpoint_s_day_and_send_time(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    plan = [
        touchpoint(tenant, "One", send_time="09:00"),
        touchpoint(tenant, "Two", send_time="14:30", interval_days=3, format="branded"),
        touchpoint(tenant, "Three", send_time="08:15", interval_days=10),
    ]
    draft = await api.post(
        "/campaigns", json={"name": "D", "touchpoints": plan}, headers=tenant.admin
    )
    assert draft.status_code == 201, draft.text
    schedule = await api.get(f"/campaigns/{draft.json()['id']}/schedule", headers=tenant.admin)
    assert schedule.status_code == 200, schedule.text
    assert schedule.json()["fixed"] is False
    saved = await saved_campaign(api, tenant, plan)
    schedule = await api.get(f"/campaigns/{saved}/schedule", headers=tenant.admin)
    body = schedule.json()
    assert (body["campaign_id"], body["status"], body["time_zone"], body["fixed"]) == (
        saved, "active", "Europe/Paris", True,
    )  # fmt: skip
    assert [
        (t["number"], t["day_offset"], t["send_time"], t["interval_days"], t["format"])
        for t in body["touchpoints"]
    ] == [
        (1, 0, "09:00", None, "plain"),
        (2, 3, "14:30", 3, "branded"),
        (3, 13, "08:15", 10, "plain"),
    ]


async def test_numbers_schedule_and_settings_stay_within_their_company_and_role(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    async with unchanged(sessions):
        for path in (f"/campaigns/{campaign}/numbers", f"/campaigns/{campaign}/schedule"):
            assert (await api.get(path)).status_code == 401
            assert (await api.get(path, headers=tenant.recruiter)).status_code == 403
            assert (await api.get(path, headers=other_tenant.admin)).status_code == 404
            missing = path.replace(str(campaign), "424242")
            assert (await api.get(missing, headers=tenant.admin)).status_code == 404
            invalid = path.replace(str(campaign), "0")
            assert (await api.get(invalid, headers=tenant.admin)).status_code == 422
        assert (await api.get("/numbers", headers=tenant.recruiter)).status_code == 403
        other = await api.get("/numbers", headers=other_tenant.admin)
        assert other.json()["campaigns"] == 0 and other.json()["total_candidates"] == 0
        recruiter = await api.patch(
            "/company", json={"open_tracking": True}, headers=tenant.recruiter
        )
        assert recruiter.status_code == 403 and "admins" in recruiter.json()["detail"]
        assert (await api.get("/company", headers=tenant.service)).status_code == 403
        bad = await api.patch("/company", json={"open_tracking": "yes"}, headers=tenant.admin)
        assert bad.status_code == 422
    mine = await api.get("/company", headers=tenant.admin)
    theirs = await api.get("/company", headers=other_tenant.admin)
    assert (mine.json()["name"], theirs.json()["name"]) == ("Acme", "Globex")
