"""The one send path: every e-mail (a touchpoint, a test, a stage action's) goes through here.

It prepares the message row, checks with the store, fences the attempt, speaks SMTP and
records the outcome. What differs between kinds of e-mail plugs in as a `Source`: who may
still receive, what the e-mail says, and what comes next.

Fencing: each attempt takes the message with a token of its own (`holder`), and every
state change afterwards is a compare-and-set on (state, holder), on SQLite and PostgreSQL
alike. An attempt that the server gave up on (a frozen worker that wakes up) finds its
claim gone, sends nothing and changes nothing. The message becomes `sending` only once the
peer holds the whole content and just the final dot is left (mail.smtp), so a retry after
a crash before that sends it, once; one found `sending` may have been delivered (RFC 1047)
and ends `unconfirmed`, never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, RowMapping, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from config import Settings
from errors import clause
from mail import links
from mail.message import Envelope, build_message
from mail.rendering import Brand, RenderContext, RenderError, sample_context
from mail.sandbox import TemplateSandbox
from mail.smtp import DotRefusedError, Mailer, PermanentSendError
from store.messages import MESSAGE_ROW, MESSAGES, MessageRow, unfinished_ending
from store.models import Candidate, Company, MessageSource, MessageState, User, table
from store.session import SessionFactory, locking, transaction
from workflows.contracts import SendOutcome, SendResult

log = logging.getLogger(__name__)

# An attempt proves it is alive this often; the workflows give it a heartbeat timeout of
# a few times that, so a killed or frozen worker is noticed in seconds.
HEARTBEAT_SECONDS = 2.0

# What a message that an attempt finds past PREPARED tells it.
_OUTCOME_OF = {
    MessageState.SENT: SendOutcome.ALREADY_SENT,
    MessageState.UNCONFIRMED: SendOutcome.UNCONFIRMED,
    MessageState.FAILED: SendOutcome.FAILED,
    MessageState.WITHDRAWN: SendOutcome.WITHDRAWN,
}

_LOST = "the attempt sending it stopped answering before the peer's reply"
_GAVE_UP = "gave up after the last retry"
_NEVER_WRITTEN = "no attempt's first check ever committed its message, so nothing was sent"

# The statements of every send, built once and bound per call (Core, no entities: the ORM's
# statement building, loading and flush cost a send more than SQLite does).
_ID = MESSAGES.c.id == bindparam("row_id")
_HELD = MESSAGES.c.holder == bindparam("token")
_FIND = locking(select(*MESSAGE_ROW).where(MESSAGES.c.idempotency_key == bindparam("key")))
_WRITE = insert(MESSAGES).returning(*MESSAGE_ROW)
_TAKE_OVER = (
    update(MESSAGES).where(_ID).values(holder=bindparam("token"), attempts=MESSAGES.c.attempts + 1)
)
_TO_SENDING = (
    update(MESSAGES)
    .where(_ID, _HELD, MESSAGES.c.state == MessageState.PREPARED)
    .values(state=MessageState.SENDING)
)
_END = (
    update(MESSAGES)
    .where(_ID, _HELD, MESSAGES.c.state.in_((MessageState.PREPARED, MessageState.SENDING)))
    .values(
        state=bindparam("new_state"),
        error=bindparam("new_error"),
        holder=None,
        sent_at=bindparam("at"),
    )
)
_NOTE = update(MESSAGES).where(_ID, _HELD).values(error=bindparam("new_error"))
_UNFINISHED = (
    update(MESSAGES)
    .where(_ID)
    .values(state=bindparam("new_state"), error=bindparam("new_error"), holder=None)
)
_STATE = select(MESSAGES.c.state).where(_ID)


# The moment the running send was due, when its source knows it (see `now`).
_DUE: ContextVar[datetime | None] = ContextVar("due", default=None)


def now() -> datetime:
    """Temporal's clock when it is ahead of ours (a time-skipping test server), else ours:
    an activity task's scheduled time, and for a local activity (scheduled by the worker,
    on our clock) the moment its e-mail was due, which the workflow's clock had reached."""
    current = datetime.now(UTC)
    if activity.in_activity():
        ahead = [activity.info().current_attempt_scheduled_time, _DUE.get()]
        return max([current, *(moment for moment in ahead if moment is not None)])
    return current


