"""Pipeline automation end to end: the API, the worker and a real SMTP peer, on the
time-skipping server, so a 3-day delay passes in a second."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from store.models import CandidateTag, Message, MessageSource, Note
from store.session import SessionFactory
from tests.builders import add_candidate
from tests.conftest import Inbox, Tenant
from workflows.stage_actions import StageActionsWorkflow

PARIS = ZoneInfo("Europe/Paris")

ACK = {
    "kind": "email",
    "email": {
        "subject": "Thanks for applying, {{ first_name }}",
        "body": "Hello {{ first_name }},\n\nWe read every application within 5 days.\n\n"
        "{{ sender_name }}",
    },
}


def email(subject: str, **timing: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "email": {"subject": subject, "body": "Hello {{ first_name }},\n\n{{ company_name }}"},
        **timing,
    }


async def job_with(
    api: httpx.AsyncClient, tenant: Tenant, actions: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """A job whose pipeline is the default one, with `actions` on the stages named."""
    created = await api.post("/jobs", json={"title": "Data engineer"}, headers=tenant.admin)
    assert created.status_code == 201, created.text
    job: dict[str, Any] = created.json()
    stages = [
        {"id": stage["id"], "name": stage["name"], "actions": actions.get(stage["name"], [])}
        for stage in job["stages"]
    ]
    put = await api.put(
        f"/jobs/{job['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
    )
    assert put.status_code == 200, put.text
    job["stages"] = put.json()["stages"]
    return job


def stage_id(job: dict[str, Any], name: str) -> int:
    found: int = next(s["id"] for s in job["stages"] if s["name"] == name)
    return found


async def apply(
    api: httpx.AsyncClient, tenant: Tenant, job: dict[str, Any], candidate: int, **extra: Any
) -> dict[str, Any]:
    response = await api.post(
        f"/jobs/{job['id']}/applications",
        json={"candidate_id": candidate, **extra},
        headers=tenant.service,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def move(
    api: httpx.AsyncClient, tenant: Tenant, job: dict[str, Any], candidate: int, stage: str,
    **extra: Any,
) -> httpx.Response:  # fmt: skip
    return await api.post(
        f"/jobs/{job['id']}/candidates/{candidate}/moves",
        json={"stage_id": stage_id(job, stage), **extra},
        headers=tenant.recruiter,
    )


async def settled(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    move_id: int,
    after: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    """The move once its workflow has ended, `after` skipped on the server's clock (a wait
    for the result alone does not skip it here)."""
    found = await api.get(f"/moves/{move_id}", headers=tenant.admin)
    body: dict[str, Any] = found.json()
    await env.sleep(after)
    if body["workflow_id"]:
        handle = env.client.get_workflow_handle_for(StageActionsWorkflow.run, body["workflow_id"])
        await handle.result()
    final: dict[str, Any] = (await api.get(f"/moves/{move_id}", headers=tenant.admin)).json()
    return final


async def test_a_new_job_copies_the_default_pipeline_and_later_edits_of_the_default_stay_out(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    default = await api.get("/pipeline", headers=tenant.recruiter)
    assert default.status_code == 200, default.text
    names = [s["name"] for s in default.json()["stages"]]
    assert names[0] == "Applied" and "Interview" in names
    first = await api.post("/jobs", json={"title": "Backend"}, headers=tenant.admin)
    stages = default.json()["stages"]
    renamed = [{"id": s["id"], "name": s["name"]} for s in stages] + [{"name": "Reference check"}]
    put = await api.put("/pipeline", json={"stages": renamed}, headers=tenant.admin)
    assert put.status_code == 200, put.text
    second = await api.post("/jobs", json={"title": "Frontend"}, headers=tenant.admin)
    assert "Reference check" not in [s["name"] for s in first.json()["stages"]]
    assert [s["name"] for s in second.json()["stages"]][-1] == "Reference check"
    # The first stage stays first, and the recruiter cannot edit at all.
    moved = [renamed[1], renamed[0], *renamed[2:]]
    refused = await api.put("/pipeline", json={"stages": moved}, headers=tenant.admin)
    assert refused.status_code == 422
    assert "applications enter" in refused.json()["detail"]
    denied = await api.put("/pipeline", json={"stages": renamed}, headers=tenant.recruiter)
    assert denied.status_code == 403


async def test_a_move_runs_its_immediate_actions_at_once_and_its_3_day_email_3_days_later(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    job = await job_with(
        api,
        tenant,
        {
            "Interview": [
                email("Your interview, {{ first_name }}"),
                email("How did it go?", delay_days=3),
                {"kind": "note", "note": {"text": "Interview invitation sent"}},
                {"kind": "tags", "tags": {"tags": ["interviewing", "2027"]}},
            ]
        },
    )
    candidate = await add_candidate(api, tenant, email="marie@example.org")
    await apply(api, tenant, job, candidate)
    moved = await move(api, tenant, job, candidate, "Interview")
    assert moved.status_code == 201, moved.text
    body = moved.json()
    moved_at = datetime.fromisoformat(body["created_at"])
    kinds = [(a["kind"], a["state"]) for a in body["actions"]]
    assert kinds.count(("email", "pending")) == 2
    delayed = max(body["actions"], key=lambda a: a["due_at"])
    assert datetime.fromisoformat(delayed["due_at"]).astimezone(PARIS) == (
        moved_at.astimezone(PARIS) + timedelta(days=3)
    )
    final = await settled(env, api, tenant, body["id"], timedelta(days=4))
    assert [a["state"] for a in final["actions"]] == ["done"] * 4
    box, _ = inbox
    mails = box.to("marie@example.org")
    assert [m["Subject"] for m in mails] == ["Your interview, Marie", "How did it go?"]
    # A message about the candidate's own application: no unsubscribe link or header.
    assert all(m["List-Unsubscribe"] is None for m in mails)
    assert "unsubscribe" not in mails[0].get_content().lower()
    assert mails[0]["From"] == "Rex Recruiter <rex@acme.example>"
    async with sessions() as session:
        notes = (await session.scalars(select(Note))).all()
        tags = {t.tag for t in await session.scalars(select(CandidateTag))}
        messages = (await session.scalars(select(Message))).all()
    assert [(n.text, n.author_user_id, n.move_action_id is not None) for n in notes] == [
        ("Interview invitation sent", None, True)
    ]
    assert tags == {"interviewing", "2027"}
    assert {m.source_kind for m in messages} == {MessageSource.STAGE_ACTION}


async def test_moving_again_after_a_day_cancels_the_3_day_email_and_says_so(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(api, tenant, {"Interview": [email("Follow-up", delay_days=3)]})
    candidate = await add_candidate(api, tenant, email="ada@example.org")
    await apply(api, tenant, job, candidate)
    first = (await move(api, tenant, job, candidate, "Interview")).json()
    await env.sleep(timedelta(days=1))
    second = await move(api, tenant, job, candidate, "Offer")
    assert second.status_code == 201, second.text
    [cancelled] = second.json()["cancelled"]
    assert cancelled["move_id"] == first["id"]
    assert cancelled["kind"] == "email"
    final = await settled(env, api, tenant, first["id"])
    [action] = final["actions"]
    assert (action["state"], action["reason"]) == ("cancelled", "moved to Offer")
    await env.sleep(timedelta(days=3))
    box, _ = inbox
    assert box.to("ada@example.org") == []


async def test_moving_back_must_say_whether_to_run_the_actions_again(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(
        api, tenant, {"Interview": [{"kind": "note", "note": {"text": "Interviewing"}}]}
    )
    candidate = await add_candidate(api, tenant, email="grace@example.org")
    await apply(api, tenant, job, candidate)
    assert (await move(api, tenant, job, candidate, "Interview")).status_code == 201
    assert (await move(api, tenant, job, candidate, "Offer")).status_code == 201
    asked = await move(api, tenant, job, candidate, "Interview")
    assert asked.status_code == 409
    assert "run_actions" in asked.json()["detail"]
    back = await move(api, tenant, job, candidate, "Interview", run_actions=False)
    assert back.status_code == 201, back.text
    assert back.json()["actions"] == [] and back.json()["workflow_id"] is None


async def test_an_imported_application_triggers_nothing_and_a_careers_site_one_acknowledges(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    ack = {**ACK, "email": {**ACK["email"], "sender_user_id": tenant.admin_id}}  # type: ignore[dict-item]
    job = await job_with(api, tenant, {"Applied": [ack]})
    imported = await add_candidate(api, tenant, email="imported@example.org")
    applied = await add_candidate(api, tenant, email="applied@example.org")
    silent = await apply(api, tenant, job, imported, source="import")
    assert silent["actions"] == [] and silent["workflow_id"] is None
    loud = await apply(api, tenant, job, applied)
    await settled(env, api, tenant, loud["id"])
    box, _ = inbox
    assert box.to("imported@example.org") == []
    [mail] = box.to("applied@example.org")
    assert mail["Subject"] == "Thanks for applying, Marie"
    assert mail["From"] == "Ada Admin <ada@acme.example>"


async def test_an_email_from_the_mover_needs_a_user_not_a_service_key(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(api, tenant, {"Screening": [email("Screening")]})
    # Applications come from services: the first stage's e-mails name their sender.
    stages = [{"id": s["id"], "name": s["name"]} for s in job["stages"]]
    stages[0]["actions"] = [ACK]
    refused_save = await api.put(
        f"/jobs/{job['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
    )
    assert refused_save.status_code == 422
    assert "name its sender" in refused_save.json()["detail"]
    candidate = await add_candidate(api, tenant)
    await apply(api, tenant, job, candidate)
    by_service = await api.post(
        f"/jobs/{job['id']}/candidates/{candidate}/moves",
        json={"stage_id": stage_id(job, "Screening")},
        headers=tenant.service,
    )
    assert by_service.status_code == 422
    assert "service key is no user" in by_service.json()["detail"]
    # Nothing of the refused move was kept: the admin's is the first into Screening.
    by_admin = await api.post(
        f"/jobs/{job['id']}/candidates/{candidate}/moves",
        json={"stage_id": stage_id(job, "Screening")},
        headers=tenant.admin,
    )
    assert by_admin.status_code == 201, by_admin.text
    await settled(env, api, tenant, by_admin.json()["id"])
    box, _ = inbox
    [mail] = box.to("marie@example.org")
    assert mail["From"] == "Ada Admin <ada@acme.example>"


async def test_a_cancelled_move_sends_nothing_and_its_actions_say_why(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(api, tenant, {"Interview": [email("Later", delay_hours=1)]})
    candidate = await add_candidate(api, tenant, email="cancel@example.org")
    await apply(api, tenant, job, candidate)
    made = (await move(api, tenant, job, candidate, "Interview")).json()
    cancelled = await api.post(f"/moves/{made['id']}/cancel", headers=tenant.recruiter)
    assert cancelled.status_code == 200, cancelled.text
    assert [c["action_id"] for c in cancelled.json()["cancelled"]] == [
        a["id"] for a in made["actions"]
    ]
    again = await api.post(f"/moves/{made['id']}/cancel", headers=tenant.recruiter)
    assert again.status_code == 409
    final = await settled(env, api, tenant, made["id"])
    assert [(a["state"], a["reason"]) for a in final["actions"]] == [
        ("cancelled", "the move was cancelled")
    ]
    await env.sleep(timedelta(hours=2))
    box, _ = inbox
    assert box.to("cancel@example.org") == []


async def test_another_companys_job_move_and_candidate_are_404(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    job = await job_with(api, tenant, {})
    candidate = await add_candidate(api, tenant)
    made = await apply(api, tenant, job, candidate)
    theirs = await add_candidate(api, other_tenant)
    assert (await api.get(f"/jobs/{job['id']}", headers=other_tenant.admin)).status_code == 404
    assert (await api.get(f"/moves/{made['id']}", headers=other_tenant.admin)).status_code == 404
    foreign = await api.post(
        f"/jobs/{job['id']}/applications", json={"candidate_id": theirs}, headers=tenant.service
    )
    assert foreign.status_code == 404
    assert "Candidate" in foreign.json()["detail"]


async def test_an_action_that_keeps_failing_is_retried_then_failed_and_the_others_complete(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(
        api,
        tenant,
        {
            "Screening": [
                email("Screening call"),
                {"kind": "note", "note": {"text": "Screening started"}},
            ]
        },
    )
    candidate = await add_candidate(api, tenant, email="down@example.org")
    await apply(api, tenant, job, candidate)
    box, _ = inbox
    box.refuse_with = "451 4.3.0 try again later"
    made = (await move(api, tenant, job, candidate, "Screening")).json()
    final = await settled(env, api, tenant, made["id"])
    by_kind = {a["kind"]: a for a in final["actions"]}
    assert by_kind["note"]["state"] == "done"
    assert by_kind["email"]["state"] == "failed"
    assert "451" in by_kind["email"]["reason"]
    assert box.to("down@example.org") == []


async def test_a_stage_email_has_no_unsubscribe_link_to_name_and_bad_actions_are_refused(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = (await api.post("/jobs", json={"title": "QA"}, headers=tenant.admin)).json()
    stages = [{"id": s["id"], "name": s["name"]} for s in created["stages"]]

    async def refused(action: dict[str, Any]) -> str:
        stages[1]["actions"] = [action]
        answer = await api.put(
            f"/jobs/{created['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
        )
        assert answer.status_code == 422, answer.text
        detail: str = str(answer.json()["detail"])
        return detail

    body = {"subject": "Hi", "body": "Stop: {{ unsubscribe_url }}"}
    assert "carries no unsubscribe link" in await refused({"kind": "email", "email": body})
    broken = {"kind": "email", "email": {"subject": "Hi\nBcc: x@example.org", "body": "x"}}
    assert "contains a line break" in await refused(broken)
    two = email("Hi", delay_days=1, delay_hours=2)
    assert "more than one of" in await refused(two)
    misplaced = {"kind": "note", "tags": {"tags": ["x"]}}
    assert "stages.1.actions.0.note.note" in await refused(misplaced)
    unknown = {"kind": "email", "email": {"subject": "Hi", "body": "x", "sender_user_id": 99999}}
    assert "not a user of this company" in await refused(unknown)
    # Nothing of a refused pipeline was kept.
    kept = (await api.get(f"/jobs/{created['id']}", headers=tenant.admin)).json()
    assert kept["stages"] == created["stages"]


async def _message_state(sessions: SessionFactory) -> str | None:
    async with sessions() as session:
        message = await session.scalar(select(Message))
    return message.state.value if message is not None else None


async def _until(check: Any, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "waited too long"
        await asyncio.sleep(0.01)


async def test_a_cancel_before_the_last_check_withdraws_the_email_and_lists_it(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    job = await job_with(api, tenant, {"Interview": [email("Invitation")]})
    candidate = await add_candidate(api, tenant, email="race@example.org")
    await apply(api, tenant, job, candidate)
    box, _ = inbox
    box.delay_seconds = 1.0  # the peer takes a second over RCPT: the send is mid-way
    made = (await move(api, tenant, job, candidate, "Interview")).json()

    async def prepared() -> bool:
        return await _message_state(sessions) == "prepared"

    await _until(prepared)
    cancelled = await api.post(f"/moves/{made['id']}/cancel", headers=tenant.recruiter)
    assert cancelled.status_code == 200, cancelled.text
    assert [c["kind"] for c in cancelled.json()["cancelled"]] == ["email"]
    final = await settled(env, api, tenant, made["id"])
    assert [a["state"] for a in final["actions"]] == ["cancelled"]
    assert await _message_state(sessions) == "withdrawn"
    assert box.to("race@example.org") == []


async def test_an_email_handed_to_the_peer_is_not_cancelled_and_ends_done(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    job = await job_with(api, tenant, {"Interview": [email("Invitation")]})
    candidate = await add_candidate(api, tenant, email="late@example.org")
    await apply(api, tenant, job, candidate)
    box, _ = inbox
    box.delay_seconds = 1.0  # and a second before its reply to the final dot
    made = (await move(api, tenant, job, candidate, "Interview")).json()

    async def handed() -> bool:
        return bool(box.to("late@example.org"))

    await _until(handed)
    assert await _message_state(sessions) == "sending"
    refused = await api.post(f"/moves/{made['id']}/cancel", headers=tenant.recruiter)
    assert refused.status_code == 409, refused.text
    final = await settled(env, api, tenant, made["id"])
    assert [a["state"] for a in final["actions"]] == ["done"]
    assert len(box.to("late@example.org")) == 1
