"""Erasure (GDPR) over HTTP, on the time-skipping server, with a real SMTP peer: the
candidate's data gone from every table, their workflows ended, what it cancelled said,
nothing sent afterwards, and the campaign numbers' rows kept."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from temporalio.testing import WorkflowEnvironment

from activities.nurture import NurtureActivities
from activities.stage_actions import StageActionActivities
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.erasure import ERASED
from store.models import (
    ActionState,
    Base,
    Candidate,
    CandidateTag,
    Enrolment,
    Message,
    MoveAction,
    Note,
    ReceivedEvent,
    RecipientStatus,
)
from store.session import SessionFactory
from tests.api.test_pipeline_automation import NOTE
from tests.api.test_pipelines import apply, email, job_with, move, settled
from tests.builders import CONSENT, add_candidate, due_touchpoint, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant
from tests.snapshot import unchanged
from tests.workflows.test_nurture import final_state, noon_tomorrow, sleep_until
from workflows.contracts import PlannedAction, SendOutcome, stage_actions_workflow_id
from workflows.stage_actions import StageActionsWorkflow

FIRST, LAST, ADDRESS = "Héloïse", "Quennell-Vasquez", "heloise.qv@example.org"
ROLE = "Cartographer of tide pools"
PERSONAL = (FIRST, LAST, ADDRESS, ROLE)


async def traces(sessions: SessionFactory) -> set[str]:
    """Every `table.column` of the store (every table of the models, read now: tables
    added later are in) where one of the candidate's strings is, in any form a column
    holds it: text, or inside a JSON document."""
    found = set()
    async with sessions() as session:
        for rows in Base.metadata.sorted_tables:
            for row in await session.execute(select(rows)):
                for column, value in zip(rows.columns, row, strict=True):
                    if value is None:
                        continue
                    texts = (str(value), json.dumps(value, ensure_ascii=False, default=str))
                    if any(s.lower() in t.lower() for s in PERSONAL for t in texts):
                        found.add(f"{rows.name}.{column.name}")
    return found


async def _count(sessions: SessionFactory, model: type[Base], *where: Any) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def _numbers(api: httpx.AsyncClient, tenant: Tenant, campaign: int) -> tuple[int, ...]:
    """What an erasure must leave as it was: who entered, and what was sent."""
    found = await api.get(f"/campaigns/{campaign}/numbers", headers=tenant.admin)
    assert found.status_code == 200, found.text
    got = found.json()
    return got["total_candidates"], got["entries"], got["emails_sent"]


async def _actions_settle(api: httpx.AsyncClient, tenant: Tenant, move_id: int, ran: int) -> None:
    """Until `ran` actions of the move have run (the immediate ones; in real time, since
    the server's clock stands still meanwhile)."""
    for _ in range(500):
        found = (await api.get(f"/moves/{move_id}", headers=tenant.admin)).json()
        if sum(a["state"] in ("done", "failed") for a in found["actions"]) >= ran:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the actions of move {move_id} did not run: {found['actions']}")


async def test_an_erased_candidate_is_gone_everywhere_and_nothing_cancelled_goes_out(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    inbox: tuple[Inbox, int],
    sessions: SessionFactory,
) -> None:
    mail, _ = inbox
    day1 = await noon_tomorrow(env)
    created_with = {**tenant.service, "Idempotency-Key": "ats-create-1"}
    body = {"first_name": FIRST, "last_name": LAST, "email": ADDRESS, "consent": CONSENT}
    created = await api.post("/candidates", json=body, headers=created_with)
    assert created.status_code == 201, created.text
    candidate: int = created.json()["id"]
    patched = await api.patch(
        f"/candidates/{candidate}",
        json={"custom_fields": {"role": ROLE}},
        headers={**tenant.service, "Idempotency-Key": "ats-update-1"},
    )
    assert patched.status_code == 200, patched.text
    neighbour = await add_candidate(api, tenant, first_name="Pierre", email="pierre@example.org")
    plan = [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=3)]
    campaigns = [await saved_campaign(api, tenant, plan) for _ in range(2)]
    for campaign in campaigns:
        await enrol(api, tenant, campaign, candidate)
    await enrol(api, tenant, campaigns[0], neighbour)
    await sleep_until(env, day1, 12)
    await mail.wait_for(3)
    # A backend service whose event ids quote the address.
    event = {"id": f"ats/{ADDRESS}/connected", "type": "connected", "candidate_id": candidate}
    assert (await api.post("/events", json=event, headers=tenant.service)).status_code == 200

    # A move: an e-mail now (which the peer refuses, quoting the address), one in 3 days, a
    # note and a tag now.
    tags = {"kind": "tags", "tags": {"tags": ["interviewing"]}}
    interview = [email("Your interview"), email("Three days on", delay_days=3), NOTE, tags]
    job = await job_with(api, tenant, {"Interview": interview})
    await apply(api, tenant, job, candidate, source="import")
    mail.refuse_with = f"550 5.1.1 <{ADDRESS}>: Recipient address rejected"
    moved = (await move(api, tenant, job, candidate, "Interview")).json()
    await _actions_settle(api, tenant, moved["id"], 3)
    mail.refuse_with = None
    moved_at = datetime.fromisoformat(moved["created_at"])
    [later] = [a for a in moved["actions"] if datetime.fromisoformat(a["due_at"]) > moved_at]
    due = {}
    for campaign in campaigns:
        page = (await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)).json()
        [mine] = [r for r in page["items"] if r["candidate_id"] == candidate]
        assert mine["next_touchpoint"] == 2
        due[campaign] = mine["next_send_at"]
    # The copies the erasure must find, beyond the candidate's own row.
    assert {
        "candidates.first_name",
        "candidates.custom_fields",
        "idempotent_requests.body",
        "messages.error",
        "move_actions.reason",
        "received_events.event_id",
    } <= await traces(sessions)
    assert await _count(sessions, Note, Note.candidate_id == candidate) == 1
    counted = (Message, Enrolment, ReceivedEvent)
    before = {m.__name__: await _count(sessions, m) for m in counted}
    numbers = [await _numbers(api, tenant, c) for c in campaigns]
    assert numbers == [(2, 2, 2), (1, 1, 1)]  # with the neighbour in the first

    erased = await api.delete(f"/candidates/{candidate}", headers=tenant.admin)
    assert erased.status_code == 200, erased.text
    answer = erased.json()
    assert (answer["candidate_id"], answer["already_erased"]) == (candidate, False)
    assert answer["ended_campaigns"] == campaigns
    assert [
        (t["campaign_id"], t["touchpoint"], t["due_at"]) for t in answer["cancelled_touchpoints"]
    ] == [(c, 2, due[c]) for c in campaigns]
    [cancelled] = answer["cancelled_actions"]
    assert (cancelled["move_id"], cancelled["action_id"], cancelled["kind"]) == (
        moved["id"], later["id"], "email",
    )  # fmt: skip
    assert cancelled["due_at"] == later["due_at"]

    assert await traces(sessions) == set()
    assert {m.__name__: await _count(sessions, m) for m in counted} == before
    assert [await _numbers(api, tenant, c) for c in campaigns] == numbers
    assert await _count(sessions, Note, Note.candidate_id == candidate) == 0
    assert await _count(sessions, CandidateTag, CandidateTag.candidate_id == candidate) == 0
    async with sessions() as session:
        tombstone = await session.get_one(Candidate, candidate)
        kept = await session.get_one(Candidate, neighbour)
    assert tombstone.erased_at is not None and tombstone.email is None
    assert (kept.first_name, kept.email) == ("Pierre", "pierre@example.org")

    # Their workflows ended: each campaign's with `erased`, the move's cancelled.
    for campaign in campaigns:
        state = await final_state(env, campaign, candidate)
        assert (state.status, state.exit_reason) == ("exited", "erased")
    handle = env.client.get_workflow_handle_for(
        StageActionsWorkflow.run, stage_actions_workflow_id(job["id"], candidate, _key(moved))
    )
    assert await handle.result() == ERASED
    found = (await api.get(f"/moves/{moved['id']}", headers=tenant.admin)).json()
    [ended] = [a for a in found["actions"] if a["id"] == later["id"]]
    assert (ended["state"], ended["reason"]) == ("cancelled", ERASED)

    # Past every due time, nothing more reached them; the neighbour's campaign went on.
    await env.sleep(timedelta(days=10))
    await mail.wait_for(4)
    assert [m["Subject"] for m in mail.to(ADDRESS)] == ["One", "One"]
    assert [m["Subject"] for m in mail.to("pierre@example.org")] == ["One", "Two"]
    assert await _count(sessions, Message, Message.candidate_id == candidate) == 3
    assert await traces(sessions) == set()

    # A repeat answers the same; every later request naming them says they were erased.
    again = await api.delete(f"/candidates/{candidate}", headers=tenant.admin)
    assert again.status_code == 200, again.text
    assert again.json() == {**answer, "already_erased": True}
    async with unchanged(sessions):
        for response in (
            await api.get(f"/candidates/{candidate}", headers=tenant.admin),
            await api.patch(
                f"/candidates/{candidate}", json={"first_name": FIRST}, headers=tenant.service
            ),
            await api.get(f"/candidates/{candidate}/records", headers=tenant.recruiter),
            await api.post("/events", json={**event, "id": "e-2"}, headers=tenant.service),
            await move(api, tenant, job, candidate, "Offer"),
        ):
            assert response.status_code == 404, response.text
            assert "erased" in response.json()["detail"]
        back = await api.post(
            f"/campaigns/{campaigns[0]}/recipients",
            json={"candidate_id": candidate, "re_enrol": True},
            headers=tenant.admin,
        )
        assert back.status_code == 404, back.text
        # The creation's retry neither shows their data nor makes them again.
        retried = await api.post("/candidates", json=body, headers=created_with)
        assert retried.status_code == 409 and "erased" in retried.json()["detail"]
        listed = (await api.get("/candidates", headers=tenant.admin)).json()
        assert [c["id"] for c in listed["items"]] == [neighbour]


