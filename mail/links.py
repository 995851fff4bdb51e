"""Signed links in e-mails: an unsubscribe token names one candidate of one company and
cannot be forged, nor turned into another candidate's."""

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


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), f"unsubscribe:{payload}".encode(), hashlib.sha256)
    return _b64(digest.digest())


def sign_unsubscribe(secret: str, company_id: int, candidate_id: int) -> str:
    payload = f"{company_id}.{candidate_id}"
    return f"{payload}.{_signature(secret, payload)}"


def verify_unsubscribe(secret: str, token: str) -> UnsubscribeToken | None:
    """The token's company and candidate, or None when it was not signed by us."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii() or not all(p.isdigit() for p in parts[:2]):
        return None
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_signature(secret, payload), parts[2]):
        return None
    return UnsubscribeToken(company_id=int(parts[0]), candidate_id=int(parts[1]))


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{token}"


def unsubscribe_mailto(mail_domain: str, token: str) -> str:
    return f"mailto:unsubscribe@{mail_domain}?subject=unsubscribe%20{token}"
