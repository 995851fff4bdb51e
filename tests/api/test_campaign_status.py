"""A whole campaign paused, resumed and archived; what exits cancelled; the recipient's
timeline. Over HTTP, on the time-skipping server, with a real SMTP sink."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import Message as Email

import httpx
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from activities.nurture import NurtureActivities
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.models import Campaign, Enrolment, RecipientEvent
from store.session import SessionFactory
from tests.api.test_numbers import APPLE_PROXY, READER, _pixel
from tests.builders import add_candidate, due_touchpoint, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from tests.snapshot import unchanged
from tests.workflows.test_nurture import (
    final_state,
    noon_tomorrow,
    one_two_three,
    sent_at,
    sleep_until,
)
from workflows.contracts import SendOutcome, nurture_workflow_id
from workflows.nurture import NurtureWorkflow


async def test_a_paused_campaign_sends_nothing_and_its_resume_sends_what_fell_due_once(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(api, tenant, one_two_three(tenant, 3, 3))
    ada = await add_candidate(api, tenant, first_name="Ada", email="ada@example.org")
    day1 = await noon_tomorrow(env)
    await enrol(api, tenant, campaign, ada)
    await sleep_until(env, day1, 12)
    await mail.wait_for(1)

    paused = await api.post(f"/campaigns/{campaign}/pause", headers=tenant.admin)
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    again = await api.post(f"/campaigns/{campaign}/pause", headers=tenant.admin)
    assert again.json()["paused_at"] == paused.json()["paused_at"]
    listed = await api.get("/campaigns", headers=tenant.admin)
    assert [c["status"] for c in listed.json()] == ["paused"]

    # "Two" falls due on day 4, inside the 10 days of the pause: it waits.
    await sleep_until(env, day1 + timedelta(days=10), 12)
    assert len(mail.messages) == 1
    handle = env.client.get_workflow_handle_for(
        NurtureWorkflow.run, nurture_workflow_id(campaign, ada)
    )
    assert (await handle.query(NurtureWorkflow.state)).status == "paused"
    [row] = (await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)).json()[
        "items"
    ]
    assert row["held_since"] == paused.json()["paused_at"] and row["next_send_at"] is None

    resumed = await api.post(f"/campaigns/{campaign}/resume", headers=tenant.admin)
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["released"]) == ("active", 1)
    following = day1 + timedelta(days=11)
    [row] = (await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)).json()[
        "items"
    ]
    assert row["next_send_at_local"] == f"{following}T09:00:00+01:00"
    assert (await api.post(f"/campaigns/{campaign}/resume", headers=tenant.admin)).json()[
        "resumed_at"
    ] == resumed.json()["resumed_at"]

    await sleep_until(env, following, 8, 59)
    assert len(mail.messages) == 1  # no burst at the resume
    await env.sleep(timedelta(days=4))
    await mail.wait_for(3)
    assert [(m["Subject"], sent_at(m)[:16]) for m in mail.messages] == [
        ("One", f"{day1} 09:00"),
        ("Two", f"{following} 09:00"),
        ("Three", f"{following + timedelta(days=3)} 09:00"),
    ]
    assert (await final_state(env, campaign, ada)).status == "completed"


async def test_a_campaign_paused_before_anything_fell_due_keeps_its_schedule(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """A resume before the touchpoint is due moves nothing: only what fell due waits."""
    mail, _ = inbox
    campaign = await saved_campaign(api, tenant, one_two_three(tenant, 5, 1))
    ada = await add_candidate(api, tenant, email="ada@example.org")
    day1 = await noon_tomorrow(env)
    await enrol(api, tenant, campaign, ada)
    await sleep_until(env, day1, 12)
    await mail.wait_for(1)
    await api.post(f"/campaigns/{campaign}/pause", headers=tenant.admin)
    await sleep_until(env, day1 + timedelta(days=2), 12)
    resumed = await api.post(f"/campaigns/{campaign}/resume", headers=tenant.admin)
    assert resumed.json()["released"] == 0
    await sleep_until(env, day1 + timedelta(days=7), 12)
    await mail.wait_for(3)
    assert [sent_at(m)[:16] for m in mail.messages] == [
        f"{day1} 09:00",
        f"{day1 + timedelta(days=5)} 09:00",
        f"{day1 + timedelta(days=6)} 09:00",
    ]


async def test_archiving_exits_every_recipient_says_what_it_cancelled_and_refuses_adds(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int], sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(api, tenant, one_two_three(tenant, 3, 3))
    people = [
        await add_candidate(api, tenant, first_name=name, email=f"{name}@example.org")
        for name in ("ada", "bob", "cy")
    ]
    day1 = await noon_tomorrow(env)
    for candidate in people:
        await enrol(api, tenant, campaign, candidate)
    await sleep_until(env, day1, 12)
    await mail.wait_for(3)
    paused = await api.post(
        f"/campaigns/{campaign}/recipients/{people[1]}/pause", headers=tenant.admin
    )
    assert paused.status_code == 200
    removed = await api.delete(
        f"/campaigns/{campaign}/recipients/{people[2]}", headers=tenant.admin
    )
    assert removed.json()["cancelled_touchpoint"] == {
        "campaign_id": campaign,
        "candidate_id": people[2],
        "name": None,
        "touchpoint": 2,
        "due_at": removed.json()["cancelled_touchpoint"]["due_at"],
    }
    assert removed.json()["cancelled_touchpoint"]["due_at"].startswith(
        f"{day1 + timedelta(days=3)}T08:00:00"
    )

    archived = await api.post(f"/campaigns/{campaign}/archive", headers=tenant.admin)
    assert archived.status_code == 200, archived.text
    body = archived.json()
    assert body["status"] == "archived" and body["cancelled_total"] == 2
    assert [(c["candidate_id"], c["name"], c["touchpoint"]) for c in body["cancelled"]] == [
        (people[0], "ada Curie", 2),
        (people[1], "bob Curie", 2),
    ]
    assert body["cancelled"][0]["due_at"].startswith(f"{day1 + timedelta(days=3)}T08:00:00")
    assert (await api.post(f"/campaigns/{campaign}/archive", headers=tenant.admin)).json()[
        "archived_at"
    ] == body["archived_at"]
    page = await api.get(
        f"/campaigns/{campaign}/archive", params={"offset": 1}, headers=tenant.admin
    )
    assert [c["candidate_id"] for c in page.json()["cancelled"]] == [people[1]]

    for candidate in people[:2]:
        state = await final_state(env, campaign, candidate)
        assert (state.status, state.exit_reason) == ("exited", "archived")
    listed = (await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)).json()
    assert [(r["status"], r["exit_reason"]) for r in listed["items"]] == [
        ("exited", "archived"),
        ("exited", "archived"),
        ("exited", "removed"),
    ]
    newcomer = await add_candidate(api, tenant, email="new@example.org")
    async with unchanged(sessions):
        refused = await api.post(
            f"/campaigns/{campaign}/recipients", json={"candidate_id": newcomer},
            headers=tenant.admin,
        )  # fmt: skip
    assert refused.status_code == 409
    assert "archived" in refused.json()["detail"]
    for path in ("pause", "resume"):
        conflict = await api.post(f"/campaigns/{campaign}/{path}", headers=tenant.admin)
        assert conflict.status_code == 409 and "archived" in conflict.json()["detail"]
    await sleep_until(env, day1 + timedelta(days=8), 12)
    assert len(mail.messages) == 3


async def test_an_unsubscribe_event_answers_the_touchpoints_it_cancelled(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    second = await saved_campaign(api, tenant, one_two_three(tenant, 2, 2))
    ada = await add_candidate(api, tenant)
    await noon_tomorrow(env)
    for campaign in (first, second):
        await enrol(api, tenant, campaign, ada)
    event = {"id": "u-9", "type": "unsubscribed", "candidate_id": ada}
    answered = await api.post("/events", json=event, headers=tenant.service)
    assert answered.status_code == 200, answered.text
    cancelled = answered.json()["cancelled_touchpoints"]
    assert [(c["campaign_id"], c["touchpoint"]) for c in cancelled] == [(first, 1), (second, 1)]
    assert all(c["due_at"].endswith("T08:00:00Z") for c in cancelled)
    repeated = await api.post("/events", json=event, headers=tenant.service)
    assert repeated.json()["duplicate"] is True
    assert repeated.json()["cancelled_touchpoints"] == cancelled


async def test_the_timeline_says_what_happened_to_each_touchpoint_and_when(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(
        api, tenant, one_two_three(tenant, 3, 3), exit_options=["applied"]
    )
    ada = await add_candidate(api, tenant, email="ada@example.org")
    day1 = await noon_tomorrow(env)
    await enrol(api, tenant, campaign, ada)
    await sleep_until(env, day1, 12)
    [first] = await mail.wait_for(1)
    path = f"/campaigns/{campaign}/recipients/{ada}"
    assert (await api.post(f"{path}/pause", headers=tenant.admin)).status_code == 200
    await sleep_until(env, day1 + timedelta(days=1), 12)
    assert (await api.post(f"{path}/resume", headers=tenant.admin)).status_code == 200
    await sleep_until(env, day1 + timedelta(days=2), 10)
    applied = await api.post(
        "/events", json={"id": "a-1", "type": "applied", "candidate_id": ada},
        headers=tenant.service,
    )  # fmt: skip
    assert applied.json()["cancelled_touchpoints"][0]["touchpoint"] == 2

    timeline = await api.get(f"{path}/timeline", headers=tenant.admin)
    assert timeline.status_code == 200, timeline.text
    entries = timeline.json()["entries"]
    seen = [(e["kind"], e["touchpoint"], e["at_local"][:16]) for e in entries]
    assert seen == [
        ("entered", 1, f"{day1 - timedelta(days=1)}T12:00"),
        ("sent", 1, f"{day1}T09:00"),
        ("paused", None, f"{day1}T12:00"),
        ("resumed", 2, f"{day1 + timedelta(days=1)}T12:00"),
        ("exited", None, f"{day1 + timedelta(days=2)}T10:00"),
        ("skipped", 2, f"{day1 + timedelta(days=2)}T10:00"),
    ]
    sent = entries[1]
    assert sent["message_id"] == first["Message-ID"]
    assert entries[4]["why"] == "applied"
    assert entries[5]["why"] == "the recipient had left (applied)"
    # Resumed after a day of pause: "Two" (due day 4) moved a day later.
    assert entries[3]["due_at"].startswith(f"{day1 + timedelta(days=4)}T08:00:00")
    assert entries[5]["due_at"] == entries[3]["due_at"]
    assert timeline.json()["status"] == "exited"
    other = await api.get(f"/campaigns/{campaign}/recipients/424242/timeline", headers=tenant.admin)
    assert other.status_code == 404


async def test_the_timeline_shows_each_open_by_a_person_or_a_machine(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    assert (
        await api.patch("/company", json={"open_tracking": True}, headers=tenant.admin)
    ).status_code == 200
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One", format="branded")])
    ada = await add_candidate(api, tenant, email="ada@example.org")
    day1 = await noon_tomorrow(env)
    await enrol(api, tenant, campaign, ada)
    await sleep_until(env, day1, 12)
    [message] = await mail.wait_for(1)
    pixel = _pixel(message)
    for agent in (READER, APPLE_PROXY):
        assert (await api.get(pixel, headers={"User-Agent": agent})).status_code == 200
    timeline = await api.get(
        f"/campaigns/{campaign}/recipients/{ada}/timeline", headers=tenant.admin
    )
    entries = [(e["kind"], e["touchpoint"], e["why"]) for e in timeline.json()["entries"]]
    assert entries[1:4] == [
        ("sent", 1, "delivered to the mail server"),
        ("completed", None, "every touchpoint has been sent"),
        ("opened", 1, "by a person"),
    ]
    assert entries[4][:2] == ("opened", 1) and entries[4][2].startswith("by a machine: Apple")


async def test_a_send_that_fell_due_in_the_pause_and_comes_after_the_resume_waits(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    mailer: Mailer, templates: TemplateSandbox, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """Its workflow's task waited past the resume (a backlog, a worker down): the send
    does not go at once, in a burst, but at its send time after the resume."""
    mail, _ = inbox
    call = await due_touchpoint(api, tenant, sessions)  # due 2030-01-01 08:00 UTC
    resumed_at = datetime(2030, 1, 2, 10, tzinfo=UTC)  # 11:00 in Paris
    async with sessions() as session, session.begin():
        await session.execute(
            update(Campaign).values(
                paused_at=datetime(2029, 12, 30, tzinfo=UTC), resumed_at=resumed_at
            )
        )
    activities = NurtureActivities(sessions, mailer, settings, templates)
    result = await activities.send_touchpoint(call)
    assert result.outcome is SendOutcome.PAUSED
    assert result.campaign_resumed_at == resumed_at
    assert mail.messages == []
    async with sessions() as session:
        enrolment = await session.get_one(Enrolment, call.enrolment_id)
        kinds = list(
            await session.scalars(
                select(RecipientEvent.kind).where(RecipientEvent.enrolment_id == enrolment.id)
            )
        )
    # The next day at 09:00 in Paris: 11:00 had passed on the day of the resume.
    assert enrolment.next_send_at == datetime(2030, 1, 3, 8, tzinfo=UTC)
    assert kinds == ["entered", "held", "released"]
    # Sent at its new moment, it goes.
    released = dataclasses.replace(call, scheduled_at=datetime(2030, 1, 3, 8, tzinfo=UTC))
    assert (await activities.send_touchpoint(released)).outcome is SendOutcome.SENT


class _RemovingAfterTheCheck(Mailer):
    """Right before the final dot (the e-mail is `sending`), an admin removes the
    recipient: that e-mail is delivered, so the removal must not list it as cancelled."""

    def __init__(self, settings: Settings, api: httpx.AsyncClient, path: str, tenant: Tenant):
        super().__init__(settings)
        self.api, self.path, self.tenant = api, path, tenant
        self.removal: asyncio.Task[httpx.Response] | None = None

    async def send(
        self, message: Email, sender: str, recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        async def remove_after_the_check() -> None:
            await before_dot()
            removal = asyncio.create_task(self.api.delete(self.path, headers=self.tenant.admin))
            # The removal commits, then waits for this send to end before answering.
            while not removal.done() and not await self._removed():  # noqa: ASYNC110 (HTTP)
                await asyncio.sleep(0.01)
            self.removal = removal

        await super().send(message, sender, recipient, remove_after_the_check)

    async def _removed(self) -> bool:
        listed = await self.api.get(self.path.rsplit("/", 1)[0], headers=self.tenant.admin)
        return bool(listed.json()["items"][0]["status"] == "exited")


async def test_an_e_mail_already_with_the_mail_server_is_not_reported_as_cancelled(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    call = await due_touchpoint(api, tenant, sessions)
    async with sessions() as session:
        enrolment = await session.get_one(Enrolment, call.enrolment_id)
    path = f"/campaigns/{enrolment.campaign_id}/recipients/{enrolment.candidate_id}"
    mailer = _RemovingAfterTheCheck(settings, api, path, tenant)
    result = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    assert result.outcome is SendOutcome.SENT
    assert len(await mail.wait_for(1)) == 1
    assert mailer.removal is not None
    answer = (await mailer.removal).json()
    assert answer["status"] == "exited" and answer["cancelled_touchpoint"] is None
    timeline = (await api.get(f"{path}/timeline", headers=tenant.admin)).json()["entries"]
    # (The activity runs on this process's clock here, the API on the test server's.)
    assert sorted(e["kind"] for e in timeline) == ["entered", "exited", "sent"]
