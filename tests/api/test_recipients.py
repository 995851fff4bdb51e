"""Recipients over HTTP: adding one or many, refusals with reasons, the list, tenancy."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from store.session import SessionFactory
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Tenant
from tests.snapshot import unchanged
from workflows.contracts import nurture_workflow_id


async def _campaign(api: httpx.AsyncClient, tenant: Tenant) -> int:
    return await saved_campaign(
        api, tenant, [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=7)]
    )


async def test_adding_a_candidate_starts_their_workflow_and_lists_them(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    cid = await _campaign(api, tenant)
    candidate = await add_candidate(api, tenant, first_name="Ada", last_name="Lovelace")
    response = await api.post(
        f"/campaigns/{cid}/recipients", json={"candidate_id": candidate}, headers=tenant.admin
    )
    assert response.status_code == 201
    assert response.json()["result"] == "added"
    handle = env.client.get_workflow_handle(nurture_workflow_id(cid, candidate))
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    listed = (await api.get(f"/campaigns/{cid}/recipients", headers=tenant.admin)).json()
    assert listed["total"] == 1
    [row] = listed["items"]
    assert (row["name"], row["status"], row["next_touchpoint"]) == ("Ada Lovelace", "active", 1)
    assert row["next_send_at_local"].endswith("T09:00:00+01:00") or row[
        "next_send_at_local"
    ].endswith("T09:00:00+02:00")

    again = await api.post(
        f"/campaigns/{cid}/recipients", json={"candidate_id": candidate}, headers=tenant.admin
    )
    assert again.status_code == 200
    assert again.json()["result"] == "already_active"
    assert "nothing changed" in again.json()["detail"]


async def test_candidates_who_may_not_be_contacted_are_refused_with_the_reason(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    cid = await _campaign(api, tenant)
    no_email = await add_candidate(api, tenant, email=None)
    no_consent = await add_candidate(api, tenant, consent=False, email="x@example.org")
    gone = await add_candidate(api, tenant, email="gone@example.org")
    unsubscribed = await api.post(
        "/events",
        json={"id": "u-1", "type": "unsubscribed", "candidate_id": gone},
        headers=tenant.service,
    )
    assert unsubscribed.status_code == 200
    cases = [
        (no_email, 409, "has no e-mail address"),
        (no_consent, 409, "has not consented"),
        (gone, 409, "unsubscribed on"),
        (424242, 404, "Candidate 424242 does not exist"),
    ]
    for candidate, status, says in cases:
        async with unchanged(sessions):
            response = await api.post(
                f"/campaigns/{cid}/recipients",
                json={"candidate_id": candidate},
                headers=tenant.admin,
            )
        assert response.status_code == status, response.text
        assert says in response.json()["detail"]


async def test_a_candidate_who_left_comes_back_only_when_asked(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    cid = await _campaign(api, tenant)
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, cid, candidate)
    removed = await api.delete(f"/campaigns/{cid}/recipients/{candidate}", headers=tenant.admin)
    assert removed.status_code == 200
    refused = await api.post(
        f"/campaigns/{cid}/recipients", json={"candidate_id": candidate}, headers=tenant.admin
    )
    assert refused.status_code == 409
    assert "already left this campaign (removed)" in refused.json()["detail"]
    assert "re_enrol" in refused.json()["detail"]

    back = await api.post(
        f"/campaigns/{cid}/recipients",
        json={"candidate_id": candidate, "re_enrol": True},
        headers=tenant.admin,
    )
    assert back.status_code == 201 and back.json()["result"] == "added"
    handle = env.client.get_workflow_handle(nurture_workflow_id(cid, candidate))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    listed = (await api.get(f"/campaigns/{cid}/recipients", headers=tenant.admin)).json()
    assert [r["status"] for r in listed["items"]] == ["active"]


async def test_a_bulk_add_reports_one_result_per_candidate_and_starts_the_added(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant,

) -> None:  # fmt: skip
    cid = await _campaign(api, tenant)
    fine = [await add_candidate(api, tenant, email=f"c{i}@example.org") for i in range(3)]
    no_email = await add_candidate(api, tenant, email=None)
    foreign = await add_candidate(api, other_tenant)
    await enrol(api, tenant, cid, fine[0])
    response = await api.post(
        f"/campaigns/{cid}/recipients/bulk",
        json={"candidate_ids": [*fine, no_email, foreign, fine[1]]},
        headers=tenant.admin,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert [(r["candidate_id"], r["result"], r["reason"]) for r in body["results"]] == [
        (fine[0], "already_active", None),
        (fine[1], "added", None),
        (fine[2], "added", None),
        (no_email, "refused", "no_email"),
        (foreign, "refused", "not_found"),
        (fine[1], "already_active", None),
    ]
    assert (body["added"], body["already_active"], body["refused"]) == (2, 2, 2)

    batch = f"/campaigns/{cid}/recipients/batches/{body['batch_id']}"
    for _ in range(200):
        progress = (await api.get(batch, headers=tenant.admin)).json()
        if progress["finished_at"]:
            break
        await asyncio.sleep(0.05)
    assert (progress["added"], progress["started"]) == (2, 2)
    for candidate in fine[1:]:
        handle = env.client.get_workflow_handle(nurture_workflow_id(cid, candidate))
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_recipients_cannot_join_a_draft_and_stay_within_their_company(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    draft = await api.post(
        "/campaigns",
        json={"name": "Draft", "touchpoints": [touchpoint(tenant, "One")]},
        headers=tenant.admin,
    )
    candidate = await add_candidate(api, tenant)
    cid = await _campaign(api, tenant)
    async with unchanged(sessions):
        response = await api.post(
            f"/campaigns/{draft.json()['id']}/recipients",
            json={"candidate_id": candidate},
            headers=tenant.admin,
        )
        assert response.status_code == 409 and "is a draft" in response.json()["detail"]
        other = await api.post(
            f"/campaigns/{cid}/recipients",
            json={"candidate_id": candidate},
            headers=other_tenant.admin,
        )
        assert other.status_code == 404
        listing = await api.get(f"/campaigns/{cid}/recipients", headers=other_tenant.admin)
        assert listing.status_code == 404
        pause = await api.post(
            f"/campaigns/{cid}/recipients/{candidate}/pause", headers=tenant.admin
        )
        assert pause.status_code == 404 and "is not a recipient" in pause.json()["detail"]
        recruiter = await api.get(f"/campaigns/{cid}/recipients", headers=tenant.recruiter)
        assert recruiter.status_code == 403
        empty = await api.post(
            f"/campaigns/{cid}/recipients/bulk", json={"candidate_ids": []}, headers=tenant.admin
        )
        assert empty.status_code == 422 and "candidate_ids" in empty.json()["detail"]
        too_many = await api.post(
            f"/campaigns/{cid}/recipients/bulk",
            json={"candidate_ids": list(range(1, 5002))},
            headers=tenant.admin,
        )
        assert too_many.status_code == 422 and "at most 5000" in too_many.json()["detail"]


async def test_pausing_twice_is_harmless_and_resuming_an_active_recipient_is_refused(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    cid = await _campaign(api, tenant)
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, cid, candidate)
    resume = await api.post(f"/campaigns/{cid}/recipients/{candidate}/resume", headers=tenant.admin)
    assert resume.status_code == 409 and "is not paused" in resume.json()["detail"]
    for _ in range(2):
        pause = await api.post(
            f"/campaigns/{cid}/recipients/{candidate}/pause", headers=tenant.admin
        )
        assert pause.status_code == 200 and pause.json()["status"] == "paused"
    await api.delete(f"/campaigns/{cid}/recipients/{candidate}", headers=tenant.admin)
    late = await api.post(f"/campaigns/{cid}/recipients/{candidate}/pause", headers=tenant.admin)
    assert late.status_code == 409 and "has left campaign" in late.json()["detail"]


async def test_a_paused_recipient_shows_the_wait_left_not_a_send_that_will_not_happen(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant
) -> None:
    cid = await _campaign(api, tenant)
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, cid, candidate)
    [active] = (await api.get(f"/campaigns/{cid}/recipients", headers=tenant.admin)).json()["items"]
    due = datetime.fromisoformat(active["next_send_at"])
    assert active["remaining_wait_seconds"] is None and active["paused_at"] is None
    # An hour passes, or half the wait if less is left: the shared test server's clock
    # stands wherever earlier tests left it, and the pause must come before the send.
    await env.sleep(min(timedelta(hours=1), (due - await env.get_current_time()) / 2))
    paused = await api.post(f"/campaigns/{cid}/recipients/{candidate}/pause", headers=tenant.admin)
    assert paused.status_code == 200
    shown = paused.json()
    assert (shown["status"], shown["next_touchpoint"]) == ("paused", 1)
    assert shown["next_send_at"] is None and shown["next_send_at_local"] is None
    paused_at = datetime.fromisoformat(shown["paused_at"])
    assert shown["remaining_wait_seconds"] == int((due - paused_at).total_seconds())
    [listed] = (await api.get(f"/campaigns/{cid}/recipients", headers=tenant.admin)).json()["items"]
    assert listed == shown
