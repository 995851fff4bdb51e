"""SMTP: one message per session, with the moment it can no longer be taken back named.

RFC 1047: once the final "." of DATA has left, the peer may deliver the message even if
its reply never reaches us. So the sender is told right before that dot (`before_dot`),
and nothing earlier can deliver it: a session dropped before the dot delivers nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from config import Settings


class PermanentSendError(Exception):
    """The SMTP peer refused for good (5xx): retrying cannot help."""


def _refused(response: aiosmtplib.SMTPResponse) -> Exception:
    if response.code >= 500:
        return PermanentSendError(f"{response.code} {response.message}")
    return aiosmtplib.SMTPResponseException(response.code, response.message)


class Mailer:
    """Sends one message per SMTP session. `before_dot` runs once the peer has taken the
    recipient and the whole content, before the final dot: if it raises, the session is
    dropped and the peer discards what it got (RFC 5321 §4.1.1.4)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(
        self,
        message: EmailMessage,
        sender: str,
        recipient: str,
        before_dot: Callable[[], Awaitable[None]],
    ) -> None:
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        content = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message.as_bytes()))
        await smtp.connect()
        in_data = False
        try:
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
            started = await smtp.execute_command(b"DATA")
            if started.code != 354:
                raise _refused(started)
            in_data = True
            assert smtp.protocol is not None
            smtp.protocol.write(content)
            await before_dot()
            # The terminator alone is a line of its own: ".\r\n".
            ended = await smtp.execute_command(b".")
            in_data = False
            if ended.code != 250:
                raise _refused(ended)
        except aiosmtplib.SMTPResponseException as error:
            if error.code >= 500:
                raise PermanentSendError(f"{error.code} {error.message}") from error
            raise
        finally:
            if in_data:
                # Mid-DATA a QUIT would be read as content: drop the session instead.
                smtp.close()
            else:
                try:
                    await smtp.quit()
                except aiosmtplib.SMTPException:
                    smtp.close()
