"""The one send path under a frozen or dead attempt: fenced, and never sent twice.

An attempt is called here as the worker would call it, and frozen at a chosen point of its
SMTP session (what SIGSTOP does to a worker); meanwhile its retry runs. Real SMTP peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.message import Message as Email

import httpx
import pytest
from sqlalchemy import select

from activities.nurture import NurtureActivities
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import DotRefusedError, Mailer
from store.models import Enrolment, Message, MessageState, RecipientStatus
from store.session import SessionFactory
from tests.builders import due_touchpoint
from tests.conftest import Inbox, Tenant
from workflows.contracts import SendOutcome


class _Frozen(Mailer):
    """Stops at `where` until released: `before_check` is after the whole content went to
    the peer and before the last check; `after_check` is after it, right before the dot.
    `die` makes it fail there instead, as a killed worker's session ends."""

    def __init__(self, settings: Settings, where: str, *, die: bool = False) -> None:
        super().__init__(settings)
        self.where, self.die = where, die
        self.frozen, self.released = asyncio.Event(), asyncio.Event()

    async def _stop(self, here: str) -> None:
        if here != self.where:
            return
        if self.die:
            raise ConnectionResetError("the worker died here")
        self.frozen.set()
        await self.released.wait()

    async def send(
        self,
        message: Email,
        sender: str,
        recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:
        async def frozen_around_the_check() -> None:
            await self._stop("before_check")
            await before_dot()
            await self._stop("after_check")

        await super().send(message, sender, recipient, frozen_around_the_check)


async def _message(sessions: SessionFactory) -> Message:
    async with sessions() as session:
        [message] = (await session.scalars(select(Message))).all()
    return message


async def test_a_zombie_resumed_after_its_retry_sent_finds_its_claim_gone_and_sends_nothing(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    call = await due_touchpoint(api, tenant, sessions)
    frozen = _Frozen(settings, "before_check")
    zombie = asyncio.create_task(
        NurtureActivities(sessions, frozen, settings, templates).send_touchpoint(call)
    )
    await asyncio.wait_for(frozen.frozen.wait(), 10)
    # The server gave up on the frozen attempt and retried it on a live worker.
    retry = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    assert retry.outcome is SendOutcome.SENT
    frozen.released.set()
    assert (await asyncio.wait_for(zombie, 10)).outcome is SendOutcome.ALREADY_SENT
    await asyncio.sleep(0.2)  # anything the zombie could still deliver would be here now
    assert len(inbox[0].messages) == 1
    message = await _message(sessions)
    assert (message.state, message.attempts, message.error) == (MessageState.SENT, 2, None)


async def test_a_zombie_frozen_right_before_the_dot_is_counted_unconfirmed_never_sent_twice(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    call = await due_touchpoint(api, tenant, sessions)
    frozen = _Frozen(settings, "after_check")
    zombie = asyncio.create_task(
        NurtureActivities(sessions, frozen, settings, templates).send_touchpoint(call)
    )
    await asyncio.wait_for(frozen.frozen.wait(), 10)
    # Only the dot is left: the retry cannot know whether it will come, so it sends nothing.
    retry = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    assert retry.outcome is SendOutcome.UNCONFIRMED
    assert inbox[0].messages == []
    frozen.released.set()
    await asyncio.wait_for(zombie, 10)
    assert len(inbox[0].messages) == 1  # the zombie's dot delivered it, once
    message = await _message(sessions)
    assert message.state is MessageState.UNCONFIRMED  # the zombie lost its claim to say more
    assert message.error is not None and "may have been delivered" in message.error


async def test_a_retry_after_an_attempt_died_before_the_dot_sends_exactly_once(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """It died with the whole content at the peer, before its last check: its session was
    dropped mid-DATA, so nothing was delivered, and the retry sends it."""
    call = await due_touchpoint(api, tenant, sessions)
    dying = _Frozen(settings, "before_check", die=True)
    with pytest.raises(ConnectionResetError):
        await NurtureActivities(sessions, dying, settings, templates).send_touchpoint(call)
    await asyncio.sleep(0.2)
    assert inbox[0].messages == []
    died = await _message(sessions)
    assert died.state is MessageState.PREPARED
    assert died.error == "ConnectionResetError: the worker died here"
    retry = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    assert retry.outcome is SendOutcome.SENT
    assert len(inbox[0].messages) == 1
    assert (await _message(sessions)).state is MessageState.SENT


async def test_a_dot_refused_for_now_is_sent_again_by_the_retry_once(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """A 4xx to the final dot is the peer saying it did not take the message."""
    call = await due_touchpoint(api, tenant, sessions)
    inbox[0].refuse_data_once_with = "451 4.3.0 try again later"
    activities = NurtureActivities(sessions, mailer, settings, templates)
    with pytest.raises(DotRefusedError):
        await activities.send_touchpoint(call)
    refused = await _message(sessions)
    assert (refused.state, refused.error) == (MessageState.PREPARED, "451 4.3.0 try again later")
    assert (await activities.send_touchpoint(call)).outcome is SendOutcome.SENT
    assert len(inbox[0].messages) == 1
    assert (await _message(sessions)).state is MessageState.SENT


async def test_a_send_given_up_before_any_attempt_wrote_its_message_is_recorded_failed(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """Every first check failed (the store was unreachable for a day, say), then the last
    retry was over: the recipient moves on, and the touchpoint is on record as failed."""
    call = await due_touchpoint(api, tenant, sessions)
    await NurtureActivities(sessions, mailer, settings, templates).record_send_failure(call)
    message = await _message(sessions)
    assert (message.state, message.position, message.attempts) == (MessageState.FAILED, 0, 0)
    assert message.error is not None
    assert message.error.startswith("gave up after the last retry; no attempt's first check")
    async with sessions() as session:
        enrolment = await session.get_one(Enrolment, call.enrolment_id)
    assert enrolment.status is RecipientStatus.COMPLETED  # its only touchpoint is behind it
    assert inbox[0].messages == []
