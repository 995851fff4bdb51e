"""Pipeline automation, the rest of SPEC.md §2: every kind of action and its automatic
record, time-based rules and the reply that ends them, disqualification reasons, the
ready examples, previews, bulk moves, Idempotency-Key, and who may configure. Through the
HTTP app, on the time-skipping server, with a real SMTP peer."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from store.models import Application, EvaluationRequest, Move, MoveAction, Task
from store.session import SessionFactory
from tests.api.test_pipelines import PARIS, apply, email, job_with, move, settled, stage_id
from tests.builders import add_candidate
from tests.conftest import Inbox, Tenant
from workflows.bulk_move import BulkMoveWorkflow

NOTE = {"kind": "note", "note": {"text": "Moved to interview"}}


async def _records(api: httpx.AsyncClient, tenant: Tenant, candidate: int) -> list[dict[str, Any]]:
    answer = await api.get(f"/candidates/{candidate}/records", headers=tenant.recruiter)
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()["records"]
    return records


async def test_every_kind_of_action_leaves_its_automatic_record(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    pool = await api.post("/talent-pools", json={"name": "Data, later"}, headers=tenant.admin)
    assert pool.status_code == 201, pool.text
    other = (await api.post("/jobs", json={"title": "Analyst"}, headers=tenant.admin)).json()
    job = await job_with(
        api,
        tenant,
        {
            "Interview": [
                email("Your interview"),
                email("Three days on", delay_days=3),
                NOTE,
                {
                    "kind": "task",
                    "task": {
                        "title": "Book a room",
                        "assignee_user_id": tenant.admin_id,
                        "due_in_days": 2,
                    },
                },
                {
                    "kind": "task",
                    "task": {
                        "title": "Send the case study",
                        "assignee_user_id": tenant.recruiter_id,
                        "due_on": "2027-02-01",
                    },
                },
                {"kind": "tags", "tags": {"tags": ["interviewing"]}},
                {"kind": "evaluation", "evaluation": {"evaluator_user_id": tenant.admin_id}},
                {"kind": "followers", "followers": {"user_ids": [tenant.admin_id]}},
                {"kind": "assign", "assign": {"job_id": other["id"]}},
                {"kind": "assign", "assign": {"talent_pool_id": pool.json()["id"]}},
            ]
        },
    )
    candidate = await add_candidate(api, tenant, email="lin@example.org")
    await apply(api, tenant, job, candidate, source="import")
    moved = (await move(api, tenant, job, candidate, "Interview")).json()
    moved_at = datetime.fromisoformat(moved["created_at"])
    later = max(moved["actions"], key=lambda a: a["due_at"])
    assert later["kind"] == "email"
    assert datetime.fromisoformat(later["due_at"]).astimezone(PARIS) == (
        moved_at.astimezone(PARIS) + timedelta(days=3)
    )
    final = await settled(env, api, tenant, moved["id"], timedelta(days=4))
    assert [a["state"] for a in final["actions"]] == ["done"] * 10
    box, _ = inbox
    mails = box.to("lin@example.org")
    assert [m["Subject"] for m in mails] == ["Your interview", "Three days on"]
    records = await _records(api, tenant, candidate)
    automatic = {(r["kind"], r["summary"]) for r in records if r["automatic"]}
    day = moved_at.astimezone(PARIS).date()
    assert automatic == {
        ("note", "Moved to interview"),
        ("task", f"Book a room: for Ada Admin, due {day + timedelta(days=2)}"),
        ("task", "Send the case study: for Rex Recruiter, due 2027-02-01"),
        ("tag", "interviewing"),
        ("evaluation", "evaluation asked of Ada Admin"),
        ("follower", "followed by Ada Admin"),
        ("application", "applied to 'Analyst' (assigned)"),
        ("talent_pool", "in talent pool 'Data, later'"),
    }
    # The job's own application came by import: not automatic.
    applications = {r["job_id"]: r["automatic"] for r in records if r["kind"] == "application"}
    assert applications == {job["id"]: False, other["id"]: True}
    async with sessions() as session:
        asked = await session.scalar(select(EvaluationRequest))
        tasks = (await session.scalars(select(Task).order_by(Task.id))).all()
        assigned = await session.scalar(
            select(Application).where(Application.job_id == other["id"])
        )
    assert asked is not None and asked.requested_by_user_id is None
    assert [t.due_on for t in tasks] == [day + timedelta(days=2), date(2027, 2, 1)]
    # Assigned to the other job: in its first stage, and its actions (the ready
    # acknowledgement) did not run.
    assert assigned is not None and assigned.move_action_id is not None
    async with sessions() as session:
        kept = await session.scalar(
            select(func.count())
            .select_from(MoveAction)
            .join(Move, Move.id == MoveAction.move_id)
            .where(Move.job_id == other["id"])
        )
    assert kept == 0
    assert [m["Subject"] for m in box.to("lin@example.org")] == ["Your interview", "Three days on"]


RULE = {
    "after_days": 7,
    "unless_replied": True,
    "actions": [email("Any news, {{ first_name }}?"), NOTE],
}


async def _interview_with_rule(api: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    job = await job_with(api, tenant, {})
    stages = [{"id": s["id"], "name": s["name"]} for s in job["stages"]]
    stages[2]["rules"] = [RULE]  # Interview
    put = await api.put(
        f"/jobs/{job['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
    )
    assert put.status_code == 200, put.text
    job["stages"] = put.json()["stages"]
    assert job["stages"][2]["rules"][0]["after_days"] == 7
    return job


async def test_the_7_day_rule_fires_when_the_candidate_stays_and_has_not_replied(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await _interview_with_rule(api, tenant)
    candidate = await add_candidate(api, tenant, email="stays@example.org")
    await apply(api, tenant, job, candidate, source="import")
    moved = (await move(api, tenant, job, candidate, "Interview")).json()
    moved_at = datetime.fromisoformat(moved["created_at"])
    rule = moved["actions"][0]
    assert (rule["rule_after_days"], rule["unless_replied"]) == (7, True)
    assert datetime.fromisoformat(rule["due_at"]).astimezone(PARIS) == (
        moved_at.astimezone(PARIS) + timedelta(days=7)
    )
    await env.sleep(timedelta(days=6))
    box, _ = inbox
    assert box.to("stays@example.org") == []
    final = await settled(env, api, tenant, moved["id"], timedelta(days=2))
    assert [a["state"] for a in final["actions"]] == ["done", "done"]
    [mail] = box.to("stays@example.org")
    assert mail["Subject"] == "Any news, Marie?"


async def test_a_reply_ends_the_rule_and_a_move_cancels_it(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await _interview_with_rule(api, tenant)
    replies = await add_candidate(api, tenant, email="replies@example.org")
    leaves = await add_candidate(api, tenant, email="leaves@example.org")
    made = {}
    for candidate in (replies, leaves):
        await apply(api, tenant, job, candidate, source="import")
        made[candidate] = (await move(api, tenant, job, candidate, "Interview")).json()
    earlier = datetime.fromisoformat(made[replies]["created_at"]) - timedelta(hours=1)
    before = await api.post(
        "/events",
        json={"id": "reply-0", "type": "replied", "candidate_id": replies,
              "occurred_at": earlier.isoformat()},
        headers=tenant.service,
    )  # fmt: skip
    assert before.status_code == 200, before.text
    assert before.json()["cancelled_actions"] == []  # a reply before the move ends no rule
    await env.sleep(timedelta(days=2))
    event = await api.post(
        "/events",
        json={"id": "reply-1", "type": "replied", "candidate_id": replies},
        headers=tenant.service,
    )
    assert event.status_code == 200, event.text
    ended = event.json()["cancelled_actions"]
    assert {a["move_id"] for a in ended} == {made[replies]["id"]} and len(ended) == 2
    assert (await move(api, tenant, job, leaves, "Offer")).status_code == 201
    replied = await settled(env, api, tenant, made[replies]["id"], timedelta(days=6))
    assert {(a["state"], a["reason"]) for a in replied["actions"]} == {
        ("cancelled", "the candidate replied")
    }
    moved = await settled(env, api, tenant, made[leaves]["id"])
    assert {(a["state"], a["reason"]) for a in moved["actions"]} == {
        ("cancelled", "moved to Offer")
    }
    box, _ = inbox
    assert box.to("replies@example.org") == [] and box.to("leaves@example.org") == []


async def test_a_new_company_gets_the_ready_examples_and_a_disqualification_rejects_kindly(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = (await api.post("/jobs", json={"title": "Designer"}, headers=tenant.admin)).json()
    applied, interview = job["stages"][0], job["stages"][2]
    [ack] = applied["actions"]
    assert ack["email"]["sender_user_id"] == tenant.admin_id
    [rule] = interview["rules"]
    assert (rule["after_days"], rule["unless_replied"]) == (7, True)
    reasons = (await api.get("/disqualification-reasons", headers=tenant.recruiter)).json()
    fit = reasons["reasons"][0]
    [rejection] = fit["actions"]
    assert rejection["delay_days"] == 2
    candidate = await add_candidate(api, tenant, email="iris@example.org")
    applied_move = await apply(api, tenant, job, candidate)
    await settled(env, api, tenant, applied_move["id"])
    box, _ = inbox
    assert [m["Subject"] for m in box.to("iris@example.org")] == [
        "We received your application, Marie"
    ]
    # Interviewed, then disqualified: the interview's rule is cancelled, and the rejection
    # waits two days.
    interviewed = (await move(api, tenant, job, candidate, "Interview")).json()
    path = f"/jobs/{job['id']}/candidates/{candidate}/disqualifications"
    preview = await api.post(f"{path}/preview", json={"reason_id": fit["id"]},
                             headers=tenant.recruiter)  # fmt: skip
    assert preview.status_code == 200, preview.text
    assert [a["kind"] for a in preview.json()["actions"]] == ["email"]
    assert {c["move_id"] for c in preview.json()["cancelled"]} == {interviewed["id"]}
    out = await api.post(path, json={"reason_id": fit["id"]}, headers=tenant.recruiter)
    assert out.status_code == 201, out.text
    assert out.json()["disqualification_reason_id"] == fit["id"]
    assert {c["move_id"] for c in out.json()["cancelled"]} == {interviewed["id"]}
    again = await api.post(path, json={"reason_id": fit["id"]}, headers=tenant.recruiter)
    assert again.status_code == 409 and "already disqualified" in again.json()["detail"]
    await env.sleep(timedelta(days=1))
    assert len(box.to("iris@example.org")) == 1
    await settled(env, api, tenant, out.json()["id"], timedelta(days=2))
    subjects = [m["Subject"] for m in box.to("iris@example.org")]
    assert subjects[1:] == ["Your application to Acme"]
    assert "talent pool" in box.to("iris@example.org")[1].get_content()
    dropped = await settled(env, api, tenant, interviewed["id"])
    assert {a["reason"] for a in dropped["actions"]} == {
        "disqualified: Not the right fit for this role"
    }


async def test_a_preview_changes_nothing_and_says_what_the_move_would_do(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    job = await job_with(api, tenant, {"Interview": [NOTE, email("Later", delay_hours=1)]})
    candidate = await add_candidate(api, tenant, email="pre@example.org")
    await apply(api, tenant, job, candidate, source="import")
    path = f"/jobs/{job['id']}/candidates/{candidate}/moves/preview"
    body = {"stage_id": stage_id(job, "Interview")}
    preview = await api.post(path, json=body, headers=tenant.recruiter)
    assert preview.status_code == 200, preview.text
    assert [(a["kind"], a["id"]) for a in preview.json()["actions"]] == [
        ("note", None),
        ("email", None),
    ]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Move)) == 1  # applied
        assert await session.scalar(select(func.count()).select_from(MoveAction)) == 0
        application = await session.scalar(select(Application))
    assert application is not None and application.stage_id == stage_id(job, "Applied")
    missing = await api.post(
        f"/jobs/{job['id']}/candidates/999999/moves/preview", json=body, headers=tenant.recruiter
    )
    assert missing.status_code == 404


async def test_a_bulk_move_reports_one_result_per_candidate_and_moves_the_others(
    api: httpx.AsyncClient,
    env: WorkflowEnvironment,
    tenant: Tenant,
    other_tenant: Tenant,
    inbox: tuple[Inbox, int],
) -> None:
    job = await job_with(api, tenant, {"Screening": [NOTE]})
    ours = []
    for number in range(48):
        candidate = await add_candidate(api, tenant, email=f"bulk{number}@example.org")
        await apply(api, tenant, job, candidate, source="import")
        ours.append(candidate)
    theirs = await add_candidate(api, other_tenant, email="globex@example.org")
    unknown = 987654
    screening = stage_id(job, "Screening")
    preview = await api.post(
        f"/jobs/{job['id']}/bulk-moves/preview", json={"stage_id": screening},
        headers=tenant.recruiter,
    )  # fmt: skip
    assert [a["kind"] for a in preview.json()["actions"]] == ["note"]
    started = await api.post(
        f"/jobs/{job['id']}/bulk-moves",
        json={"candidate_ids": [*ours, theirs, unknown], "stage_id": screening,
              "run_actions": True},
        headers=tenant.recruiter,
    )  # fmt: skip
    assert started.status_code == 202, started.text
    bulk = started.json()
    assert bulk["total"] == 50
    handle = env.client.get_workflow_handle_for(BulkMoveWorkflow.run, bulk["workflow_id"])
    assert await handle.result() == 48
    done = (await api.get(f"/bulk-moves/{bulk['id']}", headers=tenant.recruiter)).json()
    assert (done["moved"], done["refused"], done["finished_at"] is not None) == (48, 2, True)
    refused = {r["candidate_id"]: r["detail"] for r in done["results"] if r["result"] == "refused"}
    assert refused == {
        theirs: f"Candidate {theirs} has not applied to job {job['id']}.",
        unknown: f"Candidate {unknown} has not applied to job {job['id']}.",
    }
    first = next(r for r in done["results"] if r["candidate_id"] == ours[0])
    await settled(env, api, tenant, first["move_id"])
    records = await _records(api, tenant, ours[0])
    assert [r["summary"] for r in records if r["automatic"]] == ["Moved to interview"]
    hidden = await api.get(f"/bulk-moves/{bulk['id']}", headers=other_tenant.recruiter)
    assert hidden.status_code == 404


async def test_a_repeated_move_with_its_idempotency_key_moves_once(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, sessions: SessionFactory
) -> None:
    job = await job_with(api, tenant, {"Screening": [NOTE]})
    candidate = await add_candidate(api, tenant, email="once@example.org")
    await apply(api, tenant, job, candidate, source="import")
    key = {"Idempotency-Key": "move-once-1"}
    path = f"/jobs/{job['id']}/candidates/{candidate}/moves"
    body = {"stage_id": stage_id(job, "Screening")}
    first = await api.post(path, json=body, headers={**tenant.recruiter, **key})
    again = await api.post(path, json=body, headers={**tenant.recruiter, **key})
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    other = await api.post(
        path, json={"stage_id": stage_id(job, "Offer")}, headers={**tenant.recruiter, **key}
    )
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    await settled(env, api, tenant, first.json()["id"])
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Move)) == 2


async def test_only_admins_and_allowed_users_configure_automatic_actions(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    reasons = {"reasons": [{"name": "Withdrew"}]}
    refused = await api.put("/disqualification-reasons", json=reasons, headers=tenant.recruiter)
    assert refused.status_code == 403
    assert "allowed to manage automatic actions" in refused.json()["detail"]
    assert (
        await api.post("/jobs", json={"title": "X"}, headers=tenant.recruiter)
    ).status_code == 403
    allowed = await api.patch(
        f"/users/{tenant.recruiter_id}", json={"manages_automations": True}, headers=tenant.admin
    )
    assert allowed.status_code == 200 and allowed.json()["manages_automations"] is True
    self_made = await api.patch(
        f"/users/{tenant.admin_id}", json={"manages_automations": True}, headers=tenant.recruiter
    )
    assert self_made.status_code == 403
    now = await api.put("/disqualification-reasons", json=reasons, headers=tenant.recruiter)
    assert now.status_code == 200, now.text
    assert [r["name"] for r in now.json()["reasons"]] == ["Withdrew"]
    # Removed, the ready examples do not come back.
    none = await api.put("/disqualification-reasons", json={"reasons": []}, headers=tenant.admin)
    assert none.status_code == 200 and none.json()["reasons"] == []
    again = await api.get("/disqualification-reasons", headers=tenant.admin)
    assert again.json()["reasons"] == []


async def test_bad_rules_and_reasons_are_refused_and_leave_everything_as_it_was(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, other_tenant: Tenant
) -> None:
    job = await job_with(api, tenant, {})
    stages = [{"id": s["id"], "name": s["name"]} for s in job["stages"]]

    async def refused(rules: list[dict[str, Any]], status: int = 422) -> str:
        stages[2]["rules"] = rules
        answer = await api.put(
            f"/jobs/{job['id']}/pipeline", json={"stages": stages}, headers=tenant.admin
        )
        assert answer.status_code == status, answer.text
        detail: str = str(answer.json()["detail"])
        return detail

    timed = {"after_days": 7, "actions": [{**NOTE, "delay_days": 1}]}
    assert "runs when its rule fires" in await refused([timed])
    theirs = (await api.post("/jobs", json={"title": "Theirs"}, headers=other_tenant.admin)).json()
    elsewhere = {
        "after_days": 2,
        "actions": [{"kind": "assign", "assign": {"job_id": theirs["id"]}}],
    }
    assert "no such job" in await refused([elsewhere])
    stranger = {"kind": "task", "task": {"title": "x", "assignee_user_id": other_tenant.admin_id,
                                         "due_in_days": 1}}  # fmt: skip
    assert "not a user of this company" in await refused([{"after_days": 2, "actions": [stranger]}])
    kept = (await api.get(f"/jobs/{job['id']}", headers=tenant.admin)).json()
    assert kept["stages"] == job["stages"]
    # A reason that disqualified someone stays; another company's reason is 404.
    reasons = (await api.get("/disqualification-reasons", headers=tenant.admin)).json()["reasons"]
    candidate = await add_candidate(api, tenant, email="kept@example.org")
    await apply(api, tenant, job, candidate, source="import")
    path = f"/jobs/{job['id']}/candidates/{candidate}/disqualifications"
    done = await api.post(path, json={"reason_id": reasons[1]["id"]}, headers=tenant.recruiter)
    assert done.status_code == 201, done.text
    removal = await api.put(
        "/disqualification-reasons", json={"reasons": [{"name": "Only this"}]},
        headers=tenant.admin,
    )  # fmt: skip
    assert removal.status_code == 409 and "disqualified candidates" in removal.json()["detail"]
    after = (await api.get("/disqualification-reasons", headers=tenant.admin)).json()["reasons"]
    assert after == reasons
    foreign = (await api.get("/disqualification-reasons", headers=other_tenant.admin)).json()
    other = await api.post(
        path, json={"reason_id": foreign["reasons"][0]["id"]}, headers=tenant.recruiter
    )
    assert other.status_code == 404


async def test_a_cancel_and_a_new_move_racing_end_the_same_way_whatever_the_order(
    api: httpx.AsyncClient, env: WorkflowEnvironment, tenant: Tenant, inbox: tuple[Inbox, int]
) -> None:
    job = await job_with(api, tenant, {"Interview": [email("Later", delay_days=3)]})
    outcomes = set()
    for number in range(6):
        candidate = await add_candidate(api, tenant, email=f"race{number}@example.org")
        await apply(api, tenant, job, candidate, source="import")
        first = (await move(api, tenant, job, candidate, "Interview")).json()
        cancel = api.post(f"/moves/{first['id']}/cancel", headers=tenant.recruiter)
        again = move(api, tenant, job, candidate, "Offer")
        pair = (cancel, again) if number % 2 else (again, cancel)
        answers = await asyncio.gather(*pair)
        cancelled, moved = answers if number % 2 else answers[::-1]
        assert moved.status_code == 201, moved.text
        # Exactly one of the two cancelled the e-mail, and said so.
        listed = moved.json()["cancelled"] + (
            cancelled.json()["cancelled"] if cancelled.status_code == 200 else []
        )
        assert [c["move_id"] for c in listed] == [first["id"]], (cancelled.text, moved.text)
        assert cancelled.status_code in (200, 409)
        final = await settled(env, api, tenant, first["id"])
        [action] = final["actions"]
        assert action["state"] == "cancelled"
        outcomes.add(action["reason"])
    await env.sleep(timedelta(days=4))
    box, _ = inbox
    assert all(box.to(f"race{n}@example.org") == [] for n in range(6))
    assert outcomes <= {"the move was cancelled", "moved to Offer"}
