"""Candidates over HTTP: written by services and admins with consent, safe to retry."""

from __future__ import annotations

import httpx
import pytest

from api.schemas import MAX_FIELD_VALUE
from store.session import SessionFactory
from tests.builders import CONSENT, saved_campaign, touchpoint
from tests.conftest import Tenant
from tests.snapshot import unchanged

BODY = {
    "first_name": "Katherine",
    "last_name": "Johnson",
    "email": "kj@example.org",
    "custom_fields": {"role": "analyst"},
    "consent": CONSENT,
}


async def test_a_service_creates_a_candidate_with_its_consent_record(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await api.post("/candidates", json=BODY, headers=tenant.service)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["consent"] == {
        "given_at": "2026-01-15T10:00:00Z",
        "method": "web form opt-in",
        "source": "careers site",
    }
    read = await api.get(f"/candidates/{created['id']}", headers=tenant.recruiter)
    assert read.status_code == 200 and read.json()["custom_fields"] == {"role": "analyst"}
    updated = await api.patch(
        f"/candidates/{created['id']}", json={"email": "kj@new.example"}, headers=tenant.admin
    )
    assert updated.status_code == 200 and updated.json()["email"] == "kj@new.example"
    assert updated.json()["first_name"] == "Katherine"


async def test_a_repeated_idempotency_key_answers_the_first_answer(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    headers = {**tenant.service, "Idempotency-Key": "create-kj-1"}
    first = await api.post("/candidates", json=BODY, headers=headers)
    async with unchanged(sessions):
        again = await api.post("/candidates", json=BODY, headers=headers)
        assert (again.status_code, again.json()) == (201, first.json())
        different = await api.post("/candidates", json={**BODY, "first_name": "K"}, headers=headers)
        assert different.status_code == 422
        assert "used for a different request" in different.json()["detail"]
    listed = await api.get("/candidates", headers=tenant.admin)
    assert listed.json()["total"] == 1


async def test_bad_candidates_are_refused_naming_the_problem(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    created = (await api.post("/candidates", json=BODY, headers=tenant.service)).json()
    async with unchanged(sessions):
        unknown = await api.post(
            "/candidates", json={**BODY, "custom_fields": {"salary": "1"}}, headers=tenant.service
        )
        assert unknown.status_code == 422
        assert "Unknown custom field 'salary'" in unknown.json()["detail"]
        email = await api.post(
            "/candidates", json={**BODY, "email": "nope"}, headers=tenant.service
        )
        assert email.status_code == 422 and "email" in email.json()["detail"]
        naive = await api.post(
            "/candidates",
            json={**BODY, "consent": {**CONSENT, "given_at": "2026-01-15T10:00:00"}},
            headers=tenant.service,
        )
        assert naive.status_code == 422 and "consent.given_at" in naive.json()["detail"]
        recruiter = await api.post("/candidates", json=BODY, headers=tenant.recruiter)
        assert recruiter.status_code == 403
        anonymous = await api.post("/candidates", json=BODY)
        assert anonymous.status_code == 401
        other = await api.get(f"/candidates/{created['id']}", headers=other_tenant.admin)
        assert other.status_code == 404
        patch_other = await api.patch(
            f"/candidates/{created['id']}", json={"first_name": "X"}, headers=other_tenant.service
        )
        assert patch_other.status_code == 404
        service_reads = await api.get("/candidates", headers=tenant.service)
        assert service_reads.status_code == 403
        for field in ("first_name", "last_name", "custom_fields"):
            null = await api.patch(
                f"/candidates/{created['id']}", json={field: None}, headers=tenant.service
            )
            assert null.status_code == 422 and f"{field} cannot be null" in null.json()["detail"]
        huge = await api.get("/candidates/1099511627776", headers=tenant.admin)
        assert huge.status_code == 422 and "candidate_id" in huge.json()["detail"]
    assert (await api.get("/candidates", headers=other_tenant.admin)).json()["total"] == 0


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("josé@exämple.org", "internationalized characters before the @-sign"),
        ("用户@例子.广告", "internationalized characters before the @-sign"),
        ("=?UTF-8?Q?e7=0D=0A?=@r.example", "its local part is an RFC 2047 encoded word"),
    ],
)
async def test_an_address_we_cannot_deliver_to_is_refused_when_written(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, address: str, says: str
) -> None:
    created = (await api.post("/candidates", json=BODY, headers=tenant.service)).json()
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi")])
    async with unchanged(sessions):
        for response in (
            await api.post("/candidates", json={**BODY, "email": address}, headers=tenant.service),
            await api.patch(
                f"/candidates/{created['id']}", json={"email": address}, headers=tenant.service
            ),
            await api.post(
                f"/campaigns/{cid}/test", json={"recipients": [address]}, headers=tenant.admin
            ),
        ):
            assert response.status_code == 422, response.text
            assert "is not an address we can deliver to" in response.json()["detail"]
            assert says in response.json()["detail"]


@pytest.mark.parametrize("address", ["x@xn--exmple-cua.org", "x@exämple.org", "X@Exämple.ORG"])
async def test_an_internationalized_domain_is_kept_in_its_ascii_form(
    api: httpx.AsyncClient, tenant: Tenant, address: str
) -> None:
    response = await api.post(
        "/candidates", json={**BODY, "email": address}, headers=tenant.service
    )
    assert response.status_code == 201, response.text
    assert response.json()["email"].lower() == "x@xn--exmple-cua.org"


async def test_a_custom_field_value_longer_than_its_limit_is_refused(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    async with unchanged(sessions):
        response = await api.post(
            "/candidates",
            json={**BODY, "custom_fields": {"role": "x" * (MAX_FIELD_VALUE + 1)}},
            headers=tenant.service,
        )
    assert response.status_code == 422
    assert (
        f"custom_fields.role: string should have at most {MAX_FIELD_VALUE} characters"
        in (response.json()["detail"])
    )


@pytest.mark.parametrize("query", ["offset=9223372036854775808", "offset=-1", "limit=1001"])
async def test_every_integer_of_a_query_is_bounded(
    api: httpx.AsyncClient, tenant: Tenant, query: str
) -> None:
    cid = await saved_campaign(api, tenant, [touchpoint(tenant, "Hi")])
    for path in ("/candidates", f"/campaigns/{cid}/recipients"):
        response = await api.get(f"{path}?{query}", headers=tenant.admin)
        assert response.status_code == 422, response.text
        assert query.split("=")[0] in response.json()["detail"]
    largest = await api.get("/candidates?offset=2147483647", headers=tenant.admin)
    assert largest.status_code == 200 and largest.json()["items"] == []
