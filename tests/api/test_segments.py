"""Segments over HTTP: filters that select exactly the right candidates, their refusals
and tenancy, a segment added to a campaign as one batch (with a verdict per candidate, and
a retry that resumes), and the candidates' categories."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.enrolment import EnrolmentActivities
from config import Settings
from orchestration import Workflows
from store.models import (
    Campaign,
    CampaignStatus,
    Candidate,
    CandidateTag,
    Enrolment,
    EnrolmentBatch,
    EnrolmentBatchResult,
    Message,
    MessageSource,
    MessageState,
)
from store.session import SessionFactory
from tests.builders import CONSENT, add_candidate, saved_campaign, touchpoint
from tests.conftest import _FAILED, Tenant, make_tenant
from tests.snapshot import unchanged
from workflows.contracts import EnrolmentBatchInput, NurtureInput, nurture_workflow_id
from workflows.nurture import NurtureWorkflow


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


CONSENTED = {
    "consent_given_at": _at("2026-01-15T10:00:00"),
    "consent_method": "web form opt-in",
    "consent_source": "careers site",
}


@pytest.fixture
def fresh_test_server(request: pytest.FixtureRequest) -> None:
    """The shared time-skipping server is replaced after this test, as after one that
    failed. A test that starts a thousand or more workflows leaves it unable to skip time
    (env.sleep then runs in real time and times out), seen with a bulk add of ids as well:
    every later test that sleeps would fail."""
    request.node.stash[_FAILED] = True


async def insert_candidates(
    sessions: SessionFactory, company_id: int, rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Candidates written straight into the store, in one statement; their ids in order."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        ids = await session.scalars(
            insert(Candidate).returning(Candidate.id, sort_by_parameter_order=True),
            [
                {
                    "company_id": company_id,
                    "first_name": "Cand",
                    "last_name": "Idate",
                    "custom_fields": {},
                    "created_at": now,
                    "updated_at": now,
                    **row,
                }
                for row in rows
            ],
        )
        return list(ids)


async def tag(sessions: SessionFactory, company_id: int, tags: dict[int, list[str]]) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            insert(CandidateTag),
            [
                {"company_id": company_id, "candidate_id": c, "tag": t}
                for c, names in tags.items()
                for t in names
            ],
        )


async def sent(
    sessions: SessionFactory,
    company_id: int,
    candidate_id: int,
    at: str,
    *,
    kind: MessageSource = MessageSource.TOUCHPOINT,
    state: MessageState = MessageState.SENT,
) -> None:
    """An e-mail to the candidate recorded as the send path records one."""
    key = uuid.uuid4().hex
    async with sessions() as session, session.begin():
        session.add(
            Message(
                company_id=company_id,
                idempotency_key=key,
                message_id=f"<{key}@nurture.test>",
                source_kind=kind,
                source_id=1,
                candidate_id=candidate_id,
                test_address="qa@example.org" if kind is MessageSource.TEST else None,
                state=state,
                sent_at=_at(at) if state is MessageState.SENT else None,
            )
        )


async def segment(
    api: httpx.AsyncClient, tenant: Tenant, filter: dict[str, Any], name: str | None = None
) -> int:
    response = await api.post(
        "/segments",
        json={"name": name or f"segment {uuid.uuid4().hex[:8]}", "filter": filter},
        headers=tenant.admin,
    )
    assert response.status_code == 201, response.text
    segment_id: int = response.json()["id"]
    return segment_id


async def members(api: httpx.AsyncClient, tenant: Tenant, segment_id: int) -> list[int]:
    response = await api.get(
        f"/segments/{segment_id}/candidates", params={"limit": 1000}, headers=tenant.admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [c["id"] for c in body["items"]]


async def test_segment_filters_select_exactly_the_right_candidates(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    company = tenant.company_id
    a, b, c, d, _erased = await insert_candidates(
        sessions,
        company,
        [
            {"category": "current_applicant", "custom_fields": {"role": "Engineer"}, **CONSENTED},
            {"category": "past_applicant", "custom_fields": {"role": "Designer"}, **CONSENTED},
            {"category": "passive_talent", "custom_fields": {"role": "Engineer"}},
            {"category": "passive_talent", **CONSENTED},
            {"category": "passive_talent", **CONSENTED, "erased_at": _at("2026-05-01T00:00:00")},
        ],
    )
    [foreign] = await insert_candidates(
        sessions,
        other_tenant.company_id,
        [{"category": "past_applicant", "custom_fields": {"role": "Engineer"}, **CONSENTED}],
    )
    await tag(sessions, company, {a: ["python", "paris"], b: ["python"], c: ["java"]})
    await tag(sessions, other_tenant.company_id, {foreign: ["python"]})
    await sent(sessions, company, a, "2026-03-01T09:00:00")
    await sent(sessions, company, b, "2026-01-10T09:00:00")
    await sent(sessions, company, b, "2026-02-01T09:00:00")
    await sent(sessions, company, d, "2026-04-01T09:00:00", kind=MessageSource.STAGE_ACTION)
    # Neither reached c: a test send goes to a test address, a failed one went nowhere.
    await sent(sessions, company, c, "2026-03-01T09:00:00", kind=MessageSource.TEST)
    await sent(sessions, company, c, "2026-03-01T09:00:00", state=MessageState.FAILED)
    await sent(sessions, other_tenant.company_id, foreign, "2026-03-01T09:00:00")

    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [a, b, c, d]),
        ({"categories": ["passive_talent"]}, [c, d]),
        ({"categories": ["current_applicant", "past_applicant"]}, [a, b]),
        ({"tags": ["python"]}, [a, b]),
        ({"tags": ["python", "paris"]}, [a]),
        ({"any_tags": ["paris", "java"]}, [a, c]),
        ({"custom_fields": {"role": "Engineer"}}, [a, c]),
        ({"custom_fields": {"role": "engineer"}}, []),
        ({"consent": True}, [a, b, d]),
        ({"consent": False}, [c]),
        ({"last_contacted": {"never": True}}, [c]),
        ({"last_contacted": {"never": False}}, [a, b, d]),
        # b's latest e-mail is 1 February: the one of 10 January does not make it "before".
        ({"last_contacted": {"before": "2026-01-20T00:00:00Z"}}, []),
        ({"last_contacted": {"before": "2026-02-15T00:00:00Z"}}, [b]),
        ({"last_contacted": {"before": "2026-02-15T00:00:00Z", "include_never": True}}, [b, c]),
        ({"last_contacted": {"after": "2026-03-01T09:00:00Z"}}, [a, d]),
        (
            {
                "last_contacted": {
                    "after": "2026-02-15T00:00:00+01:00",
                    "before": "2026-03-15T00:00:00Z",
                }
            },
            [a],
        ),
        (
            {
                "categories": ["current_applicant", "past_applicant"],
                "tags": ["python"],
                "consent": True,
                "last_contacted": {"after": "2026-01-01T00:00:00Z"},
            },
            [a, b],
        ),
        ({"categories": None, "tags": None, "consent": None}, [a, b, c, d]),
    ]
    for filter, expected in cases:
        segment_id = await segment(api, tenant, filter)
        assert await members(api, tenant, segment_id) == expected, filter

    everyone = await segment(api, tenant, {}, name="Everyone")
    page = await api.get(
        f"/segments/{everyone}/candidates", params={"limit": 2, "offset": 1}, headers=tenant.admin
    )
    assert page.json()["total"] == 4
    assert [(x["id"], x["category"]) for x in page.json()["items"]] == [
        (b, "past_applicant"),
        (c, "passive_talent"),
    ]
    # A segment holds who matches now.
    await tag(sessions, company, {d: ["python"]})
    python = await segment(api, tenant, {"tags": ["python"]}, name="Python")
    assert await members(api, tenant, python) == [a, b, d]


async def test_bad_filters_are_refused_naming_what_is_wrong(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    existing = await segment(api, tenant, {"consent": True}, name="Consented")
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    before = "2026-02-01T00:00:00Z"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"categories": ["lead"]}, 422, "filter.categories.0: input should be"),
        ({"categories": []}, 422, "filter.categories: list should have at least 1 item"),
        ({"tags": [""]}, 422, "filter.tags.0: string should have at least 1 character"),
        ({"custom_fields": {"salary": "high"}}, 422, "Unknown custom field 'salary'"),
        ({"consent": "yes"}, 422, "filter.consent: input should be a valid boolean"),
        ({"last_contacted": {}}, 422, "give never (true or false), or before and/or after"),
        (
            {"last_contacted": {"never": True, "before": before}},
            422,
            "never cannot be combined with before or after",
        ),
        (
            {"last_contacted": {"after": before, "before": before}},
            422,
            "after must be earlier than before",
        ),
        ({"last_contacted": {"include_never": True, "never": True}}, 422, "include_never goes"),
        ({"last_contacted": {"before": "last week"}}, 422, "is not a date and time"),
        ({"last_contacted": {"before": "2026-02-01T00:00:00"}}, 422, "timezone"),
        ({"colour": "blue"}, 422, "filter.colour: extra inputs are not permitted"),
    ]
    async with unchanged(sessions):
        for filter, status, says in cases:
            response = await api.post(
                "/segments", json={"name": "Bad", "filter": filter}, headers=tenant.admin
            )
            assert response.status_code == status, (filter, response.text)
            assert says in response.json()["detail"], (filter, response.json()["detail"])
            patched = await api.patch(
                f"/segments/{existing}", json={"filter": filter}, headers=tenant.admin
            )
            assert patched.status_code == status, (filter, patched.text)
            assert says in patched.json()["detail"]
        taken = await api.post(
            "/segments", json={"name": "Consented", "filter": {}}, headers=tenant.admin
        )
        assert taken.status_code == 409 and "named 'Consented' exists" in taken.json()["detail"]
        renamed = await api.patch(f"/segments/{existing}", json={"name": ""}, headers=tenant.admin)
        assert renamed.status_code == 422
        assert "name: string should have at least 1 character" in renamed.json()["detail"]
        missing = await api.post(
            f"/campaigns/{campaign}/recipients/segment",
            json={"segment_id": 424242},
            headers=tenant.admin,
        )
        assert missing.status_code == 422
        assert missing.json()["detail"] == "Segment 424242 does not exist."


async def test_segments_stay_within_their_company_and_their_admins(
    api: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, sessions: SessionFactory
) -> None:
    ours = await segment(api, tenant, {"consent": True}, name="Ours")
    theirs = await segment(api, other_tenant, {}, name="Theirs")
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    off = await make_tenant(sessions, "Initech", add_on=False)
    async with unchanged(sessions):
        for method, path, body in [
            ("GET", f"/segments/{ours}", None),
            ("PATCH", f"/segments/{ours}", {"name": "Mine now"}),
            ("DELETE", f"/segments/{ours}", None),
            ("GET", f"/segments/{ours}/candidates", None),
        ]:
            other = await api.request(method, path, json=body, headers=other_tenant.admin)
            assert other.status_code == 404, (method, path, other.text)
            assert other.json()["detail"] == f"Segment {ours} does not exist."
            recruiter = await api.request(method, path, json=body, headers=tenant.recruiter)
            assert recruiter.status_code == 403
            anonymous = await api.request(method, path, json=body)
            assert anonymous.status_code == 401
            add_on = await api.request(method, path, json=body, headers=off.admin)
            assert add_on.status_code == 403 and "add-on is off" in add_on.json()["detail"]
        listed = (await api.get("/segments", headers=other_tenant.admin)).json()
        assert [s["id"] for s in listed["items"]] == [theirs] and listed["total"] == 1
        # Another company's segment named in a body is not there: 422, as any such reference.
        foreign = await api.post(
            f"/campaigns/{campaign}/recipients/segment",
            json={"segment_id": theirs},
            headers=tenant.admin,
        )
        assert foreign.status_code == 422
        assert foreign.json()["detail"] == f"Segment {theirs} does not exist."


async def test_a_segment_is_created_read_changed_and_deleted(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    a, b = await insert_candidates(
        sessions, tenant.company_id, [{"category": "past_applicant"}, {**CONSENTED}]
    )
    created = await api.post(
        "/segments",
        json={
            "name": "Past applicants",
            "description": "Quarterly check-in",
            "filter": {
                "categories": ["past_applicant"],
                "last_contacted": {"before": "2026-02-01T10:00:00+01:00"},
            },
        },
        headers=tenant.admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "Past applicants" and body["description"] == "Quarterly check-in"
    assert body["filter"]["categories"] == ["past_applicant"]
    assert body["filter"]["last_contacted"]["before"] == "2026-02-01T09:00:00Z"
    assert body["filter"]["tags"] is None
    sid = body["id"]
    assert (await api.get(f"/segments/{sid}", headers=tenant.admin)).json() == body
    listed = (await api.get("/segments", headers=tenant.admin)).json()
    assert listed == {"total": 1, "items": [body]}
    assert await members(api, tenant, sid) == []

    renamed = await api.patch(
        f"/segments/{sid}", json={"name": "Past, never contacted"}, headers=tenant.admin
    )
    assert renamed.status_code == 200 and renamed.json()["filter"] == body["filter"]
    changed = await api.patch(
        f"/segments/{sid}",
        json={"filter": {"categories": ["past_applicant"], "last_contacted": {"never": True}}},
        headers=tenant.admin,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Past, never contacted"
    assert changed.json()["description"] == "Quarterly check-in"
    assert await members(api, tenant, sid) == [a]
    cleared = await api.patch(f"/segments/{sid}", json={"filter": {}}, headers=tenant.admin)
    assert cleared.status_code == 200 and await members(api, tenant, sid) == [a, b]

    deleted = await api.delete(f"/segments/{sid}", headers=tenant.admin)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await api.get(f"/segments/{sid}", headers=tenant.admin)
    assert gone.status_code == 404
    again = await api.delete(f"/segments/{sid}", headers=tenant.admin)
    assert again.status_code == 404
    # Its name is free again.
    await segment(api, tenant, {}, name="Past applicants")


async def test_a_candidate_has_a_category_set_on_create_and_patch(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    plain = await add_candidate(api, tenant)
    read = await api.get(f"/candidates/{plain}", headers=tenant.recruiter)
    assert read.json()["category"] == "passive_talent"
    applicant = await api.post(
        "/candidates",
        json={"first_name": "Ada", "consent": CONSENT, "category": "current_applicant"},
        headers=tenant.service,
    )
    assert applicant.status_code == 201 and applicant.json()["category"] == "current_applicant"
    cid = applicant.json()["id"]
    past = await api.patch(
        f"/candidates/{cid}", json={"category": "past_applicant"}, headers=tenant.service
    )
    assert past.status_code == 200 and past.json()["category"] == "past_applicant"
    assert past.json()["first_name"] == "Ada"
    async with unchanged(sessions):
        for body, says in [
            ({"category": "lead"}, "category: 'lead' is not a category: give one of"),
            ({"category": None}, "category cannot be null"),
        ]:
            refused = await api.patch(f"/candidates/{cid}", json=body, headers=tenant.admin)
            assert refused.status_code == 422 and says in refused.json()["detail"], refused.text
        created = await api.post(
            "/candidates", json={"first_name": "X", "category": "lead"}, headers=tenant.service
        )
        assert created.status_code == 422
    listed = (await api.get("/candidates", headers=tenant.admin)).json()["items"]
    assert [c["category"] for c in listed] == ["passive_talent", "past_applicant"]


async def finished(
    env: WorkflowEnvironment,
    sessions: SessionFactory,
    api: httpx.AsyncClient,
    tenant: Tenant,
    url: str,
    seconds: float = 300.0,
) -> dict[str, Any]:
    """The batch, once its activity has finished (polled in real time), and its workflow
    too: one left with a task to run when the test's worker stops would keep the shared
    test server from skipping time in the tests after."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        response = await api.get(url, headers=tenant.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["finished_at"]:
            break
        assert loop.time() < deadline, f"not finished after {seconds:.0f} s: {body}"
        await asyncio.sleep(0.2)
    async with sessions() as session:
        batch = await session.get_one(EnrolmentBatch, body["batch_id"])
    await env.client.get_workflow_handle(f"enrolment-batch/{batch.key}").result()
    return body


