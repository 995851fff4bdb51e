"""The campaign activities: a touchpoint to a recipient, and a campaign's test sends.

Both go through the one send path (activities/sending.py); what is a campaign's own plugs
into it here: whether the recipient may still receive, what the touchpoint says, and
which touchpoint comes next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import COMPOSED, Content, Delivery, compose, now
from config import Settings
from mail.message import message_id_for
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store import campaign_status
from store import enrolments as enrolment_store
from store.messages import MessageRow
from store.models import (
    Campaign,
    CampaignStatus,
    Candidate,
    Company,
    Enrolment,
    Format,
    Message,
    MessageSource,
    MessageState,
    RecipientStatus,
    Touchpoint,
    User,
    table,
)
from store.session import SessionFactory, locking
from workflows.contracts import (
    ExitReason,
    SendOutcome,
    SendResult,
    SendTouchpoint,
    nurture_workflow_id,
)


def touchpoint_key(call: SendTouchpoint) -> str:
    return f"nurture/{call.enrolment_id}/{call.run}/{call.position}"


_TOUCHPOINTS, _COMPANIES, _USERS = table(Touchpoint), table(Company), table(User)
_CANDIDATES, _ENROLMENTS, _CAMPAIGNS = table(Candidate), table(Enrolment), table(Campaign)

# What a touchpoint says, its company and sender, and (outer-joined: a test may have none)
# the candidate whose values it carries, in one query built once.
_CONTENT = (
    select(
        _TOUCHPOINTS.c.subject,
        _TOUCHPOINTS.c.body,
        _TOUCHPOINTS.c.format,
        *COMPOSED,
    )
    .select_from(
        _TOUCHPOINTS.join(_COMPANIES, _COMPANIES.c.id == _TOUCHPOINTS.c.company_id)
        .join(_USERS, _USERS.c.id == _TOUCHPOINTS.c.sender_user_id)
        .outerjoin(
            _CANDIDATES,
            (_CANDIDATES.c.id == bindparam("candidate_id"))
            & (_CANDIDATES.c.company_id == _COMPANIES.c.id),
        )
    )
    .where(
        _TOUCHPOINTS.c.campaign_id == bindparam("campaign_id"),
        _TOUCHPOINTS.c.position == bindparam("position"),
    )
)


async def _content(
    session: AsyncSession, settings: Settings, message: MessageRow, candidate_id: int | None
) -> Content:
    """A touchpoint to its recipient, or to a test address with a candidate's values (or
    sample ones): a test may borrow a candidate's values, never their inbox."""
    assert message.campaign_id is not None and message.position is not None
    found = (
        await (await session.connection()).execute(
            _CONTENT,
            {
                "campaign_id": message.campaign_id,
                "position": message.position,
                "candidate_id": candidate_id,
            },
        )
    ).first()
    if found is None:
        raise ApplicationError(
            f"Campaign {message.campaign_id} has no touchpoint {message.position + 1}.",
            non_retryable=True,
        )
    row = found._mapping
    return compose(
        row,
        settings,
        message,
        subject=row["subject"],
        body=row["body"],
        branded=row["format"] is Format.BRANDED,
        unsubscribe=True,
        sample=row["candidate_id"] is None,
    )


# The enrolment with what decides whether it may still receive, locked (PostgreSQL; see
# `_TouchpointSource._enrolment`); the candidate outer-joined: an erased one is a tombstone
# (`erased_at`, store/erasure.py), and one whose row is gone counts as erased too.
_ENROLMENT = locking(
    select(
        _ENROLMENTS.c.id,
        _ENROLMENTS.c.company_id,
        _ENROLMENTS.c.campaign_id,
        _ENROLMENTS.c.candidate_id,
        _ENROLMENTS.c.run,
        _ENROLMENTS.c.status,
        _ENROLMENTS.c.exit_reason,
        _ENROLMENTS.c.paused_at,
        _ENROLMENTS.c.held_since,
        _CANDIDATES.c.id.label("candidate_present"),
        _CANDIDATES.c.erased_at,
        _CANDIDATES.c.unsubscribed_at,
        _CAMPAIGNS.c.status.label("campaign_status"),
        _CAMPAIGNS.c.paused_at.label("campaign_paused_at"),
        _CAMPAIGNS.c.resumed_at.label("campaign_resumed_at"),
    )
    .select_from(
        _ENROLMENTS.outerjoin(_CANDIDATES, _CANDIDATES.c.id == _ENROLMENTS.c.candidate_id).join(
            _CAMPAIGNS, _CAMPAIGNS.c.id == _ENROLMENTS.c.campaign_id
        )
    )
    .where(_ENROLMENTS.c.id == bindparam("enrolment_id")),
    of=_ENROLMENTS,
)