@dataclass(frozen=True)
class Content:
    """Everything an e-mail needs, read by id inside the activity (never in history)."""

    envelope: Envelope
    subject: str
    body: str
    branded: bool
    context: RenderContext
    brand: Brand


_COMPANIES, _USERS, _CANDIDATES = table(Company), table(User), table(Candidate)

# What `compose` reads, labelled: the company, the sender and the candidate. A kind of
# e-mail's query selects these (with what else it needs) from its own joins.
COMPOSED = (
    _COMPANIES.c.id.label("company_id"),
    _COMPANIES.c.name.label("company_name"),
    _COMPANIES.c.time_zone,
    _COMPANIES.c.custom_fields.label("company_fields"),
    _COMPANIES.c.brand_name,
    _COMPANIES.c.brand_logo_url,
    _COMPANIES.c.brand_primary_color,
    _COMPANIES.c.brand_accent_color,
    _COMPANIES.c.open_tracking,
    _USERS.c.name.label("sender_name"),
    _USERS.c.email.label("sender_email"),
    _USERS.c.title.label("sender_title"),
    _CANDIDATES.c.id.label("candidate_id"),
    _CANDIDATES.c.first_name,
    _CANDIDATES.c.last_name,
    _CANDIDATES.c.email.label("candidate_email"),
    _CANDIDATES.c.custom_fields.label("candidate_fields"),
)


def compose(
    row: RowMapping,
    settings: Settings,
    message: MessageRow,
    *,
    subject: str,
    body: str,
    branded: bool,
    unsubscribe: bool,
    sample: bool = False,
) -> Content:
    """An e-mail's content from a row of the store that names its company, sender and
    candidate (the labels of activities/nurture.py's and activities/stage_actions.py's
    queries). `unsubscribe`: a campaign's e-mail carries the candidate's signed links (a
    test's unsubscribe nobody); a stage action's carries none. `sample`: no candidate's
    values, sample ones (a test without a candidate). A test goes to its test address
    only; any other e-mail to the candidate's own. A touchpoint's branded e-mail carries a
    pixel signed for its message when the company tracks opens; no other e-mail does."""
    company_fields: list[str] = row["company_fields"]
    if sample:
        values = sample_context(company_fields)
        first, last, fields = values.first_name, values.last_name, values.fields
    else:
        first, last, fields = row["first_name"], row["last_name"], row["candidate_fields"]
    is_test = message.source_kind is MessageSource.TEST
    url = mailto = None
    if unsubscribe:
        token = links.sign_unsubscribe(
            settings.signing_secret.get_secret_value(),
            row["company_id"],
            links.TEST_CANDIDATE if is_test or sample else row["candidate_id"],
        )
        url = links.unsubscribe_url(settings.public_base_url, token)
        mailto = links.unsubscribe_mailto(settings.mail_domain, token)
    pixel = ""
    if branded and row["open_tracking"] and message.source_kind is MessageSource.TOUCHPOINT:
        signed = links.sign_open(
            settings.signing_secret.get_secret_value(), row["company_id"], message.id
        )
        pixel = links.open_pixel_url(settings.public_base_url, signed)
    company_name, sender_name = row["company_name"], row["sender_name"]
    # A test may borrow a candidate's values, never their inbox.
    address = (message.test_address if is_test else row["candidate_email"]) or ""
    return Content(
        envelope=Envelope(
            sender_name=sender_name,
            sender_address=row["sender_email"],
            recipient_name=f"{first} {last}".strip(),
            recipient_address=address,
            message_id=message.message_id,
            date=now().astimezone(ZoneInfo(row["time_zone"])),
            unsubscribe_url=url,
            unsubscribe_mailto=mailto,
            campaign_id=message.campaign_id,
            is_test=is_test,
        ),
        subject=subject,
        body=body,
        branded=branded,
        context=RenderContext(
            first_name=first,
            last_name=last,
            company_name=company_name,
            sender_name=sender_name,
            sender_title=row["sender_title"],
            unsubscribe_url=url or "",
            fields={name: fields.get(name, "") for name in company_fields},
            open_pixel_url=pixel,
        ),
        brand=Brand(
            name=row["brand_name"] or company_name,
            logo_url=row["brand_logo_url"],
            primary_color=row["brand_primary_color"],
            accent_color=row["brand_accent_color"],
        ),
    )


