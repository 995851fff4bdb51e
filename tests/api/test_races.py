"""Exits racing sends, and a request that died half-way: what an answer promises holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from email.message import Message as Email
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.testing import WorkflowEnvironment

from activities.nurture import NurtureActivities, _TouchpointSource
from config import Settings
from mail import links
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from orchestration import Workflows
from store.models import (
    Candidate,
    Enrolment,
    EnrolmentBatch,
    Message,
    MessageState,
    RecipientStatus,
)
from store.session import SessionFactory
from tests.builders import add_candidate, due_touchpoint, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from worker import activities_of, build_worker
from workflows.contracts import ExitReason, SendOutcome

RACERS = 200


class _SlowDot(Mailer):
    """Takes its time between the last check and the final dot, as a busy worker may: the
    window in which only the wait for sends in flight keeps an unsubscribe's promise. It
    calls `in_window` with the recipient there, so a test can race that very window."""

    in_window: Callable[[str], None] = staticmethod(lambda recipient: None)

    async def send(
        self,
        message: Email,
        sender: str,
        recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:
        async def slowly() -> None:
            await before_dot()
            self.in_window(recipient)
            await asyncio.sleep(0.1)

        await super().send(message, sender, recipient, slowly)


async def _settled(sessions: SessionFactory, seconds: float = 30.0) -> dict[MessageState, int]:
    """Wait until no message is on its way; answers how many ended in each state."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with sessions() as session:
            rows = await session.execute(
                select(Message.state, func.count()).group_by(Message.state)
            )
            states: dict[MessageState, int] = {state: n for state, n in rows}
            open_enrolments = await session.scalar(
                select(func.count()).where(
                    Enrolment.status == "active", Enrolment.next_position.is_not(None)
                )
            )
        on_the_way = states.get(MessageState.PREPARED, 0) + states.get(MessageState.SENDING, 0)
        if not on_the_way and not open_enrolments:
            return states
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still on their way after {seconds} s: {states}")
        await asyncio.sleep(0.05)


@pytest.mark.own_worker
async def test_no_e_mail_arrives_after_an_unsubscribe_answered_even_while_200_are_sent(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, inbox: tuple[Inbox, int], templates: TemplateSandbox,
) -> None:  # fmt: skip
    mail, _ = inbox
    # A slow peer and ten sends at a time: the dispatch lasts long enough for every
    # unsubscribe to meet a send before its last check, at it, or after its dot.
    mail.delay_seconds = 0.15
    tuned = settings.model_copy(update={"max_concurrent_activities": 10})
    mailer = _SlowDot(tuned)
    activities = activities_of(sessions, mailer, tuned, env.client, templates)
    async with build_worker(env.client, tuned, activities):
        await _race(env, api, tenant, settings, sessions, mail, mailer)


async def _race(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, settings: Settings,
    sessions: SessionFactory, mail: Inbox, mailer: _SlowDot,
) -> None:  # fmt: skip
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "Due together")])
    candidates = [
        await add_candidate(api, tenant, email=f"racer{n}@example.org") for n in range(RACERS)
    ]
    added = await api.post(
        f"/campaigns/{campaign}/recipients/bulk",
        json={"candidate_ids": candidates},
        headers=tenant.admin,
    )
    assert added.status_code == 202, added.text
    batch = added.json()["batch_id"]
    for _ in range(600):
        progress = await api.get(
            f"/campaigns/{campaign}/recipients/batches/{batch}", headers=tenant.admin
        )
        if progress.json()["finished_at"]:
            break
        await asyncio.sleep(0.05)
    secret = settings.signing_secret.get_secret_value()
    answered: dict[str, float] = {}
    gate = asyncio.Semaphore(20)

    async def unsubscribe(n: int, _: int) -> None:
        token = links.sign_unsubscribe(secret, tenant.company_id, candidates[n])
        async with gate:
            response = await api.post(f"/unsubscribe/{token}")
        assert response.status_code == 200, response.text
        address = f"racer{n}@example.org"
        answered[address] = min(answered.get(address, 1e12), asyncio.get_running_loop().time())

    # Every touchpoint falls due at once. Each send that passed its last check has its
    # candidate unsubscribe right then; the others are unsubscribed from the first arrival
    # on, backwards, so that they meet sends still to come (before or at their last check).
    racing: list[asyncio.Task[None]] = []
    mailer.in_window = lambda address: racing.append(
        asyncio.create_task(unsubscribe(int(address[5:].split("@")[0]), 0))
    )
    # (The test server's sleep ends only once the sends are done: it cannot skip time while
    # activities run.)
    sleeping = asyncio.create_task(env.sleep(timedelta(days=1)))
    await mail.wait_for(1, seconds=30)
    await asyncio.gather(*(unsubscribe(n, c) for n, c in reversed(list(enumerate(candidates)))))
    await sleeping
    await asyncio.gather(*racing)
    states = await _settled(sessions)
    late = [
        (rcpts[0], arrived - answered[rcpts[0]])
        for (_, rcpts), arrived in zip(mail.envelopes, mail.arrived, strict=True)
        if arrived > answered[rcpts[0]]
    ]
    assert late == []
    delivered = [rcpts[0] for _, rcpts in mail.envelopes]
    assert len(delivered) == len(set(delivered)) == states.get(MessageState.SENT, 0)
    # The rest were stopped by the store (at their first check, or at their last one).
    assert set(states) <= {MessageState.SENT, MessageState.WITHDRAWN}
    # The race took place: some went out before their unsubscribe, the others did not.
    assert 0 < len(delivered) < RACERS, states