@pytest.mark.usefixtures("fresh_test_server")
async def test_a_segment_of_2000_is_added_as_one_job_with_a_verdict_for_each(
    env: WorkflowEnvironment, api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    company = tenant.company_id
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    rows: list[dict[str, Any]] = [
        {"category": "past_applicant", "email": f"c{i}@example.org", **CONSENTED}
        for i in range(2000)
    ]
    # Three bad rows the filter still matches: it asks for past applicants tagged "pool".
    rows[10] = {**rows[10], "email": None}
    rows[500] = {
        k: v for k, v in rows[500].items() if not k.startswith("consent")
    }  # no consent recorded
    rows[1999] = {**rows[1999], "unsubscribed_at": _at("2026-02-01T00:00:00")}
    ids = await insert_candidates(sessions, company, rows)
    outside = await insert_candidates(
        sessions, company, [{"category": "passive_talent", "email": "p@example.org", **CONSENTED}]
    )
    await tag(sessions, company, {c: ["pool"] for c in [*ids, *outside]})
    pool = await segment(
        api, tenant, {"categories": ["past_applicant"], "tags": ["pool"]}, name="Pool"
    )
    held = await api.get(f"/segments/{pool}/candidates", headers=tenant.admin)
    assert held.json()["total"] == 2000
    add = f"/campaigns/{campaign}/recipients/segment"

    answer = await api.post(add, json={"segment_id": pool}, headers=tenant.admin)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["segment_id"], accepted["total"], accepted["started"]) == (pool, 2000, 0)
    batch_url = f"/campaigns/{campaign}/recipients/batches/{accepted['batch_id']}"
    batch = await finished(env, sessions, api, tenant, batch_url)
    counts = ("total", "decided", "added", "already_active", "refused", "started")
    assert [batch[k] for k in counts] == [2000, 2000, 1997, 0, 3, 1997]

    refused = await api.get(
        f"{batch_url}/results", params={"result": "refused"}, headers=tenant.admin
    )
    assert refused.json()["total"] == 3
    assert [(r["candidate_id"], r["reason"]) for r in refused.json()["items"]] == [
        (ids[10], "no_email"),
        (ids[500], "no_consent"),
        (ids[1999], "unsubscribed"),
    ]
    assert "unsubscribed on 2026-02-01" in refused.json()["items"][2]["detail"]
    every = (await api.get(f"{batch_url}/results", headers=tenant.admin)).json()
    assert every["total"] == 2000
    assert [r["candidate_id"] for r in every["items"]] == ids[:100]
    added = await api.get(
        f"{batch_url}/results",
        params={"result": "added", "limit": 3, "offset": 10},
        headers=tenant.admin,
    )
    assert added.json()["total"] == 1997
    assert [r["candidate_id"] for r in added.json()["items"]] == ids[11:14]

    recipients = await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)
    assert recipients.json()["total"] == 1997
    for candidate in (ids[0], ids[1998]):
        # A query, not describe(): the SDK sometimes fails to decode the test server's
        # datetime search attribute in a description.
        handle = env.client.get_workflow_handle_for(
            NurtureWorkflow.run, nurture_workflow_id(campaign, candidate)
        )
        assert (await handle.query(NurtureWorkflow.state)).status == "active"
    # A refused one has no enrolment (its workflow id may name an ended workflow of an
    # earlier test on this shared test server, whose stores count from 1 too).
    async with sessions() as session:
        enrolled = await session.scalar(
            select(func.count()).select_from(Enrolment).where(Enrolment.candidate_id == ids[10])
        )
    assert enrolled == 0

    # The same segment again: those in stay in, and say so; the refused are refused again.
    again = await api.post(add, json={"segment_id": pool}, headers=tenant.admin)
    assert again.status_code == 202, again.text
    second = await finished(
        env,
        sessions,
        api,
        tenant,
        f"/campaigns/{campaign}/recipients/batches/{again.json()['batch_id']}",
    )
    assert [second[k] for k in counts] == [2000, 2000, 0, 1997, 3, 0]
    # The batches outlive the segment, as their candidates were taken when asked.
    assert (await api.delete(f"/segments/{pool}", headers=tenant.admin)).status_code == 204
    assert (await api.get(batch_url, headers=tenant.admin)).json() == batch


