"""A MIME message: its addresses, its Message-ID and its headers (unsubscribe ones included)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from email_validator import EmailNotValidError, validate_email

from errors import clause
from mail.rendering import RenderedEmail, header_text
from mail.smtp import PermanentSendError


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
    # Campaign e-mails carry their unsubscribe links and campaign; a stage action's
    # e-mail is about the candidate's own application and carries neither.
    unsubscribe_url: str | None
    unsubscribe_mailto: str | None
    campaign_id: int | None
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
    if envelope.unsubscribe_url is not None:
        # RFC 8058: a one-click POST to the https URL unsubscribes; mailto for older clients.
        links = [envelope.unsubscribe_url, envelope.unsubscribe_mailto]
        message["List-Unsubscribe"] = ", ".join(f"<{link}>" for link in links if link)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if envelope.campaign_id is not None:
        message["X-Nurture-Campaign"] = str(envelope.campaign_id)
    if envelope.is_test:
        message["X-Nurture-Test"] = "yes"
    message.set_content(email.text)
    if email.html is not None:
        message.add_alternative(email.html, subtype="html")
    return message