class Source(Protocol):
    """What one kind of e-mail plugs into the send path."""

    @property
    def key(self) -> str:
        """The idempotency key: one message row, and one Message-ID, per key."""
        ...

    @property
    def due(self) -> datetime | None:
        """When the e-mail was due, if it was scheduled: the clock never reads earlier."""
        ...

    async def new_message(self, session: AsyncSession) -> dict[str, Any] | None:
        """The columns of the row to write when none exists yet, once `stop` let it go
        (None: the caller wrote it beforehand)."""
        ...

    async def stop(self, session: AsyncSession) -> SendResult | None:
        """The store's word on whether the e-mail may go now; None lets it go. Read at
        the start and again right before the final dot, in the transaction that moves the
        message to `sending`, so what the store commits before wins."""
        ...

    async def content(self, session: AsyncSession, message: MessageRow) -> Content: ...

    async def settled(self, session: AsyncSession) -> None:
        """What comes next, once the message has ended (in the transaction that says so)."""
        ...


class _LostClaimError(Exception):
    """Another attempt holds the message now: this one sends nothing, changes nothing."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class _WithdrawnError(Exception):
    """The store said stop right before the final dot: nothing was delivered."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.outcome.value)
        self.result = result


def _changed(result: Any) -> bool:
    return cast(CursorResult[Any], result).rowcount == 1