@dataclass
class _TouchpointSource:
    """Touchpoint `call.position` of one enrolment, to the candidate's own address."""

    call: SendTouchpoint
    settings: Settings
    # The workflow asking, when known: an enrolment id that a rolled-back transaction
    # handed out can come again (SQLite), so the enrolment must be the workflow's own.
    workflow_id: str | None
    # The enrolment as `stop` last read it, for the message row written after it.
    _enrolment_row: RowMapping | None = field(default=None, init=False)

    @property
    def key(self) -> str:
        return touchpoint_key(self.call)

    @property
    def due(self) -> datetime | None:
        return self.call.scheduled_at

    async def _enrolment(self, session: AsyncSession) -> RowMapping | None:
        """The enrolment, locked (PostgreSQL): an exit updates it, so that exit waits for
        this transaction, or this one for it and then reads what it wrote (store.messages).
        Its candidate and campaign come with it, in one query."""
        connection = await session.connection()
        found = (
            await connection.execute(_ENROLMENT, {"enrolment_id": self.call.enrolment_id})
        ).first()
        if found is None:
            return None
        row = found._mapping
        if row["run"] != self.call.run:
            return None
        if self.workflow_id is not None and self.workflow_id != nurture_workflow_id(
            row["campaign_id"], row["candidate_id"]
        ):
            return None
        self._enrolment_row = row
        return row

    async def new_message(self, session: AsyncSession) -> dict[str, Any] | None:
        enrolment = self._enrolment_row
        assert enrolment is not None, "written once `stop` has let the send go"
        return {
            "company_id": enrolment["company_id"],
            "idempotency_key": self.key,
            "message_id": message_id_for(self.key, self.settings.mail_domain),
            "source_kind": MessageSource.TOUCHPOINT,
            "source_id": enrolment["campaign_id"],
            "campaign_id": enrolment["campaign_id"],
            "position": self.call.position,
            "candidate_id": enrolment["candidate_id"],
            "enrolment_id": self.call.enrolment_id,
            "state": MessageState.PREPARED,
            "scheduled_at": self.call.scheduled_at,
        }

    async def stop(self, session: AsyncSession) -> SendResult | None:
        enrolment = await self._enrolment(session)
        if enrolment is None:
            return SendResult(SendOutcome.LEFT, exit_reason=ExitReason.NOT_ENROLLED.value)
        status = enrolment["status"]
        if status in (RecipientStatus.EXITED, RecipientStatus.COMPLETED):
            reason = enrolment["exit_reason"] or status.value
            return SendResult(SendOutcome.LEFT, exit_reason=reason)
        exit = None
        if enrolment["candidate_present"] is None or enrolment["erased_at"] is not None:
            exit = ExitReason.ERASED
        elif enrolment["unsubscribed_at"] is not None:
            exit = ExitReason.UNSUBSCRIBED
        elif enrolment["campaign_status"] is CampaignStatus.ARCHIVED:
            exit = ExitReason.ARCHIVED
        if exit is not None:
            await enrolment_store.exit_enrolment_by_id(
                session, enrolment, exit, now(),
                position=self.call.position, due_at=self.call.scheduled_at,
            )  # fmt: skip
            return SendResult(SendOutcome.LEFT, exit_reason=exit.value)
        if status is RecipientStatus.PAUSED:
            return SendResult(SendOutcome.PAUSED, paused_at=enrolment["paused_at"])
        held = await campaign_status.hold_if_paused(
            session, enrolment, self.call.position, self.call.scheduled_at, now()
        )
        if held is not None:
            return SendResult(
                SendOutcome.PAUSED, paused_at=now(),
                campaign_paused_at=held.paused_at, campaign_resumed_at=held.resumed_at,
            )  # fmt: skip
        return None

    async def content(self, session: AsyncSession, message: MessageRow) -> Content:
        return await _content(session, self.settings, message, message.candidate_id)

    async def settled(self, session: AsyncSession) -> None:
        await enrolment_store.advance(
            session, self.call.enrolment_id, self.call.run,
            self.call.next_position, self.call.next_send_at, now(),
        )  # fmt: skip


@dataclass(frozen=True)
class _TestSource:
    """One test message, which the API wrote: to a test address, whatever the candidate."""

    message: Message
    settings: Settings

    @property
    def key(self) -> str:
        return self.message.idempotency_key

    due = None

    async def new_message(self, session: AsyncSession) -> dict[str, Any] | None:
        return None

    async def stop(self, session: AsyncSession) -> SendResult | None:
        return None

    async def content(self, session: AsyncSession, message: MessageRow) -> Content:
        return await _content(session, self.settings, message, message.candidate_id)

    async def settled(self, session: AsyncSession) -> None:
        return None


class NurtureActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        mailer: Mailer,
        settings: Settings,
        templates: TemplateSandbox,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._delivery = Delivery(sessions, mailer, templates)

    def _touchpoint(self, call: SendTouchpoint) -> _TouchpointSource:
        workflow_id = activity.info().workflow_id if activity.in_activity() else None
        return _TouchpointSource(call, self._settings, workflow_id)

    @activity.defn(name="send_touchpoint")
    async def send_touchpoint(self, call: SendTouchpoint) -> SendResult:
        return await self._delivery.send(self._touchpoint(call))

    @activity.defn(name="record_send_failure")
    async def record_send_failure(self, call: SendTouchpoint) -> None:
        """After the send's last retry: the message ends (failed, or unconfirmed if it was
        handed to the peer), and the recipient moves on to the next touchpoint."""
        await self._delivery.give_up(self._touchpoint(call))

    async def _test(self, message_id: int) -> _TestSource:
        async with self._sessions() as session:
            message = await session.get(Message, message_id)
        if message is None or message.source_kind is not MessageSource.TEST:
            raise ApplicationError(f"No test message {message_id}.", non_retryable=True)
        return _TestSource(message, self._settings)

    @activity.defn(name="send_test_message")
    async def send_test_message(self, message_id: int) -> SendOutcome:
        """One touchpoint of a campaign test, to an address given by the admin."""
        return (await self._delivery.send(await self._test(message_id))).outcome

    @activity.defn(name="record_test_failure")
    async def record_test_failure(self, message_id: int) -> SendOutcome:
        """After a test send's last retry: no test message stays `prepared`."""
        return await self._delivery.give_up(await self._test(message_id))
