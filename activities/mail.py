"""E-mail on the wire: building a MIME message with its unsubscribe headers, and SMTP."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from activities.rendering import RenderedEmail, header_text
from config import Settings
from errors import clause


class PermanentSendError(Exception):
    """The SMTP peer refused for good (5xx): retrying cannot help."""


class UndeliverableAddressError(ValueError):
    """An address we could never deliver to, refused when it is written."""


# An RFC 2047 encoded word: a MIME library decodes it back into any bytes, line breaks too.
_ENCODED_WORD = re.compile(r"=\?.*\?=")


def deliverable_address(value: str) -> str:
    """The address as we store and send it: ASCII only, an internationalized domain in its
    IDNA (punycode) form. A non-ASCII local part needs SMTPUTF8 on every relay on the
    way, which we cannot promise, so it is refused rather than retried forever."""
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise UndeliverableAddressError(
            f"'{value}' is not an address we can deliver to: {clause(str(error))}"
        ) from None
    # With SMTPUTF8 refused, a valid address always has its ASCII form.
    local, _, domain = (checked.ascii_email or checked.normalized).rpartition("@")
    if _ENCODED_WORD.search(local):
        raise UndeliverableAddressError(
            f"'{value}' is not an address we can deliver to: its local part is an "
            "RFC 2047 encoded word"
        )
    return f"{local}@{domain}"


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
    for address in (envelope.sender_address, envelope.recipient_address):
        if not address.isascii():
            # Written before addresses were checked: no retry can ever deliver it.
            raise PermanentSendError(f"the address {address!r} is not ASCII; it cannot be sent")
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