def _attempt_token() -> str:
    suffix = uuid.uuid4().hex[:12]
    if activity.in_activity():
        info = activity.info()
        return f"{info.workflow_id}/{info.activity_id}#{info.attempt}/{suffix}"[-200:]
    return suffix


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the send runs, whatever it waits for (a template process, SMTP). A
    local activity has no heartbeat of its own: the SDK keeps its workflow task alive."""
    if not activity.in_activity() or activity.info().is_local:
        yield
        return

    async def beat() -> None:
        # Not at once: most sends end within the first interval and need no heartbeat (a
        # call to the server each); the server's timeout runs from the start all the same.
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class Delivery:
    """Sends one e-mail of any source, fenced; see the module's docstring."""

    def __init__(self, sessions: SessionFactory, mailer: Mailer, templates: TemplateSandbox):
        self._sessions = sessions
        self._mailer = mailer
        self._templates = templates

    async def send(self, source: Source) -> SendResult:
        due = _DUE.set(source.due)
        try:
            async with _heartbeating():
                return await self._send(source, _attempt_token())
        finally:
            _DUE.reset(due)

    async def _send(self, source: Source, token: str) -> SendResult:
        async with transaction(self._sessions) as session:
            connection = await session.connection()
            found = (await connection.execute(_FIND, {"key": source.key})).first()
            message = MessageRow(**found._mapping) if found is not None else None
            if message is not None and message.state is not MessageState.PREPARED:
                return await self._found_ended(session, message, source)
            stop = await source.stop(session)
            if stop is not None:
                if message is not None:
                    await _withdraw(session, message.id, stop)
                return stop
            # Taking the message over fences out an attempt the server gave up on.
            if message is None:
                columns = await source.new_message(session)
                if columns is None:
                    raise ApplicationError(f"No message {source.key}.", non_retryable=True)
                written = await connection.execute(
                    _WRITE, {**columns, "holder": token, "attempts": 1}
                )
                message = MessageRow(**written.one()._mapping)
            else:
                await connection.execute(_TAKE_OVER, {"row_id": message.id, "token": token})
            content = await source.content(session, message)
            message_id = message.id

        try:
            rendered = await self._templates.render(
                content.subject, content.body, content.branded, content.context, content.brand
            )
            email = build_message(content.envelope, rendered)
        except (RenderError, PermanentSendError) as error:
            # Saving checked the template, but not with this recipient's values (nor under
            # the limits of an older version): what fails here fails on every retry.
            reason = f"render: {clause(str(error))}" if isinstance(error, RenderError) else None
            return await self._end(
                source, message_id, token, MessageState.FAILED, reason or str(error)
            )
        except Exception as error:
            # No template process free, say: the retry may render; the reason stays on record.
            await self._note(message_id, token, f"render: {clause(str(error))}")
            raise

        handed = False

        async def before_dot() -> None:
            nonlocal handed
            await self._last_check(source, message_id, token)
            handed = True

        try:
            await self._mailer.send(
                email, content.envelope.sender_address, content.envelope.recipient_address,
                before_dot,
            )  # fmt: skip
        except _WithdrawnError as withdrawn:
            return withdrawn.result
        except _LostClaimError as lost:
            return SendResult(lost.outcome)
        except PermanentSendError as error:
            return await self._end(source, message_id, token, MessageState.FAILED, str(error))
        except DotRefusedError as error:
            # A definite "not taken": back to `prepared`, for the retry to send it.
            await self._end(source, message_id, token, MessageState.PREPARED, str(error))
            raise
        except asyncio.CancelledError:
            if handed:
                # Cancelled (its heartbeat timed out) once the dot had gone: say so now.
                await asyncio.shield(
                    self._end(
                        source, message_id, token, MessageState.UNCONFIRMED,
                        "the attempt was cancelled after its final dot, before the peer's "
                        "reply was recorded; it may have been delivered, so it is not sent "
                        "again",
                    )
                )  # fmt: skip
            raise
        except Exception as error:
            if handed:
                # The peer had the whole message and its answer never came: it may have
                # delivered it. Said now, with the reason, rather than left to a retry.
                return await self._end(
                    source, message_id, token, MessageState.UNCONFIRMED,
                    f"the session ended with only the final dot left or sent, before the "
                    f"peer's reply ({type(error).__name__}: {error}); it may have been "
                    "delivered, so it is not sent again",
                )  # fmt: skip
            await self._note(message_id, token, f"{type(error).__name__}: {error}")
            raise
        # Delivered: record it even if the attempt is being cancelled meanwhile.
        return await asyncio.shield(self._end(source, message_id, token, MessageState.SENT, None))

    async def _found_ended(
        self, session: AsyncSession, message: MessageRow, source: Source
    ) -> SendResult:
        """An attempt finds its message past PREPARED: it never sends it again."""
        state = message.state
        if state is MessageState.SENDING:
            # Whoever handed it over is gone (the server retried): this is RFC 1047's window.
            state = await _end_unfinished(session, message, _LOST)
        if state is MessageState.WITHDRAWN:
            stop = await source.stop(session)
            if stop is not None:
                return stop
        await source.settled(session)
        return SendResult(_OUTCOME_OF.get(state, SendOutcome.FAILED))

    async def _last_check(self, source: Source, message_id: int, token: str) -> None:
        """Right before the final dot: the claim, then the store's word once more, in one
        transaction. The compare-and-set comes first, so on SQLite the transaction holds
        the write lock before it reads: an exit committed before it is seen, and one
        committed after it finds the message `sending` (and waits for it, see
        store.messages.wait_for_sends)."""
        stop = None
        # Nothing is awaited between this commit and the dot (see mail.smtp): a worker
        # killed in between would leave `sending` a message that never left.
        async with transaction(self._sessions, urgent=True, close_later=True) as session:
            connection = await session.connection()
            held = {"row_id": message_id, "token": token}
            if not _changed(await connection.execute(_TO_SENDING, held)):
                found = await connection.scalar(_STATE, held)
                if found is None:
                    # Gone with a pause another attempt met: the retry asks the store anew.
                    raise ApplicationError(f"Message {message_id} is gone; asking again.")
                raise _LostClaimError(_OUTCOME_OF.get(found, SendOutcome.UNCONFIRMED))
            stop = await source.stop(session)
            if stop is not None:
                await _withdraw(session, message_id, stop)
        if stop is not None:
            raise _WithdrawnError(stop)

    async def _end(
        self, source: Source, message_id: int, token: str, state: MessageState, error: str | None
    ) -> SendResult:
        """The attempt's last word, if it still holds the message. Back to PREPARED (the
        peer refused the dot for now) hands it to the retry, with nothing settled yet."""
        async with transaction(self._sessions, urgent=True) as session:
            connection = await session.connection()
            ended = await connection.execute(
                _END,
                {
                    "row_id": message_id,
                    "token": token,
                    "new_state": state,
                    "new_error": error,
                    "at": now() if state is MessageState.SENT else None,
                },
            )
            if not _changed(ended):
                found = await connection.scalar(_STATE, {"row_id": message_id})
                return SendResult(
                    _OUTCOME_OF.get(found, SendOutcome.UNCONFIRMED) if found else SendOutcome.FAILED
                )
            if state is not MessageState.PREPARED:
                await source.settled(session)
        if state is MessageState.SENT:
            return SendResult(SendOutcome.SENT)
        return SendResult(_OUTCOME_OF.get(state, SendOutcome.FAILED))

    async def _note(self, message_id: int, token: str, error: str) -> None:
        """Keep the reason an attempt failed (to be retried) on its message."""
        async with transaction(self._sessions) as session:
            await (await session.connection()).execute(
                _NOTE, {"row_id": message_id, "token": token, "new_error": error}
            )

    async def give_up(self, source: Source) -> SendOutcome:
        """After the last retry: no message stays `prepared` or `sending` with nothing left
        to move it. It is failed with the last error seen, or unconfirmed if it had been
        handed to the peer; then what comes next is recorded."""
        async with transaction(self._sessions) as session:
            connection = await session.connection()
            found = (await connection.execute(_FIND, {"key": source.key})).first()
            state = MessageState.FAILED
            if found is not None:
                state = await _end_unfinished(session, MessageRow(**found._mapping), _GAVE_UP)
            elif await source.stop(session) is None:
                # No attempt's first check ever committed its message (the store was out of
                # reach, say): the failure is on record all the same.
                columns = await source.new_message(session)
                if columns is not None:
                    await connection.execute(
                        _WRITE,
                        {**columns, "state": state, "error": f"{_GAVE_UP}; {_NEVER_WRITTEN}"},
                    )
            await source.settled(session)
            return _OUTCOME_OF.get(state, SendOutcome.FAILED)


