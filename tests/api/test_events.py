"""Events over HTTP: who may send them, and what a bad one is told."""

from __future__ import annotations

import httpx

from store.session import SessionFactory
from tests.builders import add_candidate
from tests.conftest import Tenant
from tests.snapshot import unchanged


async def test_bad_events_are_refused_and_change_nothing(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    candidate = await add_candidate(api, tenant)
    event = {"id": "e-1", "type": "applied", "candidate_id": candidate}
    async with unchanged(sessions):
        admin = await api.post("/events", json=event, headers=tenant.admin)
        assert admin.status_code == 403 and "service key" in admin.json()["detail"]
        other = await api.post("/events", json=event, headers=other_tenant.service)
        assert other.status_code == 404
        kind = await api.post("/events", json={**event, "type": "hired!"}, headers=tenant.service)
        assert kind.status_code == 422 and "type" in kind.json()["detail"]
        no_id = await api.post(
            "/events", json={"type": "applied", "candidate_id": candidate}, headers=tenant.service
        )
        assert no_id.status_code == 422
        assert "needs an id, or an Idempotency-Key" in no_id.json()["detail"]


async def test_an_idempotency_key_can_stand_for_the_event_id(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    candidate = await add_candidate(api, tenant)
    headers = {**tenant.service, "Idempotency-Key": "gw-77"}
    body = {"type": "connected", "candidate_id": candidate}
    first = await api.post("/events", json=body, headers=headers)
    again = await api.post("/events", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert (first.json()["event_id"], again.json()["duplicate"]) == ("gw-77", True)
