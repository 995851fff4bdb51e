"""E-mail on the wire: building a MIME message with its unsubscribe headers, and SMTP."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

import aiosmtplib

from activities.rendering import RenderedEmail, header_text
from config import Settings


class PermanentSendError(Exception):
    """The SMTP peer refused for good (5xx): retrying cannot help."""


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The Message-ID is a digest of the idempotency key: a resend would carry the same."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


@dataclass(frozen=True)
class Envelope:
    sender_name: str
    sender_address: str
    recipient_name: str
    recipient_address: str
    message_id: str
    date: datetime
    unsubscribe_url: str
    unsubscribe_mailto: str
    campaign_id: int
    is_test: bool


# Long header values (the signed unsubscribe URL) must not be folded into RFC 2047
# encoded words, which List-Unsubscribe forbids: fold only beyond RFC 5322's 998.
WIRE = SMTP.clone(max_line_length=998)


def build_message(envelope: Envelope, email: RenderedEmail) -> EmailMessage:
    message = EmailMessage(policy=WIRE)
    message["From"] = formataddr((header_text(envelope.sender_name), envelope.sender_address))
    message["To"] = formataddr((header_text(envelope.recipient_name), envelope.recipient_address))
    message["Subject"] = f"[TEST] {email.subject}" if envelope.is_test else email.subject
    message["Date"] = format_datetime(envelope.date)
    message["Message-ID"] = envelope.message_id
    # RFC 8058: a one-click POST to the https URL unsubscribes; mailto for older clients.
    message["List-Unsubscribe"] = f"<{envelope.unsubscribe_url}>, <{envelope.unsubscribe_mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["X-Nurture-Campaign"] = str(envelope.campaign_id)
    if envelope.is_test:
        message["X-Nurture-Test"] = "yes"
    message.set_content(email.text)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    return message


class Mailer:
    """Sends one message per SMTP session, calling `on_accepted` once the peer took the
    recipient and before DATA: from there on, a crash may leave the message delivered."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(
        self,
        message: EmailMessage,
        sender: str,
        recipient: str,
        on_accepted: Callable[[], Awaitable[None]],
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
        await smtp.connect()
        try:
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
            await on_accepted()
            await smtp.data(message.as_bytes())
        except aiosmtplib.SMTPResponseException as error:
            if error.code >= 500:
                raise PermanentSendError(f"{error.code} {error.message}") from error
            raise
        finally:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()
