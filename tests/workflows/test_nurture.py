"""Campaigns end to end: the API, the worker and a real SMTP peer, on the time-skipping
server, so months of a campaign pass in a second."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.message import Message as Email
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.enrolments import exit_enrolment
from store.models import Candidate, Enrolment, Message, MessageState, RecipientStatus
from store.session import SessionFactory
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from worker import activities_of, build_worker
from workflows.contracts import ExitReason, RecipientState, nurture_workflow_id
from workflows.nurture import LOCAL_SEND_RETRY, SEND_RETRY, NurtureWorkflow, attempts_within

PARIS = ZoneInfo("Europe/Paris")


async def sleep_until(env: WorkflowEnvironment, day: date, hour: int, minute: int = 0) -> None:
    """Skip the server's clock to this local time in Paris."""
    target = datetime(day.year, day.month, day.day, hour, minute, tzinfo=PARIS)
    now = await env.get_current_time()
    assert target > now, f"{target} is already past ({now})"
    await env.sleep(target - now)


async def next_day(env: WorkflowEnvironment, days: int = 1) -> date:
    now = await env.get_current_time()
    return now.astimezone(PARIS).date() + timedelta(days=days)


async def final_state(env: WorkflowEnvironment, campaign: int, candidate: int) -> RecipientState:
    """How the recipient's workflow ended (time skips until it does)."""
    handle = env.client.get_workflow_handle_for(
        NurtureWorkflow.run, nurture_workflow_id(campaign, candidate)
    )
    return await handle.result()


async def noon_tomorrow(env: WorkflowEnvironment) -> date:
    """Skip to 12:00 tomorrow in Paris: a recipient added now gets a 09:00 touchpoint the
    day after. Answers that day after."""
    today = await next_day(env)
    await sleep_until(env, today, 12)
    return today + timedelta(days=1)


def sent_at(message: EmailMessage) -> str:
    """The Date header in Paris time, as a person reads it."""
    return f"{parsedate_to_datetime(message['Date']).astimezone(PARIS):%Y-%m-%d %H:%M %z}"


def next_end_of_summer_time(after: date) -> date:
    """The next Sunday on which Paris moves its clocks back."""
    day = after
    while True:
        before = datetime(day.year, day.month, day.day, tzinfo=PARIS).utcoffset()
        following = day + timedelta(days=1)
        after_offset = datetime(
            following.year, following.month, following.day, tzinfo=PARIS
        ).utcoffset()
        if before is not None and after_offset is not None and after_offset < before:
            return day
        day = following


def one_two_three(tenant: Tenant, first_wait: int, second_wait: int) -> list[dict[str, object]]:
    """Touchpoints "One", "Two" and "Three" at 09:00, with these intervals between them."""
    return [
        touchpoint(tenant, "One"),
        touchpoint(tenant, "Two", interval_days=first_wait),
        touchpoint(tenant, "Three", interval_days=second_wait),
    ]


async def recipient(api: httpx.AsyncClient, tenant: Tenant, campaign: int) -> dict[str, object]:
    response = await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)
    assert response.status_code == 200, response.text
    item: dict[str, object] = response.json()["items"][0]
    return item


