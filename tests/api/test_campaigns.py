"""Campaigns over HTTP: drafts, validation, tests, saving, and who may do what."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client

from api.app import create_app
from config import Settings
from mail.sandbox import TemplateSandbox
from store.models import Message, MessageSource, MessageState
from store.session import SessionFactory
from tests.builders import add_candidate, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant, make_tenant
from tests.snapshot import unchanged


def draft(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Passive engineers",
        "description": "Quarterly news",
        "exit_options": ["applied", "replied"],
        "touchpoints": [
            touchpoint(tenant, "Hello {{ first_name }}"),
            touchpoint(tenant, "News", interval_days=1, format="branded"),
            touchpoint(tenant, "Still there?", interval_days=100, send_time="10:30"),
        ],
    }
    body.update(changes)
    return body


async def test_a_draft_is_created_with_its_schedule(api: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)
    assert response.status_code == 201, response.text
    campaign = response.json()
    assert campaign["status"] == "draft"
    assert campaign["time_zone"] == "Europe/Paris"
    assert [(t["number"], t["day_offset"], t["send_time"]) for t in campaign["touchpoints"]] == [
        (1, 0, "09:00"),
        (2, 1, "09:00"),
        (3, 101, "10:30"),
    ]
    listed = await api.get("/campaigns", headers=tenant.admin)
    assert [(c["name"], c["touchpoints"]) for c in listed.json()] == [("Passive engineers", 3)]


async def test_saving_activates_and_freezes_the_plan(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    created = (await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)).json()
    cid = created["id"]
    edited = await api.patch(
        f"/campaigns/{cid}",
        json={"touchpoints": draft(tenant)["touchpoints"][:2]},
        headers=tenant.admin,
    )
    assert edited.status_code == 200 and len(edited.json()["touchpoints"]) == 2
    saved = await api.post(f"/campaigns/{cid}/save", headers=tenant.admin)
    assert saved.status_code == 200 and saved.json()["status"] == "active"

    async with unchanged(sessions):
        refused = await api.patch(
            f"/campaigns/{cid}",
            json={"touchpoints": draft(tenant)["touchpoints"]},
            headers=tenant.admin,
        )
        assert refused.status_code == 409
        assert "touchpoints and intervals can no longer be" in refused.json()["detail"]
        again = await api.post(f"/campaigns/{cid}/save", headers=tenant.admin)
        assert again.status_code == 409 and "already saved" in again.json()["detail"]
        options = await api.patch(
            f"/campaigns/{cid}", json={"exit_options": ["connected"]}, headers=tenant.admin
        )
        assert options.status_code == 409 and "exit options" in options.json()["detail"]

    renamed = await api.patch(
        f"/campaigns/{cid}",
        json={"name": "Renamed", "description": "New words"},
        headers=tenant.admin,
    )
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["description"]) == ("Renamed", "New words")
    assert len(renamed.json()["touchpoints"]) == 2


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"interval_days": 0}, "touchpoints.1.interval_days: input should be greater than or"),
        ({"interval_days": 101}, "less than or equal to 100"),
        ({"subject": "Hello\nBcc: x@example.org"}, "subject of touchpoint 2 contains a line break"),
        ({"subject": "Hi {{ nickname }}"}, "unknown variable 'nickname'"),
        ({"body": "Your {{ fields.salary }}"}, "unknown custom field 'fields.salary'"),
        ({"body": "Broken {{ first_name "}, "body of touchpoint 2 is not a valid template"),
        ({"send_time": "25:00"}, "'25:00' is not a real time of day"),
        ({"send_time": "9h"}, "'9h' is not a time of day"),
        ({"send_time": 32400}, "a time of day is a string HH:MM"),
        ({"subject": "Hi {{ first_name.nope }}"}, "subject of touchpoint 2 cannot be rendered"),
        ({"body": "{{ 1 / 0 }}"}, "body of touchpoint 2 cannot be rendered"),
        (
            {"sender_user_id": 999},
            "sender of touchpoint 2 (user 999) is not a user of this company",
        ),
        ({"format": "fancy"}, "touchpoints.1.format"),
        ({"body": "Hello\x00"}, "touchpoints.1: body contains a NUL character"),
    ],
)
async def test_an_invalid_touchpoint_is_refused_naming_what_is_wrong(
    api: httpx.AsyncClient,
    tenant: Tenant,
    sessions: SessionFactory,
    change: dict[str, Any],
    says: str,
) -> None:
    body = draft(tenant)
    body["touchpoints"][1].update(change)
    async with unchanged(sessions):
        response = await api.post("/campaigns", json=body, headers=tenant.admin)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]


async def test_the_first_touchpoint_has_no_interval(api: httpx.AsyncClient, tenant: Tenant) -> None:
    body = draft(tenant)
    body["touchpoints"][0]["interval_days"] = 3
    response = await api.post("/campaigns", json=body, headers=tenant.admin)
    assert response.status_code == 422
    assert "first touchpoint has no interval" in response.json()["detail"]


async def test_a_sender_from_another_company_is_refused(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    body = draft(tenant)
    body["touchpoints"][0]["sender_user_id"] = other_tenant.admin_id
    response = await api.post("/campaigns", json=body, headers=tenant.admin)
    assert response.status_code == 422
    assert "is not a user of this company" in response.json()["detail"]


async def test_only_admins_of_a_company_with_the_add_on_reach_campaigns(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    cid = (await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)).json()["id"]
    off = await make_tenant(sessions, "Initech", add_on=False)
    async with unchanged(sessions):
        anonymous = await api.get(f"/campaigns/{cid}")
        assert anonymous.status_code == 401 and "API key" in anonymous.json()["detail"]
        wrong_key = await api.get(f"/campaigns/{cid}", headers={"Authorization": "Bearer nope"})
        assert wrong_key.status_code == 401 and "not known" in wrong_key.json()["detail"]
        recruiter = await api.get(f"/campaigns/{cid}", headers=tenant.recruiter)
        assert recruiter.status_code == 403 and "Only company admins" in recruiter.json()["detail"]
        service = await api.post("/campaigns", json=draft(tenant), headers=tenant.service)
        assert service.status_code == 403
        add_on = await api.get("/campaigns", headers=off.admin)
        assert add_on.status_code == 403 and "add-on is off" in add_on.json()["detail"]
        other = await api.get(f"/campaigns/{cid}", headers=other_tenant.admin)
        assert (
            other.status_code == 404 and f"Campaign {cid} does not exist" in other.json()["detail"]
        )
        edit_other = await api.patch(
            f"/campaigns/{cid}", json={"name": "x"}, headers=other_tenant.admin
        )
        assert edit_other.status_code == 404
        missing = await api.get("/campaigns/9999", headers=tenant.admin)
        assert missing.status_code == 404
    assert (await api.get("/campaigns", headers=other_tenant.admin)).json() == []


async def test_testing_a_campaign_sends_every_touchpoint_at_once_marked_as_test(
    api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    cid = (await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)).json()["id"]
    response = await api.post(
        f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    assert [(s["touchpoint"], s["outcome"]) for s in response.json()["sends"]] == [
        (1, "sent"),
        (2, "sent"),
        (3, "sent"),
    ]
    messages = await mail.wait_for(3)
    assert sorted(m["Subject"] for m in messages) == [
        "[TEST] Hello Alex",
        "[TEST] News",
        "[TEST] Still there?",
    ]
    assert all(m["X-Nurture-Test"] == "yes" for m in messages)
    assert {r for _, rcpts in mail.envelopes for r in rcpts} == {"me@acme.example"}
    async with sessions() as session:
        rows = (await session.scalars(select(Message))).all()
    assert len(rows) == 3 and all(m.source_kind is MessageSource.TEST for m in rows)
    # Still a draft: testing changes nothing about the campaign.
    assert (await api.get(f"/campaigns/{cid}", headers=tenant.admin)).json()["status"] == "draft"


async def test_a_test_can_use_a_real_candidate_and_its_unsubscribe_link_unsubscribes_nobody(
    api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    mail, _ = inbox
    candidate = await add_candidate(api, tenant, first_name="Grace")
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi {{ first_name }}")])
    response = await api.post(
        f"/campaigns/{cid}/test",
        json={"recipients": ["me@acme.example"], "candidate_id": candidate},
        headers=tenant.admin,
    )
    assert response.status_code == 200
    [message] = await mail.wait_for(1)
    assert message["Subject"] == "[TEST] Hi Grace"
    url = message["List-Unsubscribe"].split(",")[0].strip("<> ")
    clicked = await api.post(url, content=b"List-Unsubscribe=One-Click")
    assert clicked.status_code == 200 and "test e-mail" in clicked.text
    got = await api.get(f"/candidates/{candidate}", headers=tenant.admin)
    assert got.json()["unsubscribed_at"] is None


async def test_a_test_needs_valid_recipients(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    cid = (await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)).json()["id"]
    async with unchanged(sessions):
        response = await api.post(
            f"/campaigns/{cid}/test", json={"recipients": ["not-an-address"]}, headers=tenant.admin
        )
    assert response.status_code == 422
    assert "recipients.0" in response.json()["detail"]


async def test_a_test_reaches_only_the_test_addresses_whatever_candidate_lends_its_values(
    api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    mail, _ = inbox
    consented = await add_candidate(api, tenant, first_name="Grace", email="grace@example.org")
    no_consent = await add_candidate(
        api, tenant, first_name="Hedy", email="hedy@example.org", consent=False
    )
    leaving = await add_candidate(api, tenant, first_name="Ada", email="ada@example.org")
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi {{ first_name }}")])
    unsubscribed = await api.post(
        "/events",
        json={"id": "u-1", "type": "unsubscribed", "candidate_id": leaving},
        headers=tenant.service,
    )
    assert unsubscribed.status_code == 200, unsubscribed.text
    tests = ["me@acme.example", "qa@acme.example"]
    for n, (candidate, name) in enumerate(
        [(consented, "Grace"), (no_consent, "Hedy"), (leaving, "Ada")], start=1
    ):
        response = await api.post(
            f"/campaigns/{cid}/test",
            json={"recipients": tests, "candidate_id": candidate},
            headers=tenant.admin,
        )
        assert response.status_code == 200, response.text
        assert [(s["to"], s["outcome"]) for s in response.json()["sends"]] == [
            ("me@acme.example", "sent"),
            ("qa@acme.example", "sent"),
        ]
        messages = await mail.wait_for(2 * n)
        assert [m["Subject"] for m in messages[-2:]] == [f"[TEST] Hi {name}"] * 2
    assert sorted(r for _, rcpts in mail.envelopes for r in rcpts) == sorted(tests * 3)


async def test_a_test_that_cannot_be_delivered_says_so_and_leaves_no_message_prepared(
    api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int], sessions: SessionFactory
) -> None:
    mail, _ = inbox
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi")])
    mail.refuse_with = "550 5.1.1 mailbox unavailable"
    response = await api.post(
        f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    [send] = response.json()["sends"]
    assert (send["to"], send["outcome"]) == ("me@acme.example", "failed")
    assert "550" in send["error"]
    async with sessions() as session:
        states = {m.state for m in (await session.scalars(select(Message))).all()}
    assert states == {MessageState.FAILED}


async def test_a_test_temporal_cannot_run_answers_503_and_leaves_no_message_prepared(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, inbox: tuple[Inbox, int],
    settings: Settings, templates: TemplateSandbox,
) -> None:  # fmt: skip
    cid = (await api.post("/campaigns", json=draft(tenant), headers=tenant.admin)).json()["id"]
    # A Temporal frontend that is down: nothing listens on port 1.
    down = await Client.connect("127.0.0.1:1", lazy=True)
    app = create_app(settings, temporal=down, sessions=sessions, templates=templates)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://nurture.test"
        ) as client,
    ):
        response = await client.post(
            f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
        )
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith("The test was not sent: Temporal did not answer")
    assert (
        "Nothing went out and its messages are recorded as failed; try again."
        in (response.json()["detail"])
    )
    async with sessions() as session:
        rows = (await session.scalars(select(Message))).all()
    assert len(rows) == 3 and {m.state for m in rows} == {MessageState.FAILED}
    assert inbox[0].messages == []


async def test_a_test_whose_relay_stays_down_is_recorded_failed_after_its_retries(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings
) -> None:
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi")])
    settings.smtp_port = 1  # nothing listens there: every attempt is refused
    response = await api.post(
        f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    [send] = response.json()["sends"]
    assert send["outcome"] == "failed"
    assert send["error"].startswith("gave up after the last retry; the last error was: SMTP")
    async with sessions() as session:
        [message] = (await session.scalars(select(Message))).all()
    assert (message.state, message.attempts) == (MessageState.FAILED, 3)