def _key(moved: dict[str, Any]) -> str:
    """The move's key, from the workflow id its answer gives."""
    workflow_id: str = moved["workflow_id"]
    return workflow_id.rsplit("/", 1)[1]


async def test_only_an_admin_of_the_company_erases_and_a_repeat_is_harmless(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    candidate = await add_candidate(api, tenant, first_name="Ines", email="ines@example.org")
    async with unchanged(sessions):
        anonymous = await api.delete(f"/candidates/{candidate}")
        assert anonymous.status_code == 401
        for key in (tenant.recruiter, tenant.service):
            refused = await api.delete(f"/candidates/{candidate}", headers=key)
            assert refused.status_code == 403 and "admins" in refused.json()["detail"]
        other = await api.delete(f"/candidates/{candidate}", headers=other_tenant.admin)
        assert other.status_code == 404
        missing = await api.delete("/candidates/999999", headers=tenant.admin)
        assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
        invalid = await api.delete("/candidates/0", headers=tenant.admin)
        assert invalid.status_code == 422
    first = await api.delete(f"/candidates/{candidate}", headers=tenant.admin)
    assert first.status_code == 200, first.text
    assert first.json()["ended_campaigns"] == first.json()["cancelled_actions"] == []
    erased_at = datetime.fromisoformat(first.json()["erased_at"])
    async with unchanged(sessions):
        second = await api.delete(f"/candidates/{candidate}", headers=tenant.admin)
        assert second.status_code == 200
        assert second.json()["already_erased"] is True
        assert datetime.fromisoformat(second.json()["erased_at"]) == erased_at


async def test_a_send_that_raced_the_erasure_finds_the_tombstone_and_sends_nothing(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, settings: Settings,
    templates: TemplateSandbox, mailer: Mailer, inbox: tuple[Inbox, int],
) -> None:  # fmt: skip
    """An enrolment or a move that committed after the erasure read the candidate (so it
    neither ended nor cancelled them): the send re-reads the candidate, and stops."""
    call = await due_touchpoint(api, tenant, sessions)
    job = await job_with(api, tenant, {"Interview": [email("Later", delay_days=1)]})
    async with sessions() as session:
        candidate = (await session.get_one(Enrolment, call.enrolment_id)).candidate_id
    await apply(api, tenant, job, candidate, source="import")
    moved = (await move(api, tenant, job, candidate, "Interview")).json()
    [action] = moved["actions"]
    async with sessions() as session, session.begin():
        when = datetime.now(UTC)
        await session.execute(
            update(Candidate).where(Candidate.id == candidate).values(erased_at=when)
        )
    sent = await NurtureActivities(sessions, mailer, settings, templates).send_touchpoint(call)
    assert (sent.outcome, sent.exit_reason) == (SendOutcome.LEFT, "erased")
    planned = PlannedAction(action["id"], action["kind"], datetime.fromisoformat(action["due_at"]))
    stage = StageActionActivities(sessions, mailer, settings, templates)
    assert await stage.run_stage_action(planned) == SendOutcome.WITHDRAWN.value
    async with sessions() as session:
        enrolment = await session.get_one(Enrolment, call.enrolment_id)
        ended = await session.get_one(MoveAction, action["id"])
    assert (enrolment.status, enrolment.exit_reason) == (RecipientStatus.EXITED, "erased")
    assert (ended.state, ended.reason) == (ActionState.CANCELLED, ERASED)
    assert inbox[0].messages == []
    # Its workflow then ends by itself, finding the action cancelled: a workflow left
    # sleeping on its timer would keep the next test's clock from skipping.
    final = await settled(env, api, tenant, moved["id"], after=timedelta(days=2))
    assert [a["state"] for a in final["actions"]] == ["cancelled"]
    assert inbox[0].messages == []
