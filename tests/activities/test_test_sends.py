"""A campaign test's messages under retries and late attempts: none is sent twice, none
is left in a state that nothing will move."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.message import Message as Email

import httpx
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from activities.nurture import NurtureActivities
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.models import Message, MessageSource, MessageState
from store.session import SessionFactory
from tests.builders import saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from workflows.contracts import SendOutcome


async def _test_message(api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory) -> int:
    """A test message as the API writes it, before any attempt sends it."""
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi")])
    async with sessions() as session, session.begin():
        message = Message(
            company_id=tenant.company_id,
            idempotency_key="test/late",
            message_id="<late@nurture.test>",
            source_kind=MessageSource.TEST,
            source_id=cid,
            campaign_id=cid,
            position=0,
            test_address="me@acme.example",
            state=MessageState.PREPARED,
        )
        session.add(message)
    return message.id


async def _state(sessions: SessionFactory, message_id: int) -> MessageState:
    async with sessions() as session:
        message = await session.get_one(Message, message_id)
        return message.state


class _Overtaken(Mailer):
    """Between connecting and DATA, another actor moves the message on (the API giving up
    on a test, or a retry that already sent it): what a frozen worker wakes up to."""

    def __init__(self, settings: Settings, sessions: SessionFactory, state: MessageState) -> None:
        super().__init__(settings)
        self._sessions, self._state = sessions, state

    async def send(
        self,
        message: Email,
        sender: str,
        recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(Message).values(state=self._state))
        await super().send(message, sender, recipient, before_dot)


async def test_an_attempt_overtaken_before_data_sends_nothing_and_keeps_the_other_outcome(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory,
    settings: Settings, templates: TemplateSandbox, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    mail, _ = inbox
    message_id = await _test_message(api, tenant, sessions)
    for state, outcome in (
        (MessageState.FAILED, SendOutcome.FAILED),
        (MessageState.SENT, SendOutcome.ALREADY_SENT),
    ):
        async with sessions() as session, session.begin():
            await session.execute(update(Message).values(state=MessageState.PREPARED))
        late = NurtureActivities(
            sessions, _Overtaken(settings, sessions, state), settings, templates
        )
        assert await late.send_test_message(message_id) is outcome
        assert await _state(sessions, message_id) is state
    assert mail.messages == []


async def test_a_retry_that_finds_a_test_message_mid_data_counts_it_unconfirmed(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory,
    settings: Settings, templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    message_id = await _test_message(api, tenant, sessions)
    async with sessions() as session, session.begin():
        await session.execute(update(Message).values(state=MessageState.SENDING))
    retry = NurtureActivities(sessions, mailer, settings, templates)
    assert await retry.send_test_message(message_id) is SendOutcome.UNCONFIRMED
    async with sessions() as session:
        [message] = (await session.scalars(select(Message))).all()
    assert message.state is MessageState.UNCONFIRMED
    assert message.error is not None and message.error.endswith(
        "it may have been delivered, so it is not sent again"
    )
    assert inbox[0].messages == []