async def test_a_bulk_add_whose_api_died_after_starting_its_batch_can_be_retried_at_once(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "Hello")])
    candidates = [await add_candidate(api, tenant, email=f"c{n}@example.org") for n in range(3)]
    start = Workflows.start_enrolment_batch
    orphans: list[str] = []

    async def start_then_die(self: Workflows, batch_id: int, key: str, **kwargs: Any) -> None:
        await start(self, batch_id, key, **kwargs)
        orphans.append(f"enrolment-batch/{key}")
        raise SystemExit("the API died before its commit")

    monkeypatch.setattr(Workflows, "start_enrolment_batch", start_then_die)
    body = {"candidate_ids": candidates}
    url = f"/campaigns/{campaign}/recipients/bulk"
    with pytest.raises(SystemExit):
        await api.post(url, json=body, headers=tenant.admin)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(EnrolmentBatch)) == 0
    monkeypatch.setattr(Workflows, "start_enrolment_batch", start)
    retried = await api.post(url, json=body, headers=tenant.admin)
    assert retried.status_code == 202, retried.text
    assert retried.json()["added"] == 3
    batch = retried.json()["batch_id"]
    for _ in range(600):
        progress = (await api.get(f"{url[:-5]}/batches/{batch}", headers=tenant.admin)).json()
        if progress["finished_at"]:
            break
        await asyncio.sleep(0.05)
    assert progress["started"] == 3
    # The orphan waits for a commit that never comes (its id may even name the retried
    # batch, on SQLite, but not its key): it ends on its own after its retries; here it is
    # ended now, since the test server's clock cannot move past it once no worker polls.
    [orphan] = orphans
    await env.client.get_workflow_handle(orphan).terminate("test finished")


async def _waiting_on_a_lock(sessions: SessionFactory) -> None:
    """Until a transaction of this database other than this one waits for a row lock
    (PostgreSQL: other runs' databases on the same server do not count). On
    SQLite, whose writers take turns on the whole file, a moment is left instead."""
    async with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            await asyncio.sleep(0.3)
            return
        for _ in range(500):
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
                    # (A row lock is waited for on its holder's transaction id, a lock
                    # of no database: the waiter's session tells whose it is.)
                    " AND pid IN (SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database())"
                )
            )
            await session.rollback()
            if waiting:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("nothing came to wait for a row lock")


async def test_an_unsubscribe_meeting_a_send_that_writes_its_message_row_both_go_through(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A send's first check locks the enrolment, then writes the message row, whose
    foreign key to the candidate takes a share of the candidate's row; the unsubscribe
    locks the candidate, then the enrolments. Here the unsubscribe comes in between."""
    call = await due_touchpoint(api, tenant, sessions)
    async with sessions() as session:
        candidate = await session.scalar(select(Enrolment.candidate_id))
    assert candidate is not None
    token = links.sign_unsubscribe(
        settings.signing_secret.get_secret_value(), tenant.company_id, candidate
    )
    unsubscribing: list[asyncio.Task[httpx.Response]] = []
    new_message = _TouchpointSource.new_message

    async def once_the_unsubscribe_waits(
        self: _TouchpointSource, session: AsyncSession
    ) -> dict[str, Any] | None:
        unsubscribing.append(asyncio.create_task(api.post(f"/unsubscribe/{token}")))
        await _waiting_on_a_lock(sessions)
        return await new_message(self, session)

    monkeypatch.setattr(_TouchpointSource, "new_message", once_the_unsubscribe_waits)
    sent = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    [unsubscribed] = await asyncio.gather(*unsubscribing)
    assert unsubscribed.status_code == 200, unsubscribed.text
    # Whichever of the send's last check and the unsubscribe came first, the answer holds.
    delivered = [rcpts for _, rcpts in inbox[0].envelopes]
    assert (sent.outcome, delivered) in (
        (SendOutcome.SENT, [["marie@example.org"]]),
        (SendOutcome.LEFT, []),
    ), sent
    async with sessions() as session:
        enrolment = await session.scalar(select(Enrolment))
        unsubscribed_at = await session.scalar(select(Candidate.unsubscribed_at))
    assert unsubscribed_at is not None
    # Its only touchpoint sent, the recipient had completed; else the unsubscribe ended it.
    assert enrolment is not None
    assert (enrolment.status, enrolment.exit_reason) == (
        (RecipientStatus.COMPLETED, None)
        if delivered
        else (RecipientStatus.EXITED, ExitReason.UNSUBSCRIBED.value)
    )