class _FailingOnce(Workflows):
    """A Temporal outage in the middle of a batch: the `fail_at`-th start fails, once."""

    def __init__(self, *args: Any, fail_at: int) -> None:
        super().__init__(*args)
        self.calls = 0
        self.fail_at = fail_at

    async def start_nurture(self, input: NurtureInput, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("Temporal went away")
        await super().start_nurture(input, **kwargs)


async def _no_batch_workflow(self: Workflows, *args: Any, **kwargs: Any) -> None:
    """The test runs the batch's activity itself, as its attempts would. (A batch workflow
    started with no worker to run it holds the shared test server's clock, even once
    terminated: the tests after it could not skip time.)"""


@pytest.mark.usefixtures("fresh_test_server")
async def test_a_segment_batch_retried_after_a_failure_resumes_where_it_stopped(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    sessions: SessionFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    company = tenant.company_id
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    ids = await insert_candidates(
        sessions,
        company,
        [{"email": f"r{i}@example.org", **CONSENTED} for i in range(1200)],
    )
    everyone = await segment(api, tenant, {})
    monkeypatch.setattr(Workflows, "start_enrolment_batch", _no_batch_workflow)
    answer = await api.post(
        f"/campaigns/{campaign}/recipients/segment",
        json={"segment_id": everyone},
        headers=tenant.admin,
    )
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batch_id"]
    async with sessions() as session:
        batch = await session.get_one(EnrolmentBatch, batch_id)
    activity_env = ActivityEnvironment()
    activity_env.info = dataclasses.replace(
        activity_env.info, current_attempt_scheduled_time=await env.get_current_time()
    )
    call = EnrolmentBatchInput(batch.id, batch.key)
    failing = _FailingOnce(env.client, settings.task_queue, fail_at=700)
    first = EnrolmentActivities(sessions, settings, failing)
    with pytest.raises(RuntimeError, match="Temporal went away"):
        await activity_env.run(first.start_enrolments, call)
    await asyncio.sleep(0.5)  # the first attempt's starts still in flight land

    async def state() -> tuple[int, int, int, int]:
        async with sessions() as session:
            decided = await session.scalar(
                select(func.count()).where(
                    EnrolmentBatchResult.batch_id == batch_id,
                    EnrolmentBatchResult.result.is_not(None),
                )
            )
            enrolled = await session.scalar(
                select(func.count()).where(Enrolment.batch_id == batch_id)
            )
            started = await session.scalar(
                select(func.count()).where(
                    Enrolment.batch_id == batch_id, Enrolment.workflow_started_at.is_not(None)
                )
            )
            row = await session.get_one(EnrolmentBatch, batch_id, populate_existing=True)
            assert row.finished_at is None or decided == 1200
            return decided or 0, enrolled or 0, started or 0, row.added

    # Every chunk of 500 was decided (and enrolled) by then, each while the one before it
    # started; the first chunk's workflows were started and marked so, the second's not.
    assert await state() == (1200, 1200, 500, 1200)
    second = EnrolmentActivities(sessions, settings, Workflows(env.client, settings.task_queue))
    assert await activity_env.run(second.start_enrolments, call) == 700
    assert await state() == (1200, 1200, 1200, 1200)
    progress = (
        await api.get(f"/campaigns/{campaign}/recipients/batches/{batch_id}", headers=tenant.admin)
    ).json()
    assert (progress["added"], progress["refused"], progress["started"]) == (1200, 0, 1200)
    assert progress["finished_at"] is not None
    for candidate in (ids[0], ids[699], ids[1199]):
        # A query, not describe(): the SDK sometimes fails to decode the test server's
        # datetime search attribute in a description.
        handle = env.client.get_workflow_handle_for(
            NurtureWorkflow.run, nurture_workflow_id(campaign, candidate)
        )
        assert (await handle.query(NurtureWorkflow.state)).status == "active"


async def test_a_segment_batch_whose_campaign_was_archived_refuses_the_rest_saying_why(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    sessions: SessionFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    await insert_candidates(
        sessions, tenant.company_id, [{"email": f"z{i}@example.org", **CONSENTED} for i in range(3)]
    )
    monkeypatch.setattr(Workflows, "start_enrolment_batch", _no_batch_workflow)
    answer = await api.post(
        f"/campaigns/{campaign}/recipients/segment",
        json={"segment_id": await segment(api, tenant, {})},
        headers=tenant.admin,
    )
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batch_id"]
    async with sessions() as session, session.begin():
        await session.execute(
            update(Campaign).where(Campaign.id == campaign).values(status=CampaignStatus.ARCHIVED)
        )
        batch = await session.get_one(EnrolmentBatch, batch_id)
    activities = EnrolmentActivities(sessions, settings, Workflows(env.client, settings.task_queue))
    call = EnrolmentBatchInput(batch.id, batch.key)
    assert await ActivityEnvironment().run(activities.start_enrolments, call) == 0
    url = f"/campaigns/{campaign}/recipients/batches/{batch_id}"
    results = (await api.get(f"{url}/results", headers=tenant.admin)).json()
    assert {r["reason"] for r in results["items"]} == {"campaign_closed"}
    assert "is archived" in results["items"][0]["detail"] and results["total"] == 3
    progress = (await api.get(url, headers=tenant.admin)).json()
    assert (progress["refused"], progress["added"], progress["finished_at"] is None) == (
        3,
        0,
        False,
    )


async def test_an_empty_segment_makes_a_finished_batch_and_a_draft_takes_none(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    campaign = await saved_campaign(api, tenant, [touchpoint(tenant, "One")])
    nobody = await segment(api, tenant, {"tags": ["nobody"]})
    empty = await api.post(
        f"/campaigns/{campaign}/recipients/segment",
        json={"segment_id": nobody},
        headers=tenant.admin,
    )
    assert empty.status_code == 202, empty.text
    assert empty.json()["total"] == 0 and empty.json()["finished_at"] is not None
    draft = await api.post(
        "/campaigns",
        json={"name": "Draft", "touchpoints": [touchpoint(tenant, "One")]},
        headers=tenant.admin,
    )
    async with unchanged(sessions):
        refused = await api.post(
            f"/campaigns/{draft.json()['id']}/recipients/segment",
            json={"segment_id": nobody},
            headers=tenant.admin,
        )
    assert refused.status_code == 409 and "is a draft" in refused.json()["detail"]
