"""Signed links in e-mails: an unsubscribe token names one candidate of one company, an
open token (the tracking pixel's) one message of one company; neither can be forged, nor
turned into another candidate's or another message's, nor one kind into the other."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

# Test sends carry a token for candidate 0: valid, and it unsubscribes no one.
TEST_CANDIDATE = 0


@dataclass(frozen=True)
class UnsubscribeToken:
    company_id: int
    candidate_id: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class OpenToken:
    company_id: int
    message_id: int


def _signature(secret: str, payload: str, purpose: str) -> str:
    digest = hmac.new(secret.encode(), f"{purpose}:{payload}".encode(), hashlib.sha256)
    return _b64(digest.digest())


def _sign(secret: str, purpose: str, company_id: int, subject_id: int) -> str:
    payload = f"{company_id}.{subject_id}"
    return f"{payload}.{_signature(secret, payload, purpose)}"


def _verify(secret: str, purpose: str, token: str) -> tuple[int, int] | None:
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii() or not all(p.isdigit() for p in parts[:2]):
        return None
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_signature(secret, payload, purpose), parts[2]):
        return None
    return int(parts[0]), int(parts[1])


def sign_unsubscribe(secret: str, company_id: int, candidate_id: int) -> str:
    return _sign(secret, "unsubscribe", company_id, candidate_id)


def verify_unsubscribe(secret: str, token: str) -> UnsubscribeToken | None:
    """The token's company and candidate, or None when it was not signed by us."""
    signed = _verify(secret, "unsubscribe", token)
    if signed is None:
        return None
    return UnsubscribeToken(company_id=signed[0], candidate_id=signed[1])


def sign_open(secret: str, company_id: int, message_id: int) -> str:
    """The pixel's token: it names the message's row (messages.id)."""
    return _sign(secret, "open", company_id, message_id)


def verify_open(secret: str, token: str) -> OpenToken | None:
    """The token's company and message, or None when it was not signed by us (for this)."""
    signed = _verify(secret, "open", token)
    if signed is None:
        return None
    return OpenToken(company_id=signed[0], message_id=signed[1])


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{token}"


def unsubscribe_mailto(mail_domain: str, token: str) -> str:
    return f"mailto:unsubscribe@{mail_domain}?subject=unsubscribe%20{token}"


def open_pixel_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/opens/{token}"