async def _end_unfinished(session: AsyncSession, message: MessageRow, reason: str) -> MessageState:
    """store.messages.unfinished_ending, written; its holder loses its claim."""
    state, error = unfinished_ending(message.state, message.error, reason)
    if state is not message.state:
        await (await session.connection()).execute(
            _UNFINISHED, {"row_id": message.id, "new_state": state, "new_error": error}
        )
        log.warning("message %s %s: %s", message.idempotency_key, state.value, error)
    return state


async def _withdraw(session: AsyncSession, message_id: int, stop: SendResult) -> None:
    """The store said stop before anything was delivered. A recipient who left gets the
    message `withdrawn` with the reason; a paused one's row goes (nothing was sent, and the
    touchpoint is sent afresh on resume)."""
    connection = await session.connection()
    if stop.outcome is SendOutcome.PAUSED:
        await connection.execute(delete(MESSAGES).where(MESSAGES.c.id == message_id))
        return
    await connection.execute(
        update(MESSAGES)
        .where(MESSAGES.c.id == message_id)
        .values(
            state=MessageState.WITHDRAWN,
            holder=None,
            error=(
                f"withdrawn: {stop.why}"
                if stop.why
                else f"withdrawn: the recipient left ({stop.exit_reason or stop.outcome.value})"
            ),
        )
    )
