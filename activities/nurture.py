"""The campaign activities: send a touchpoint, send a test, start a bulk enrolment.

Each is idempotent under retry. A send records its idempotency key before SMTP and
re-reads, in that same transaction, whether the store still lets the recipient receive.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

import orchestration
from activities import links
from activities.mail import Envelope, Mailer, PermanentSendError, build_message, message_id_for
from activities.rendering import Brand, RenderContext, RenderError, sample_context
from activities.template_sandbox import TemplateSandbox
from config import Settings
from errors import clause
from store import campaigns as campaign_store
from store import enrolments as enrolment_store
from store.models import (
    Campaign,
    CampaignStatus,
    Candidate,
    Company,
    Enrolment,
    EnrolmentBatch,
    Format,
    Message,
    MessageState,
    RecipientStatus,
    Touchpoint,
    User,
)
from store.session import SessionFactory
from workflows.contracts import (
    EnrolmentBatchInput,
    ExitReason,
    SendOutcome,
    SendResult,
    SendTouchpoint,
)

log = logging.getLogger(__name__)

_BATCH_COMMIT_ATTEMPTS = 10


def _now() -> datetime:
    """Temporal's clock when it is ahead of ours (a time-skipping test server), else ours."""
    now = datetime.now(UTC)
    if activity.in_activity():
        scheduled = activity.info().current_attempt_scheduled_time
        if scheduled and scheduled > now:
            return scheduled
    return now


# What a message that left PREPARED tells a retry (or a test's answer) about its send.
_OUTCOME_OF = {
    MessageState.SENT: SendOutcome.ALREADY_SENT,
    MessageState.UNCONFIRMED: SendOutcome.UNCONFIRMED,
    MessageState.FAILED: SendOutcome.FAILED,
}


def _settle(message: Message, *, last_retry: bool) -> SendOutcome:
    """What a retry, or the end of the last one, makes of a message an earlier attempt
    began. One found SENDING may have reached the peer (the RFC 1047 window): it is
    counted unconfirmed, never sent again, rather than risk a duplicate in someone's
    inbox. After the last retry one still PREPARED is failed, with the last error seen."""
    if message.state is MessageState.SENDING:
        message.state = MessageState.UNCONFIRMED
        message.error = "a retry found this message mid-DATA; not sent again"
        log.warning("message %s unconfirmed after a retry", message.idempotency_key)
    elif message.state is MessageState.PREPARED and last_retry:
        message.state = MessageState.FAILED
        message.error = (
            f"gave up after the last retry: {message.error or 'it failed before SMTP began'}"
        )
    return _OUTCOME_OF.get(message.state, SendOutcome.FAILED)


class _Superseded(Exception):
    """Another attempt took the message past PREPARED first: this one sends nothing."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class _Withdrawn(Exception):
    """The store said stop between the first check and DATA: nothing is sent."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.outcome.value)
        self.result = result


@dataclass(frozen=True)
class _Prepared:
    message_id: int
    envelope: Envelope
    subject: str
    body: str
    format: Format
    context: RenderContext
    brand: Brand


class NurtureActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        mailer: Mailer,
        settings: Settings,
        client: Client,
        templates: TemplateSandbox,
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self._mailer = mailer
        self._settings = settings
        self._client = client
        # One bound for the whole worker, however many bulk adds run at once.
        self._starts = asyncio.Semaphore(settings.enrol_concurrency)

    # -- sending -------------------------------------------------------------------------

    @activity.defn(name="send_touchpoint")
    async def send_touchpoint(self, call: SendTouchpoint) -> SendResult:
        key = f"nurture/{call.enrolment_id}/{call.run}/{call.position}"
        async with self._sessions() as session, session.begin():
            enrolment = await session.scalar(
                select(Enrolment).where(Enrolment.id == call.enrolment_id).with_for_update()
            )
            if enrolment is None or enrolment.run != call.run:
                return SendResult(SendOutcome.LEFT, exit_reason=ExitReason.NOT_ENROLLED.value)
            stop = await self._stop(session, enrolment)
            if stop is not None:
                return stop
            message = await session.scalar(select(Message).where(Message.idempotency_key == key))
            if message is not None and message.state is not MessageState.PREPARED:
                return await self._replay(session, enrolment, message, call)
            if message is None:
                message = Message(
                    company_id=enrolment.company_id,
                    idempotency_key=key,
                    message_id=message_id_for(key, self._settings.mail_domain),
                    campaign_id=enrolment.campaign_id,
                    candidate_id=enrolment.candidate_id,
                    enrolment_id=enrolment.id,
                    position=call.position,
                    state=MessageState.PREPARED,
                    attempts=0,
                    scheduled_at=call.scheduled_at,
                )
                session.add(message)
            message.attempts += 1
            await session.flush()
            prepared = await self._prepare(session, message, enrolment.candidate_id)
        return await self._deliver(prepared, call)

    async def _stop(self, session: AsyncSession, enrolment: Enrolment) -> SendResult | None:
        """The store's word on whether this recipient may receive now."""
        if enrolment.status in (RecipientStatus.EXITED, RecipientStatus.COMPLETED):
            reason = enrolment.exit_reason or enrolment.status.value
            return SendResult(SendOutcome.LEFT, exit_reason=reason)
        candidate = await session.get(Candidate, enrolment.candidate_id)
        if candidate is None or candidate.unsubscribed_at is not None:
            reason = ExitReason.ERASED if candidate is None else ExitReason.UNSUBSCRIBED
            enrolment_store.exit_enrolment(enrolment, reason, _now())
            return SendResult(SendOutcome.LEFT, exit_reason=reason.value)
        campaign = await session.get(Campaign, enrolment.campaign_id)
        if campaign is not None and campaign.status is CampaignStatus.ARCHIVED:
            enrolment_store.exit_enrolment(enrolment, ExitReason.ARCHIVED, _now())
            return SendResult(SendOutcome.LEFT, exit_reason=ExitReason.ARCHIVED.value)
        if enrolment.status is RecipientStatus.PAUSED:
            return SendResult(SendOutcome.PAUSED, paused_at=enrolment.paused_at)
        if campaign is not None and campaign.status is CampaignStatus.PAUSED:
            return SendResult(SendOutcome.PAUSED, paused_at=_now())
        return None

    async def _replay(
        self, session: AsyncSession, enrolment: Enrolment, message: Message, call: SendTouchpoint
    ) -> SendResult:
        """A retry that finds its message past PREPARED never sends it again."""
        outcome = _settle(message, last_retry=False)
        self._advance(enrolment, call)
        return SendResult(outcome)

    @staticmethod
    def _advance(enrolment: Enrolment, call: SendTouchpoint) -> None:
        """Record the next touchpoint; a recipient paused meanwhile keeps its place."""
        if enrolment.status not in enrolment_store.STAYING:
            return
        enrolment.next_position, enrolment.next_send_at = call.next_position, call.next_send_at
        if call.next_position is None:
            enrolment.status, enrolment.left_at = RecipientStatus.COMPLETED, _now()

    async def _prepare(
        self, session: AsyncSession, message: Message, candidate_id: int | None
    ) -> _Prepared:
        """Everything the e-mail needs, read by id inside the activity (never in history)."""
        campaign = await session.get_one(Campaign, message.campaign_id)
        company = await session.get_one(Company, campaign.company_id)
        touchpoint = await session.scalar(
            select(Touchpoint).where(
                Touchpoint.campaign_id == campaign.id, Touchpoint.position == message.position
            )
        )
        if touchpoint is None:
            raise ApplicationError(
                f"Campaign {campaign.id} has no touchpoint {message.position + 1}.",
                non_retryable=True,
            )
        sender = await session.get_one(User, touchpoint.sender_user_id)
        candidate = await session.get(Candidate, candidate_id) if candidate_id else None
        if candidate is not None:
            first, last = candidate.first_name, candidate.last_name
            values = candidate.custom_fields
        else:
            sample = sample_context(company.custom_fields)
            first, last, values = sample.first_name, sample.last_name, sample.fields
        # A test may borrow a real candidate's values, never their inbox.
        if message.is_test:
            address = message.test_address or ""
        else:
            address = candidate.email or "" if candidate is not None else ""
        token = links.sign_unsubscribe(
            self._settings.signing_secret.get_secret_value(),
            company.id,
            candidate.id if candidate is not None and not message.is_test else links.TEST_CANDIDATE,
        )
        url = links.unsubscribe_url(self._settings.public_base_url, token)
        context = RenderContext(
            first_name=first,
            last_name=last,
            company_name=company.name,
            sender_name=sender.name,
            sender_title=sender.title,
            unsubscribe_url=url,
            fields={name: values.get(name, "") for name in company.custom_fields},
        )
        envelope = Envelope(
            sender_name=sender.name,
            sender_address=sender.email,
            recipient_name=f"{first} {last}".strip(),
            recipient_address=address,
            message_id=message.message_id,
            date=_now().astimezone(ZoneInfo(company.time_zone)),
            unsubscribe_url=url,
            unsubscribe_mailto=links.unsubscribe_mailto(self._settings.mail_domain, token),
            campaign_id=campaign.id,
            is_test=message.is_test,
        )
        brand = Brand(
            name=company.brand_name or company.name,
            logo_url=company.brand_logo_url,
            primary_color=company.brand_primary_color,
            accent_color=company.brand_accent_color,
        )
        return _Prepared(
            message_id=message.id,
            envelope=envelope,
            subject=touchpoint.subject,
            body=touchpoint.body,
            format=touchpoint.format,
            context=context,
            brand=brand,
        )

    async def _deliver(self, prepared: _Prepared, call: SendTouchpoint | None) -> SendResult:
        try:
            rendered = await self._templates.render(
                prepared.subject,
                prepared.body,
                prepared.format is Format.BRANDED,
                prepared.context,
                prepared.brand,
            )
        except RenderError as error:
            # Saving checked the template, but not with this recipient's values (nor under
            # the limits of an older version): what fails here fails on every retry. Only
            # from PREPARED: a late attempt must not undo what another one sent.
            ended = await self._finish(
                prepared.message_id,
                MessageState.FAILED,
                call,
                f"render: {clause(str(error))}",
                only_from=MessageState.PREPARED,
            )
            return SendResult(_OUTCOME_OF.get(ended, SendOutcome.FAILED))
        except Exception as error:
            # No template process free, say: the retry may render; the reason stays on record.
            await self._set_state(prepared.message_id, None, f"render: {clause(str(error))}")
            raise

        async def accepted() -> None:
            await self._last_check(prepared.message_id, call)

        try:
            email = build_message(prepared.envelope, rendered)
            await self._mailer.send(
                email,
                prepared.envelope.sender_address,
                prepared.envelope.recipient_address,
                accepted,
            )
        except _Withdrawn as withdrawn:
            await self._set_state(prepared.message_id, None, f"withdrawn: {withdrawn.result}")
            return withdrawn.result
        except _Superseded as superseded:
            return SendResult(superseded.outcome)
        except PermanentSendError as error:
            await self._finish(prepared.message_id, MessageState.FAILED, call, str(error))
            return SendResult(SendOutcome.FAILED)
        except Exception as error:
            await self._set_state(prepared.message_id, None, f"{type(error).__name__}: {error}")
            raise
        await self._finish(prepared.message_id, MessageState.SENT, call, None)
        return SendResult(SendOutcome.SENT)

    async def _last_check(self, message_id: int, call: SendTouchpoint | None) -> None:
        """Right before DATA: the store's word once more, and SENDING in the same
        transaction, so that an exit or pause committed while SMTP was connecting wins."""
        stop = None
        async with self._sessions() as session, session.begin():
            if call is not None:
                enrolment = await session.scalar(
                    select(Enrolment).where(Enrolment.id == call.enrolment_id).with_for_update()
                )
                if enrolment is None or enrolment.run != call.run:
                    stop = SendResult(SendOutcome.LEFT, exit_reason=ExitReason.NOT_ENROLLED.value)
                else:
                    stop = await self._stop(session, enrolment)
            if stop is None:
                # Compare-and-set: an attempt that another one overtook (a retry that sent,
                # a test given up) must not take the message back and send it again.
                taken = await session.execute(
                    update(Message)
                    .where(Message.id == message_id, Message.state == MessageState.PREPARED)
                    .values(state=MessageState.SENDING)
                )
                if cast(CursorResult[Any], taken).rowcount != 1:
                    message = await session.get_one(Message, message_id)
                    raise _Superseded(_settle(message, last_retry=False))
        if stop is not None:
            raise _Withdrawn(stop)

    async def _set_state(
        self, message_id: int, state: MessageState | None, error: str | None = None
    ) -> None:
        values: dict[str, object] = {"error": error}
        if state is not None:
            values["state"] = state
        async with self._sessions() as session, session.begin():
            await session.execute(update(Message).where(Message.id == message_id).values(values))

    async def _finish(
        self,
        message_id: int,
        state: MessageState,
        call: SendTouchpoint | None,
        error: str | None,
        *,
        only_from: MessageState | None = None,
    ) -> MessageState:
        """Record how the send ended (unless the message left `only_from` meanwhile) and
        what comes next; answers the message's state."""
        async with self._sessions() as session, session.begin():
            message = await session.get_one(Message, message_id)
            if only_from is not None and message.state is not only_from:
                return message.state
            message.state, message.error = state, error
            if state is MessageState.SENT:
                message.sent_at = _now()
            if call is not None:
                enrolment = await session.get_one(Enrolment, call.enrolment_id)
                if enrolment.run == call.run:
                    self._advance(enrolment, call)
            return state

    @activity.defn(name="record_send_failure")
    async def record_send_failure(self, call: SendTouchpoint) -> None:
        """After the send's last retry: the message is failed (or unconfirmed if it was
        mid-DATA), and the recipient moves on to the next touchpoint."""
        key = f"nurture/{call.enrolment_id}/{call.run}/{call.position}"
        async with self._sessions() as session, session.begin():
            message = await session.scalar(select(Message).where(Message.idempotency_key == key))
            if message is not None:
                _settle(message, last_retry=True)
            enrolment = await session.get(Enrolment, call.enrolment_id)
            if enrolment is not None and enrolment.run == call.run:
                self._advance(enrolment, call)

    @activity.defn(name="send_test_message")
    async def send_test_message(self, message_id: int) -> SendOutcome:
        """One touchpoint of a campaign test, to an address given by the admin."""
        async with self._sessions() as session, session.begin():
            message = await session.get(Message, message_id)
            if message is None or not message.is_test:
                raise ApplicationError(f"No test message {message_id}.", non_retryable=True)
            if message.state is not MessageState.PREPARED:
                return _settle(message, last_retry=False)
            message.attempts += 1
            prepared = await self._prepare(session, message, message.candidate_id)
        return (await self._deliver(prepared, None)).outcome

    @activity.defn(name="record_test_failure")
    async def record_test_failure(self, message_id: int) -> SendOutcome:
        """After a test send's last retry: failed, or unconfirmed if it was mid-DATA, so
        that no test message stays `prepared` with nothing left to move it."""
        async with self._sessions() as session, session.begin():
            return _settle(await session.get_one(Message, message_id), last_retry=True)

    # -- bulk enrolment -------------------------------------------------------------------

    @activity.defn(name="start_enrolments")
    async def start_enrolments(self, call: EnrolmentBatchInput) -> int:
        """Start the workflows of a bulk add, a bounded number at a time so the Temporal
        server keeps serving workflow tasks; resumes where a previous attempt stopped."""
        async with self._sessions() as session:
            batch = await session.get(EnrolmentBatch, call.batch_id)
            if batch is None:
                # The API starts this before it commits: give its commit time to land, and
                # after that believe it rolled back.
                if activity.info().attempt > _BATCH_COMMIT_ATTEMPTS:
                    return 0
                raise ApplicationError(f"Enrolment batch {call.batch_id} is not committed yet.")
            campaign = await session.get_one(Campaign, batch.campaign_id)
            company = await session.get_one(Company, batch.company_id)
            plan = campaign_store.plan_of(
                company, campaign, await campaign_store.list_touchpoints(session, campaign.id)
            )
        started = 0

        async def start(enrolment: Enrolment) -> int:
            async with self._starts:
                await orchestration.start_nurture(
                    self._client,
                    self._settings.task_queue,
                    orchestration.nurture_input(enrolment, plan),
                    campaign_name=campaign.name,
                    replace_running=enrolment.run > 1,
                )
            # Every start proves progress (the SDK throttles), not only a whole wave.
            activity.heartbeat(started)
            return enrolment.id

        while True:
            async with self._sessions() as session:
                rows = await enrolment_store.unstarted(session, call.batch_id, limit=500)
            if not rows:
                break
            done = await asyncio.gather(*(start(e) for e in rows))
            async with self._sessions() as session, session.begin():
                await enrolment_store.mark_started(session, done, _now())
            started += len(done)
            activity.heartbeat(started)
        async with self._sessions() as session, session.begin():
            batch = await session.get_one(EnrolmentBatch, call.batch_id)
            batch.finished_at = _now()
        return started
