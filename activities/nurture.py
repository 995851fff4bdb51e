"""The campaign activities: a touchpoint to a recipient, and a campaign's test sends.

Both go through the one send path (activities/sending.py); what is a campaign's own plugs
into it here: whether the recipient may still receive, what the touchpoint says, and
which touchpoint comes next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import Content, Delivery, now
from config import Settings
from mail import links
from mail.message import Envelope, message_id_for
from mail.rendering import Brand, RenderContext, sample_context
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store import enrolments as enrolment_store
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


async def _content(
    session: AsyncSession, settings: Settings, message: Message, candidate: Candidate | None
) -> Content:
    """A touchpoint to its recipient, or to a test address with a candidate's values (or
    sample ones): a test may borrow a candidate's values, never their inbox."""
    assert message.campaign_id is not None and message.position is not None
    found = (
        await session.execute(
            select(Touchpoint, Company, User)
            .join(Company, Company.id == Touchpoint.company_id)
            .join(User, User.id == Touchpoint.sender_user_id)
            .where(
                Touchpoint.campaign_id == message.campaign_id,
                Touchpoint.position == message.position,
            )
        )
    ).first()
    if found is None:
        raise ApplicationError(
            f"Campaign {message.campaign_id} has no touchpoint {message.position + 1}.",
            non_retryable=True,
        )
    touchpoint, company, sender = found
    is_test = message.source_kind is MessageSource.TEST
    if candidate is not None:
        first, last, values = candidate.first_name, candidate.last_name, candidate.custom_fields
    else:
        sample = sample_context(company.custom_fields)
        first, last, values = sample.first_name, sample.last_name, sample.fields
    if is_test:
        address = message.test_address or ""
    else:
        address = candidate.email or "" if candidate is not None else ""
    token = links.sign_unsubscribe(
        settings.signing_secret.get_secret_value(),
        company.id,
        candidate.id if candidate is not None and not is_test else links.TEST_CANDIDATE,
    )
    url = links.unsubscribe_url(settings.public_base_url, token)
    return Content(
        envelope=Envelope(
            sender_name=sender.name,
            sender_address=sender.email,
            recipient_name=f"{first} {last}".strip(),
            recipient_address=address,
            message_id=message.message_id,
            date=now().astimezone(ZoneInfo(company.time_zone)),
            unsubscribe_url=url,
            unsubscribe_mailto=links.unsubscribe_mailto(settings.mail_domain, token),
            campaign_id=message.campaign_id,
            is_test=is_test,
        ),
        subject=touchpoint.subject,
        body=touchpoint.body,
        branded=touchpoint.format is Format.BRANDED,
        context=RenderContext(
            first_name=first,
            last_name=last,
            company_name=company.name,
            sender_name=sender.name,
            sender_title=sender.title,
            unsubscribe_url=url,
            fields={name: values.get(name, "") for name in company.custom_fields},
        ),
        brand=Brand(
            name=company.brand_name or company.name,
            logo_url=company.brand_logo_url,
            primary_color=company.brand_primary_color,
            accent_color=company.brand_accent_color,
        ),
    )


@dataclass(frozen=True)
class _TouchpointSource:
    """Touchpoint `call.position` of one enrolment, to the candidate's own address."""

    call: SendTouchpoint
    settings: Settings
    # The workflow asking, when known: an enrolment id that a rolled-back transaction
    # handed out can come again (SQLite), so the enrolment must be the workflow's own.
    workflow_id: str | None

    @property
    def key(self) -> str:
        return touchpoint_key(self.call)

    @property
    def due(self) -> datetime | None:
        return self.call.scheduled_at

    async def _enrolment(
        self, session: AsyncSession
    ) -> tuple[Enrolment, Candidate | None, Campaign] | None:
        """The enrolment, locked (PostgreSQL): an exit updates it, so that exit waits for
        this transaction, or this one for it and then reads what it wrote (store.messages).
        Its candidate and campaign come with it, in one query."""
        row = (
            await session.execute(
                locking(
                    select(Enrolment, Candidate, Campaign)
                    .outerjoin(Candidate, Candidate.id == Enrolment.candidate_id)
                    .join(Campaign, Campaign.id == Enrolment.campaign_id)
                    .where(Enrolment.id == self.call.enrolment_id),
                    of=Enrolment,
                )
            )
        ).first()
        if row is None:
            return None
        enrolment, candidate, campaign = row
        if enrolment.run != self.call.run:
            return None
        if self.workflow_id is not None and self.workflow_id != nurture_workflow_id(
            enrolment.campaign_id, enrolment.candidate_id
        ):
            return None
        return enrolment, candidate, campaign

    async def new_message(self, session: AsyncSession) -> Message | None:
        enrolment = await session.get_one(Enrolment, self.call.enrolment_id)
        return Message(
            company_id=enrolment.company_id,
            idempotency_key=self.key,
            message_id=message_id_for(self.key, self.settings.mail_domain),
            source_kind=MessageSource.TOUCHPOINT,
            source_id=enrolment.campaign_id,
            campaign_id=enrolment.campaign_id,
            position=self.call.position,
            candidate_id=enrolment.candidate_id,
            enrolment_id=enrolment.id,
            state=MessageState.PREPARED,
            attempts=0,
            scheduled_at=self.call.scheduled_at,
        )

    async def stop(self, session: AsyncSession) -> SendResult | None:
        found = await self._enrolment(session)
        if found is None:
            return SendResult(SendOutcome.LEFT, exit_reason=ExitReason.NOT_ENROLLED.value)
        enrolment, candidate, campaign = found
        if enrolment.status in (RecipientStatus.EXITED, RecipientStatus.COMPLETED):
            reason = enrolment.exit_reason or enrolment.status.value
            return SendResult(SendOutcome.LEFT, exit_reason=reason)
        if candidate is None or candidate.unsubscribed_at is not None:
            reason = ExitReason.ERASED if candidate is None else ExitReason.UNSUBSCRIBED
            enrolment_store.exit_enrolment(enrolment, reason, now())
            return SendResult(SendOutcome.LEFT, exit_reason=reason.value)
        if campaign.status is CampaignStatus.ARCHIVED:
            enrolment_store.exit_enrolment(enrolment, ExitReason.ARCHIVED, now())
            return SendResult(SendOutcome.LEFT, exit_reason=ExitReason.ARCHIVED.value)
        if enrolment.status is RecipientStatus.PAUSED:
            return SendResult(SendOutcome.PAUSED, paused_at=enrolment.paused_at)
        if campaign.status is CampaignStatus.PAUSED:
            return SendResult(SendOutcome.PAUSED, paused_at=now())
        return None

    async def content(self, session: AsyncSession, message: Message) -> Content:
        candidate = await session.get(Candidate, message.candidate_id)
        return await _content(session, self.settings, message, candidate)

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

    async def new_message(self, session: AsyncSession) -> Message | None:
        return None

    async def stop(self, session: AsyncSession) -> SendResult | None:
        return None

    async def content(self, session: AsyncSession, message: Message) -> Content:
        candidate = None
        if message.candidate_id is not None:
            candidate = await session.get(Candidate, message.candidate_id)
        return await _content(session, self.settings, message, candidate)

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