async def test_three_touchpoints_arrive_at_local_times_across_the_end_of_summer_time(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    change = next_end_of_summer_time(await next_day(env, 5))
    thursday = change - timedelta(days=3)
    await sleep_until(env, thursday, 12)
    campaign = await saved_campaign(
        api,
        tenant,
        [
            touchpoint(tenant, "Hello {{ first_name }}", send_time="09:00"),
            touchpoint(
                tenant,
                "Still thinking of you, {{ first_name }}",
                send_time="09:00",
                interval_days=3,
                format="branded",
            ),
            touchpoint(
                tenant, "Last news from {{ company_name }}", send_time="10:15", interval_days=1
            ),
        ],
    )
    candidate = await add_candidate(api, tenant, first_name="Marie", email="marie@example.org")
    await enrol(api, tenant, campaign, candidate)

    listed = await recipient(api, tenant, campaign)
    friday = thursday + timedelta(days=1)
    assert listed["status"] == "active"
    assert listed["next_touchpoint"] == 1
    assert listed["next_send_at_local"] == f"{friday}T09:00:00+02:00"
    assert listed["next_send_at"] == f"{friday}T07:00:00Z"

    await sleep_until(env, friday, 8, 59)
    assert mail.messages == []
    await sleep_until(env, friday, 9, 1)
    [first] = await mail.wait_for(1)
    assert first["Subject"] == "Hello Marie"
    assert sent_at(first) == f"{friday} 09:00 +0200"
    assert first.get_content_type() == "text/plain"
    assert "Hello Marie" in first.get_content()
    unsubscribe = first["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://nurture.test/unsubscribe/")
    assert "<mailto:unsubscribe@nurture.test?subject=unsubscribe%20" in unsubscribe
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    wire = mail.raw[0].split(b"\r\n\r\n", 1)[0]
    assert b"\r\nList-Unsubscribe: <https://nurture.test/unsubscribe/" in wire  # not =?utf-8?

    monday = change + timedelta(days=1)
    await sleep_until(env, monday, 8, 59)
    assert len(mail.messages) == 1
    await sleep_until(env, monday, 9, 1)
    second = (await mail.wait_for(2))[1]
    assert second["Subject"] == "Still thinking of you, Marie"
    assert sent_at(second) == f"{monday} 09:00 +0100"  # 73 hours after the first
    assert second.get_content_type() == "multipart/alternative"
    plain = second.get_body(("plain",))
    html = second.get_body(("html",))
    assert plain is not None and html is not None
    assert "Hello Marie" in plain.get_content()
    html_text = html.get_content()
    assert 'src="https://cdn.example/logo.png"' in html_text
    assert "#1f2937" in html_text  # the company's primary colour
    assert "/unsubscribe/" in html_text
    assert second["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    tuesday = monday + timedelta(days=1)
    await sleep_until(env, tuesday, 10, 14)
    assert len(mail.messages) == 2
    await sleep_until(env, tuesday, 10, 16)
    third = (await mail.wait_for(3))[2]
    assert third["Subject"] == "Last news from Acme"
    assert sent_at(third) == f"{tuesday} 10:15 +0100"

    state = await final_state(env, campaign, candidate)
    assert state.status == "completed"
    assert (await recipient(api, tenant, campaign))["status"] == "completed"
    assert len({m["Message-ID"] for m in mail.messages}) == 3


async def _event(
    api: httpx.AsyncClient, tenant: Tenant, event_id: str, type: str, candidate: int
) -> list[int]:
    response = await api.post(
        "/events",
        json={"id": event_id, "type": type, "candidate_id": candidate},
        headers=tenant.service,
    )
    assert response.status_code == 200, response.text
    ended: list[int] = response.json()["ended_campaigns"]
    return ended


async def test_a_candidate_who_applies_receives_nothing_more(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(
        api,
        tenant,
        [
            touchpoint(tenant, "First"),
            touchpoint(tenant, "Second", interval_days=2),
            touchpoint(tenant, "Third", interval_days=2),
        ],
        exit_options=["applied"],
    )
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, campaign, candidate)
    await sleep_until(env, await next_day(env), 12)
    await mail.wait_for(1)

    assert await _event(api, tenant, "ats-1", "applied", candidate) == [campaign]
    await env.sleep(timedelta(days=10))
    assert [m["Subject"] for m in mail.messages] == ["First"]
    state = await final_state(env, campaign, candidate)
    assert (state.status, state.exit_reason) == ("exited", "applied")
    listed = await recipient(api, tenant, campaign)
    assert (listed["status"], listed["exit_reason"]) == ("exited", "applied")
    assert listed["next_send_at"] is None


async def test_replied_and_connected_end_only_the_campaigns_whose_exit_options_say_so(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=3)]
    on_reply = await saved_campaign(api, tenant, plan, exit_options=["replied"])
    on_connect = await saved_campaign(api, tenant, plan, exit_options=["connected"])
    never = await saved_campaign(api, tenant, plan, exit_options=[])
    candidate = await add_candidate(api, tenant)
    for campaign in (on_reply, on_connect, never):
        await enrol(api, tenant, campaign, candidate)

    assert await _event(api, tenant, "gw-1", "replied", candidate) == [on_reply]
    assert await _event(api, tenant, "net-1", "connected", candidate) == [on_connect]
    assert await _event(api, tenant, "ats-9", "applied", candidate) == []
    await env.sleep(timedelta(days=6))
    await mail.wait_for(2)
    assert sorted(int(m["X-Nurture-Campaign"]) for m in mail.messages) == [never, never]

    for campaign, reason in ((on_reply, "replied"), (on_connect, "connected")):
        state = await final_state(env, campaign, candidate)
        assert (state.status, state.exit_reason) == ("exited", reason)
    still = await final_state(env, never, candidate)
    assert still.status == "completed"


async def test_a_repeated_event_changes_nothing_and_answers_as_the_first_did(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    campaign = await saved_campaign(
        api, tenant, [touchpoint(tenant, "One")], exit_options=["applied"]
    )
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, campaign, candidate)
    body = {"id": "ats-42", "type": "applied", "candidate_id": candidate}
    first = await api.post("/events", json=body, headers=tenant.service)
    again = await api.post("/events", json=body, headers=tenant.service)
    assert first.status_code == again.status_code == 200
    assert first.json()["ended_campaigns"] == again.json()["ended_campaigns"] == [campaign]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    other = await api.post("/events", json={**body, "type": "replied"}, headers=tenant.service)
    assert other.status_code == 422
    assert "already received" in other.json()["detail"]

    # Re-enrolled, then the backend retries the old event: the new run goes on.
    back = await api.post(
        f"/campaigns/{campaign}/recipients",
        json={"candidate_id": candidate, "re_enrol": True},
        headers=tenant.admin,
    )
    assert back.status_code == 201
    late = await api.post("/events", json=body, headers=tenant.service)
    assert late.status_code == 200 and late.json()["duplicate"] is True
    handle = env.client.get_workflow_handle_for(
        NurtureWorkflow.run, nurture_workflow_id(campaign, candidate)
    )
    assert (await handle.query(NurtureWorkflow.state)).status == "active"
    assert (await recipient(api, tenant, campaign))["status"] == "active"


async def test_pause_then_resume_shifts_the_remaining_touchpoints_by_the_pause(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(
        api,
        tenant,
        one_two_three(tenant, 2, 3),
    )
    candidate = await add_candidate(api, tenant)
    day1 = await noon_tomorrow(env)
    await enrol(api, tenant, campaign, candidate)
    await sleep_until(env, day1, 12)
    await mail.wait_for(1)

    paused = await api.post(
        f"/campaigns/{campaign}/recipients/{candidate}/pause", headers=tenant.admin
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused", paused.json()
    await sleep_until(env, day1 + timedelta(days=4), 12)  # "Two" was due on day 3
    assert len(mail.messages) == 1

    resumed = await api.post(
        f"/campaigns/{campaign}/recipients/{candidate}/resume", headers=tenant.admin
    )
    assert resumed.status_code == 200, resumed.text
    day7 = day1 + timedelta(days=6)  # day 3 + the 4 days of the pause
    assert resumed.json()["next_send_at_local"] == f"{day7}T09:00:00+01:00"
    assert resumed.json()["status"] == "active"
    await sleep_until(env, day7, 8, 59)
    assert len(mail.messages) == 1
    await env.sleep(timedelta(days=4))
    await mail.wait_for(3)
    assert [(m["Subject"], sent_at(m)[:16]) for m in mail.messages] == [
        ("One", f"{day1} 09:00"),
        ("Two", f"{day7} 09:00"),
        ("Three", f"{day7 + timedelta(days=3)} 09:00"),
    ]


async def test_a_removed_recipient_receives_nothing_even_when_a_send_is_due(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int], sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, campaign, candidate)
    removed = await api.delete(
        f"/campaigns/{campaign}/recipients/{candidate}", headers=tenant.admin
    )
    assert removed.status_code == 200, removed.text
    assert (removed.json()["status"], removed.json()["exit_reason"]) == ("exited", "removed")
    await env.sleep(timedelta(days=3))
    state = await final_state(env, campaign, candidate)
    assert (state.status, state.exit_reason) == ("exited", "removed")
    assert mail.messages == []
    async with sessions() as session:
        assert (await session.scalars(select(Message))).all() == []


class _FailingOnce(Mailer):
    """A real SMTP send, then a failure of the activity: on the first call only."""

    def __init__(self, settings: Settings, *, after_data: bool) -> None:
        super().__init__(settings)
        self.after_data = after_data
        self.calls = 0

    async def send(
        self, message: Email, sender: str, recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        self.calls += 1
        if self.calls == 1 and not self.after_data:
            raise ConnectionResetError("connection lost before DATA")
        await super().send(message, sender, recipient, before_dot)
        if self.calls == 1:
            raise ConnectionResetError("connection lost after the final '.'")


async def _run_with_failing_mailer(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox, *,
    after_data: bool,
) -> tuple[_FailingOnce, Message]:  # fmt: skip
    mailer = _FailingOnce(settings, after_data=after_data)
    activities = activities_of(sessions, mailer, settings, env.client, templates)
    async with build_worker(env.client, settings, activities):
        campaign = await saved_campaign(
            api,
            tenant,
            [touchpoint(tenant, "Only once"), touchpoint(tenant, "Next", interval_days=1)],
        )
        candidate = await add_candidate(api, tenant)
        day1 = await noon_tomorrow(env)
        await enrol(api, tenant, campaign, candidate)
        await sleep_until(env, day1, 9, 1)
        await env.sleep(timedelta(minutes=5))  # past the activity's retry
        await env.sleep(timedelta(days=1))
        await inbox[0].wait_for(2)
        await final_state(env, campaign, candidate)
    async with sessions() as session:
        message = await session.scalar(select(Message).where(Message.position == 0))
    assert message is not None
    return mailer, message


@pytest.mark.own_worker
async def test_an_smtp_send_that_succeeded_before_its_activity_failed_is_not_sent_again(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    mailer, message = await _run_with_failing_mailer(
        env, api, tenant, settings, sessions, inbox, templates, after_data=True
    )
    assert [m["Subject"] for m in inbox[0].messages] == ["Only once", "Next"]
    assert mailer.calls == 2  # the retry found the first mid-DATA and did not call SMTP
    assert (message.state, message.attempts) == (MessageState.UNCONFIRMED, 1)


@pytest.mark.own_worker
async def test_a_send_that_failed_before_data_is_retried_and_delivered_once(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    mailer, message = await _run_with_failing_mailer(
        env, api, tenant, settings, sessions, inbox, templates, after_data=False
    )
    assert [m["Subject"] for m in inbox[0].messages] == ["Only once", "Next"]
    assert mailer.calls == 3
    assert (message.state, message.attempts) == (MessageState.SENT, 2)
    assert inbox[0].messages[0]["Message-ID"] == message.message_id


@pytest.mark.own_worker
async def test_a_new_worker_continues_a_campaign_with_nothing_lost_or_sent_twice(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    mail, _ = inbox

    def new_worker(cached: int) -> Worker:
        tuned = settings.model_copy(update={"max_cached_workflows": cached})
        activities = activities_of(sessions, Mailer(tuned), tuned, env.client, templates)
        return build_worker(env.client, tuned, activities)

    # The first worker keeps no sticky cache: the Java test server does not hear a stopped
    # worker's sticky queue go away (a real server does), and would wait for it.
    async with new_worker(0):
        campaign = await saved_campaign(
            api,
            tenant,
            one_two_three(tenant, 1, 1),
        )
        candidate = await add_candidate(api, tenant)
        day1 = await noon_tomorrow(env)
        await enrol(api, tenant, campaign, candidate)
        await sleep_until(env, day1, 12)
        await mail.wait_for(1)
    # The first worker is gone while the workflow sleeps towards "Two"; the time-skipping
    # server cannot skip past a task no worker takes, so the next one starts before "Two".
    handle = env.client.get_workflow_handle(nurture_workflow_id(campaign, candidate))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert len(mail.messages) == 1

    async with new_worker(100):
        await sleep_until(env, day1 + timedelta(days=1), 12)
        await mail.wait_for(2)
        await env.sleep(timedelta(days=2))
        state = await final_state(env, campaign, candidate)
    assert state.status == "completed"
    assert [m["Subject"] for m in mail.messages] == ["One", "Two", "Three"]
    assert len({m["Message-ID"] for m in mail.messages}) == 3


async def test_line_breaks_in_names_and_fields_never_add_a_header(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(
        api,
        tenant,
        [touchpoint(tenant, "Hi {{ first_name }} {{ last_name }}, a {{ fields.role }} role")],
    )
    candidate = await add_candidate(
        api,
        tenant,
        first_name="Eve\r\nBcc: victim@example.org",
        last_name="=?UTF-8?Q?=0ABcc:_other@example.org?=",
        custom_fields={"role": "lead\nX-Injected: yes"},
        email="eve@example.org",
    )
    await enrol(api, tenant, campaign, candidate)
    await env.sleep(timedelta(days=2))
    [message] = await mail.wait_for(1)
    headers = mail.raw[0].split(b"\r\n\r\n", 1)[0]
    names = {line.split(b":", 1)[0].lower() for line in headers.split(b"\r\n") if line[:1].strip()}
    assert names == {
        b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
        b"list-unsubscribe-post", b"x-nurture-campaign", b"content-type",
        b"content-transfer-encoding", b"mime-version",
    }  # fmt: skip
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message["Subject"].startswith("Hi Eve Bcc: victim@example.org")
    assert mail.envelopes[0][1] == ["eve@example.org"]


async def test_the_store_stops_a_due_send_even_when_no_signal_arrived(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:  # fmt: skip
    """A lost or late signal delays nothing: the send re-reads the store before SMTP."""
    mail, _ = inbox
    plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=1)]
    campaign = await saved_campaign(api, tenant, plan)
    paused, removed = (
        await add_candidate(api, tenant, email="paused@example.org"),
        await add_candidate(api, tenant, email="removed@example.org"),
    )
    day1 = await noon_tomorrow(env)
    for candidate in (paused, removed):
        await enrol(api, tenant, campaign, candidate)
    # Change the store only, as if the API's signals had been lost.
    async with sessions() as session, session.begin():
        rows = (await session.scalars(select(Enrolment))).all()
        for row in rows:
            if row.candidate_id == paused:
                row.status, row.paused_at = RecipientStatus.PAUSED, await env.get_current_time()
            else:
                await exit_enrolment(session, row, ExitReason.REMOVED, await env.get_current_time())
    await sleep_until(env, day1, 12)
    assert (await final_state(env, campaign, removed)).exit_reason == "removed"
    assert mail.messages == []
    handle = env.client.get_workflow_handle_for(
        NurtureWorkflow.run, nurture_workflow_id(campaign, paused)
    )
    assert (await handle.query(NurtureWorkflow.state)).status == "paused"
    resumed = await api.post(
        f"/campaigns/{campaign}/recipients/{paused}/resume", headers=tenant.admin
    )
    assert resumed.status_code == 200
    assert resumed.json()["next_send_at_local"] == f"{day1 + timedelta(days=1)}T09:00:00+01:00"
    await env.sleep(timedelta(days=3))
    assert [m["Subject"] for m in mail.to("paused@example.org")] == ["One", "Two"]
    assert mail.to("removed@example.org") == []


class _RemovingMidSend(Mailer):
    """Before its SMTP exchange, an admin's removal commits (its signal still on the way)."""

    def __init__(self, settings: Settings, sessions: SessionFactory) -> None:
        super().__init__(settings)
        self.sessions = sessions

    async def send(
        self, message: Email, sender: str, recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        async with self.sessions() as session, session.begin():
            for row in (await session.scalars(select(Enrolment))).all():
                await exit_enrolment(session, row, ExitReason.REMOVED, row.entered_at)
        await super().send(message, sender, recipient, before_dot)


@pytest.mark.own_worker
async def test_a_recipient_removed_while_their_send_is_under_way_receives_nothing(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    activities = activities_of(
        sessions, _RemovingMidSend(settings, sessions), settings, env.client, templates
    )
    async with build_worker(env.client, settings, activities):
        campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
        candidate = await add_candidate(api, tenant)
        await enrol(api, tenant, campaign, candidate)
        await env.sleep(timedelta(days=2))
        state = await final_state(env, campaign, candidate)
    assert (state.status, state.exit_reason) == ("exited", "removed")
    assert inbox[0].messages == []
    async with sessions() as session:
        message = await session.scalar(select(Message))
    assert message is not None and message.state is MessageState.WITHDRAWN
    assert message.error == "withdrawn: the recipient left (removed)"


class _Unreachable(Mailer):
    async def send(
        self, message: Email, sender: str, recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        raise ConnectionRefusedError("the SMTP server does not answer")


@pytest.mark.own_worker
async def test_a_send_that_never_gets_through_is_recorded_failed_and_the_campaign_goes_on(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, templates: TemplateSandbox,
) -> None:  # fmt: skip
    activities = activities_of(sessions, _Unreachable(settings), settings, env.client, templates)
    async with build_worker(env.client, settings, activities):
        plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=5)]
        campaign = await saved_campaign(api, tenant, plan)
        candidate = await add_candidate(api, tenant)
        day1 = await noon_tomorrow(env)
        await enrol(api, tenant, campaign, candidate)
        await sleep_until(env, day1 + timedelta(days=2), 12)
        listed = await recipient(api, tenant, campaign)
        assert (listed["status"], listed["next_touchpoint"]) == ("active", 2)
        assert listed["next_send_at_local"] == f"{day1 + timedelta(days=5)}T09:00:00+01:00"
        async with sessions() as session:
            message = await session.scalar(select(Message).where(Message.position == 0))
        assert message is not None and message.state is MessageState.FAILED
        assert message.error is not None and "ConnectionRefusedError" in message.error
        assert message.attempts > 10


async def test_an_address_written_before_it_was_checked_fails_once_and_the_campaign_goes_on(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int], sessions: SessionFactory,
) -> None:  # fmt: skip
    mail, _ = inbox
    campaign = await saved_campaign(
        api, tenant, [touchpoint(tenant, "First"), touchpoint(tenant, "Second", interval_days=2)]
    )
    candidate = await add_candidate(api, tenant)
    async with sessions() as session, session.begin():
        # As an older version of the API stored it, before addresses had to be ASCII.
        row = await session.get_one(Candidate, candidate)
        row.email = "josé@exämple.org"
    await enrol(api, tenant, campaign, candidate)
    await env.sleep(timedelta(days=4))
    state = await final_state(env, campaign, candidate)
    assert state.status == "completed"
    async with sessions() as session:
        messages = (await session.scalars(select(Message).order_by(Message.position))).all()
    assert [(m.state, m.attempts) for m in messages] == [(MessageState.FAILED, 1)] * 2
    assert all("is not ASCII" in (m.error or "") for m in messages)
    assert mail.envelopes == []


async def test_a_body_past_a_limit_for_one_recipient_fails_that_send_and_the_campaign_goes_on(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant,
    inbox: tuple[Inbox, int], sessions: SessionFactory,
) -> None:  # fmt: skip
    """Saving checked the body with sample values; a recipient's own values can still take
    it past a limit: that send fails saying which, at once, and the next one goes out."""
    mail, _ = inbox
    loops = "{% for a in fields.role %}{% for b in fields.role %}{% endfor %}{% endfor %}Hi"
    campaign = await saved_campaign(
        api,
        tenant,
        [touchpoint(tenant, "First", body=loops), touchpoint(tenant, "Second", interval_days=2)],
    )
    at_limit = await add_candidate(
        api, tenant, email="limit@example.org", custom_fields={"role": "r" * 1_000}
    )
    older = await add_candidate(api, tenant, email="older@example.org")
    async with sessions() as session, session.begin():
        # As an older version of the API stored it, before field values were bounded.
        row = await session.get_one(Candidate, older)
        row.custom_fields = {"role": "r" * 30_000}
    for candidate in (at_limit, older):
        await enrol(api, tenant, campaign, candidate)
    await env.sleep(timedelta(days=4))
    for candidate in (at_limit, older):
        assert (await final_state(env, campaign, candidate)).status == "completed"
    assert [m["Subject"] for m in mail.to("limit@example.org")] == ["Second"]
    assert [m["Subject"] for m in mail.to("older@example.org")] == ["Second"]
    async with sessions() as session:
        rows = await session.scalars(select(Message).where(Message.position == 0))
        first = {m.candidate_id: m for m in rows}
    assert (first[at_limit].state, first[at_limit].attempts) == (MessageState.FAILED, 1)
    assert first[at_limit].error == (
        "render: the body loops more than 1,000 times (all its loops together)"
    )
    assert (first[older].state, first[older].attempts) == (MessageState.FAILED, 1)
    assert first[older].error == (
        "render: the body reads fields.role, whose value here is 30,000 characters long; "
        "the limit is 1,000"
    )


async def test_a_touchpoint_is_sent_inside_the_workflow_task_its_timer_wakes(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    """One workflow task per e-mail, not three: the send is a local activity, recorded as a
    marker, with no activity task of its own."""
    mail, _ = inbox
    plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=2)]
    campaign = await saved_campaign(api, tenant, plan)
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, campaign, candidate)
    await env.sleep(timedelta(days=4))
    assert (await final_state(env, campaign, candidate)).status == "completed"
    assert [m["Subject"] for m in mail.messages] == ["One", "Two"]
    handle = env.client.get_workflow_handle(nurture_workflow_id(campaign, candidate))
    events = (await handle.fetch_history()).events
    kinds = [EventType.Name(event.event_type) for event in events]
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in kinds
    markers = [
        event.marker_recorded_event_attributes.marker_name
        for event in events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers.count("core_local_activity") == 2
    # Started, then one task for each timer that fired (each sending its e-mail).
    assert kinds.count("EVENT_TYPE_WORKFLOW_TASK_COMPLETED") == 3


@pytest.mark.own_worker
async def test_sends_waiting_for_a_slot_wait_outside_their_workflow_task(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    """Twenty e-mails due at once, two sends at a time, a second each: the last would wait
    ten seconds for a slot, past the point (8 s) where a workflow task holding a send is
    renewed, and on a busy machine past its 10 s timeout. The worker takes no more tasks
    than it has send slots, so each task holds only its own send."""
    mail, _ = inbox
    mail.delay_seconds = 0.5
    tuned = settings.model_copy(update={"max_concurrent_activities": 2})
    activities = activities_of(sessions, Mailer(tuned), tuned, env.client, templates)
    async with build_worker(env.client, tuned, activities):
        campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "Due together")])
        candidates = [
            await add_candidate(api, tenant, email=f"slot{n}@example.org") for n in range(20)
        ]
        for candidate in candidates:
            await enrol(api, tenant, campaign, candidate)
        await env.sleep(timedelta(days=2))
        for candidate in candidates:
            assert (await final_state(env, campaign, candidate)).status == "completed"
    assert sorted(rcpts[0] for _, rcpts in mail.envelopes) == sorted(
        f"slot{n}@example.org" for n in range(20)
    )
    for candidate in candidates:
        handle = env.client.get_workflow_handle(nurture_workflow_id(campaign, candidate))
        kinds = [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events]
        # Started, then the task its timer woke, which sent: no renewed or expired task.
        assert kinds.count("EVENT_TYPE_WORKFLOW_TASK_COMPLETED") == 2, (candidate, kinds)
        assert "EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT" not in kinds, (candidate, kinds)


def test_a_local_send_gives_up_after_the_attempts_its_retry_policy_starts_in_a_day() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=4),
    )
    # Waits of 1, 2 and 4 s fit in 10 s; a fourth (4 s more) would not.
    assert attempts_within(policy, timedelta(seconds=10)) == 4
    assert attempts_within(policy, timedelta(seconds=11)) == 5
    assert LOCAL_SEND_RETRY.maximum_attempts == attempts_within(SEND_RETRY, timedelta(days=1))
