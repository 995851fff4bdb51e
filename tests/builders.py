"""Builds what tests need through the API itself: candidates and campaigns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from store.models import Enrolment
from store.session import SessionFactory
from tests.conftest import Tenant
from workflows.contracts import SendTouchpoint

CONSENT = {
    "given_at": "2026-01-15T10:00:00Z",
    "method": "web form opt-in",
    "source": "careers site",
}


async def add_candidate(
    api: httpx.AsyncClient, tenant: Tenant, *, first_name: str = "Marie", last_name: str = "Curie",
    email: str | None = "marie@example.org", consent: bool = True, **extra: Any,
) -> int:  # fmt: skip
    body: dict[str, Any] = {
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        **extra,
    }
    if consent:
        body["consent"] = CONSENT
    response = await api.post("/candidates", json=body, headers=tenant.service)
    assert response.status_code == 201, response.text
    candidate_id: int = response.json()["id"]
    return candidate_id


BODY = "Hello {{ first_name }},\n\nNews from {{ company_name }}.\n\n{{ sender_name }}"


def touchpoint(
    tenant: Tenant, subject: str, *, send_time: str = "09:00", interval_days: int | None = None,
    format: str = "plain", body: str = BODY,
) -> dict[str, Any]:  # fmt: skip
    tp: dict[str, Any] = {
        "subject": subject,
        "body": body,
        "format": format,
        "sender_user_id": tenant.admin_id,
        "send_time": send_time,
    }
    if interval_days is not None:
        tp["interval_days"] = interval_days
    return tp


async def saved_campaign(
    api: httpx.AsyncClient, tenant: Tenant, touchpoints: list[dict[str, Any]],
    exit_options: list[str] | None = None,
) -> int:  # fmt: skip
    response = await api.post(
        "/campaigns",
        json={
            "name": "Talent pool",
            "exit_options": exit_options or [],
            "touchpoints": touchpoints,
        },
        headers=tenant.admin,
    )
    assert response.status_code == 201, response.text
    campaign_id: int = response.json()["id"]
    saved = await api.post(f"/campaigns/{campaign_id}/save", headers=tenant.admin)
    assert saved.status_code == 200, saved.text
    return campaign_id


async def enrol(
    api: httpx.AsyncClient, tenant: Tenant, campaign_id: int, candidate_id: int
) -> None:
    response = await api.post(
        f"/campaigns/{campaign_id}/recipients",
        json={"candidate_id": candidate_id},
        headers=tenant.admin,
    )
    assert response.status_code == 201, response.text


async def due_touchpoint(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> SendTouchpoint:
    """A recipient whose first touchpoint a test sends by calling the activity itself, as
    the worker would. Its workflow sleeps until tomorrow meanwhile, as long as the test
    server's clock does not move."""
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "Hello")])
    await enrol(api, tenant, campaign, await add_candidate(api, tenant))
    async with sessions() as session:
        enrolment = await session.scalar(select(Enrolment))
    assert enrolment is not None
    return SendTouchpoint(
        enrolment_id=enrolment.id,
        run=enrolment.run,
        position=0,
        scheduled_at=datetime(2030, 1, 1, 8, tzinfo=UTC),
        next_position=None,
        next_send_at=None,
    )
