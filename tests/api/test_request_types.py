"""A request body's integers and booleans are JSON's own: `true` is not 1, "3" is not 3,
"yes" is not true; 3.0 is the integer 3, as JSON Schema has it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from store.session import SessionFactory
from tests.builders import add_candidate
from tests.conftest import Tenant
from tests.snapshot import unchanged


async def _job(api: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """A job whose stages carry no actions: nothing runs behind a request."""
    created = await api.post("/jobs", json={"title": "Type checker"}, headers=tenant.admin)
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()
    stages = [{"id": s["id"], "name": s["name"]} for s in job["stages"]]
    put = await api.put(
        f"/jobs/{job['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
    )
    assert put.status_code == 200, put.text
    assert all(s["actions"] == [] for s in put.json()["stages"]), put.text
    job["stages"] = put.json()["stages"]
    return job


def _refused(answer: httpx.Response, field: str) -> str:
    """The 422's sentence, once it names `field` (in the sentence and in its problems)."""
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert f"{field}: " in body["detail"], body
    assert [e["loc"] for e in body["errors"]] == [["body", field]], body
    detail: str = body["detail"]
    return detail


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (True, "true is not an integer"),
        ("3", "'3' is not an integer"),
        (3.5, "fractional part"),
    ],
)
async def test_an_application_candidate_id_that_is_no_json_integer_is_422(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, sent: object, said: str
) -> None:
    job = await _job(api, tenant)
    await add_candidate(api, tenant)
    async with unchanged(sessions):
        answer = await api.post(
            f"/jobs/{job['id']}/applications", json={"candidate_id": sent}, headers=tenant.service
        )
    assert said in _refused(answer, "candidate_id")


async def test_an_application_candidate_id_of_3_0_is_the_integer_3(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    job = await _job(api, tenant)
    candidate = await add_candidate(api, tenant)
    answer = await api.post(
        f"/jobs/{job['id']}/applications",
        json={"candidate_id": float(candidate)},
        headers=tenant.service,
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["candidate_id"] == candidate
    assert isinstance(answer.json()["candidate_id"], int)


@pytest.mark.parametrize("sent", ["yes", "true", 1])
async def test_a_move_whose_run_actions_is_no_json_boolean_is_422(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, sent: object
) -> None:
    job = await _job(api, tenant)
    candidate = await add_candidate(api, tenant)
    applied = await api.post(
        f"/jobs/{job['id']}/applications", json={"candidate_id": candidate}, headers=tenant.service
    )
    assert applied.status_code == 201, applied.text
    path = f"/jobs/{job['id']}/candidates/{candidate}/moves"
    stage = job["stages"][1]["id"]
    async with unchanged(sessions):
        answer = await api.post(
            path, json={"stage_id": stage, "run_actions": sent}, headers=tenant.recruiter
        )
    assert "valid boolean" in _refused(answer, "run_actions")
    # The same move with a boolean is taken.
    moved = await api.post(
        path, json={"stage_id": stage, "run_actions": True}, headers=tenant.recruiter
    )
    assert moved.status_code == 201, moved.text
    assert moved.json()["to_stage_id"] == stage
