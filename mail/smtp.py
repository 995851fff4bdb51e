"""SMTP: one message per session, with the moment it can no longer be taken back named.

RFC 1047: once the final "." of DATA has left, the peer may deliver the message even if
its reply never reaches us. So the sender is told right before that dot (`before_dot`),
and nothing earlier can deliver it: a session dropped before the dot delivers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from email.message import Message

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from config import Settings


class PermanentSendError(Exception):
    """The SMTP peer refused for good (5xx): retrying cannot help."""


class DotRefusedError(Exception):
    """The peer answered the final dot with a temporary refusal (4xx): it did not take the
    message, which may be sent again."""


class Mailer:
    """Sends each message in its own SMTP transaction (MAIL, RCPT, DATA), on sessions kept
    open between messages (up to `IDLE_SESSIONS`): connecting and greeting cost as much as a
    message. `before_dot` runs once the peer has taken the recipient and the whole content,
    before the final dot: if it raises, the session is dropped and the peer discards what
    it got (RFC 5321 §4.1.1.4)."""

    IDLE_SESSIONS = 32

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[aiosmtplib.SMTP] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        await smtp.connect()
        return smtp

    async def _session(self, sender: str) -> aiosmtplib.SMTP:
        """A session with MAIL accepted: an idle one if it still answers, else a new one."""
        while self._idle:
            smtp = self._idle.pop()
            if not smtp.is_connected:
                continue
            try:
                await smtp.mail(sender)
                return smtp
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException):
                # The peer closed it while idle (or refuses to go on): nothing was sent.
                smtp.close()
        smtp = await self._connect()
        try:
            await smtp.mail(sender)
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def send(
        self,
        message: Message,
        sender: str,
        recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:
        content = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message.as_bytes()))
        try:
            smtp = await self._session(sender)
        except aiosmtplib.SMTPResponseException as error:
            raise _permanent(error) from error
        reusable = False
        try:
            await smtp.rcpt(recipient)
            started = await smtp.execute_command(b"DATA")
            if started.code != 354:
                raise aiosmtplib.SMTPResponseException(started.code, started.message)
            assert smtp.protocol is not None
            smtp.protocol.write(content)
            ended = await _whole(self._check_then_dot(smtp, before_dot))
            if ended.code >= 500:
                raise aiosmtplib.SMTPResponseException(ended.code, ended.message)
            if ended.code != 250:
                reusable = True  # the transaction is over: the session serves the next
                raise DotRefusedError(f"{ended.code} {ended.message}")
            reusable = True
        except aiosmtplib.SMTPResponseException as error:
            # Every refusal, from RCPT to the dot: a 5xx is for good.
            raise _permanent(error) from error
        finally:
            # Mid-DATA (or after anything unforeseen) the session is dropped, never reused:
            # a QUIT there would be read as content.
            if reusable and len(self._idle) < self.IDLE_SESSIONS:
                self._idle.append(smtp)
            else:
                smtp.close()

    @staticmethod
    async def _check_then_dot(
        smtp: aiosmtplib.SMTP, before_dot: Callable[[], Awaitable[None]]
    ) -> aiosmtplib.SMTPResponse:
        await before_dot()
        # The terminator alone is a line of its own: ".\r\n".
        return await smtp.execute_command(b".")

    async def close(self) -> None:
        """Say goodbye to the idle sessions (a worker stopping)."""
        idle, self._idle = self._idle, []
        for smtp in idle:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


async def _whole(step: Awaitable[aiosmtplib.SMTPResponse]) -> aiosmtplib.SMTPResponse:
    """Runs `step` to its end even if the send is cancelled meanwhile (a heartbeat that
    timed out cancels the attempt): once the last check has said `sending`, the dot must
    follow, or the store would count as possibly delivered a message that never left.
    The cancellation is raised once the step is over."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _permanent(error: aiosmtplib.SMTPResponseException) -> Exception:
    if error.code >= 500:
        return PermanentSendError(f"{error.code} {error.message}")
    return error
