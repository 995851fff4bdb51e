"""A MIME message: its addresses, its Message-ID and its headers (unsubscribe ones included)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.policy import compat32
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


# The stdlib's legacy message API (compat32): a quarter of the CPU of EmailMessage's
# header registry, which parses back every header it is given. It checks nothing, so what
# goes in is checked here: an ASCII value is one line, an address is ASCII, and text that
# is not ASCII goes in as a Header, which the generator encodes (RFC 2047).
# Lines are folded only beyond RFC 5322's 998: an ASCII value (the signed unsubscribe URL)
# is never cut, and folding ASCII at 78 would add spaces where compat32 splits it (at a
# comma, say); an encoded value is folded between encoded words, which decoding joins.
WIRE = compat32.clone(linesep="\r\n", max_line_length=998)

# What needs it goes in UTF-8, quoted-printable: readable, and safe over 7-bit hops.
_UTF8 = Charset("utf-8")
_UTF8.header_encoding = _UTF8.body_encoding = QP


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        # Names and subjects are cleaned before (mail.rendering.header_text), the rest
        # are ours: a guard that no change may slip a header in.
        raise PermanentSendError("a header value has a line break; it is not sent")
    return value


def _address(header: str, name: str, address: str) -> str | Header:
    name = header_text(name)
    if name.isascii():
        return formataddr((name, address))  # quoted where it needs to be
    mailbox = Header(name, _UTF8, header_name=header)  # its first line counts the name
    mailbox.append(f" <{address}>", "us-ascii")
    return mailbox


def _text(header: str, value: str) -> str | Header:
    return value if value.isascii() else Header(value, _UTF8, header_name=header)


# Line breaks on the wire; str.splitlines would also split on form feeds and the like.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _fill(part: Message, text: str, subtype: str) -> None:
    if text.isascii() and all(len(line) <= 998 for line in _LINE_BREAK.split(text)):
        part.set_payload(text)
        part["MIME-Version"] = "1.0"
        part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        part["Content-Transfer-Encoding"] = "7bit"
    else:
        part.set_payload(text, _UTF8)
        part.set_type(f"text/{subtype}")


def _part(text: str, subtype: str) -> Message:
    part = Message(policy=WIRE)
    _fill(part, text, subtype)
    return part


def build_message(envelope: Envelope, email: RenderedEmail) -> Message:
    for address in (envelope.sender_address, envelope.recipient_address):
        if not address.isascii():
            # Written before addresses were checked: no retry can ever deliver it.
            raise PermanentSendError(f"the address {address!r} is not ASCII; it cannot be sent")
    message: Message[str, str | Header] = Message(policy=WIRE)
    headers: dict[str, str | Header] = {
        "From": _address("From", envelope.sender_name, envelope.sender_address),
        "To": _address("To", envelope.recipient_name, envelope.recipient_address),
        "Subject": _text(
            "Subject", f"[TEST] {email.subject}" if envelope.is_test else email.subject
        ),
        "Date": format_datetime(envelope.date),
        "Message-ID": envelope.message_id,
    }
    if envelope.unsubscribe_url is not None:
        # RFC 8058: a one-click POST to the https URL unsubscribes; mailto for older clients.
        links = [envelope.unsubscribe_url, envelope.unsubscribe_mailto]
        headers["List-Unsubscribe"] = ", ".join(f"<{link}>" for link in links if link)
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if envelope.campaign_id is not None:
        headers["X-Nurture-Campaign"] = str(envelope.campaign_id)
    if envelope.is_test:
        headers["X-Nurture-Test"] = "yes"
    for name, value in headers.items():
        message[name] = value if isinstance(value, Header) else _one_line(value)
    if email.html is None:
        _fill(message, email.text, "plain")
    else:
        message["MIME-Version"] = "1.0"
        message["Content-Type"] = "multipart/alternative"
        message.attach(_part(email.text, "plain"))
        message.attach(_part(email.html, "html"))
    return message
