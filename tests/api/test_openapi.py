"""The API document tells the truth: schemathesis over the ASGI app, and each operation's list."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter
from schemathesis import Config
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic
from schemathesis.openapi import from_asgi
from schemathesis.python.asgi import shutdown_lifespans
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.deps import WorkflowsDep
from api.schemas import TIME_OF_DAY_PATTERN, TimeOfDay
from config import Settings
from mail import links
from tests.api.conftest import SUMMARY
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Tenant

# The run's bound: every phase (examples, coverage, fuzzing, stateful) once, with this
# many examples an operation: 20 to 35 s on a quiet 2-core machine, 50 to 55 s on a busy
# one. The deadline is only for a run that hangs (it stops there, and fails), never a
# timing goal: it is far beyond what a slow machine takes.
MAX_EXAMPLES = 10
DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class Seed:
    """Records the run can reach, so that cases get past 404 to 200 and 409."""

    users: list[int]
    campaigns: list[int]
    candidates: list[int]
    batches: list[int]
    segments: list[int]
    tokens: list[str]
    files: list[str]


@dataclass
class Figures:
    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        answered = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"schemathesis: {self.operations} operations, {self.cases} cases ({answered}), "
            f"{len(self.failures)} failures, {len(self.errors)} errors, {self.seconds:.1f} s"
        )


_MESSAGE = "From: ada@acme.example\r\nTo: qa@example.org\r\nSubject: Hello\r\n\r\nHi.\r\n"


async def _seed(api: httpx.AsyncClient, tenant: Tenant, settings: Settings) -> Seed:
    """Campaigns, candidates, a bulk batch, unsubscribe tokens, a message in the sink."""
    saved = await saved_campaign(
        api, tenant, [touchpoint(tenant, "One"), touchpoint(tenant, "Two", interval_days=7)]
    )
    draft = await api.post(
        "/campaigns",
        json={"name": "Draft", "touchpoints": [touchpoint(tenant, "One")]},
        headers=tenant.admin,
    )
    assert draft.status_code == 201, draft.text
    enrolled = await add_candidate(api, tenant, first_name="Ada")
    free = await add_candidate(api, tenant, first_name="Grace", email="grace@example.org")
    leaving = await add_candidate(api, tenant, first_name="Linus", email="linus@example.org")
    await enrol(api, tenant, saved, enrolled)
    await enrol(api, tenant, saved, leaving)
    bulk = await api.post(
        f"/campaigns/{saved}/recipients/bulk", json={"candidate_ids": [free]}, headers=tenant.admin
    )
    assert bulk.status_code == 202, bulk.text
    segment = await api.post(
        "/segments", json={"name": "Consented", "filter": {"consent": True}}, headers=tenant.admin
    )
    assert segment.status_code == 201, segment.text
    secret = settings.signing_secret.get_secret_value()
    assert settings.mail_sink_dir is not None
    (settings.mail_sink_dir / "0001.eml").write_text(_MESSAGE)
    return Seed(
        users=[tenant.admin_id, tenant.recruiter_id],
        campaigns=[saved, draft.json()["id"]],
        candidates=[enrolled, free, leaving],
        batches=[bulk.json()["batch_id"]],
        segments=[segment.json()["id"]],
        tokens=[
            links.sign_unsubscribe(secret, tenant.company_id, leaving),
            links.sign_unsubscribe(secret, tenant.company_id, links.TEST_CANDIDATE),
        ],
        files=["0001.eml"],
    )


def _also_refused(status: int, **operations: Any) -> dict[str, Any]:
    """These operations may refuse a schema-valid request with this status."""
    expected = ["2xx", "3xx", str(status), "401", "403", "404", "409", "429", "5xx"]
    return {**operations, "checks": {"positive_data_acceptance": {"expected-statuses": expected}}}


_DOMAIN_RULES = [
    "POST /candidates",
    "PATCH /candidates/{candidate_id}",
    "POST /events",
    "POST /campaigns",
    "PATCH /campaigns/{campaign_id}",
    "POST /campaigns/{campaign_id}/test",
    "PUT /pipeline",
    "PUT /jobs/{job_id}/pipeline",
    "POST /jobs/{job_id}/applications",
    "POST /jobs/{job_id}/candidates/{candidate_id}/moves",
    "POST /jobs/{job_id}/candidates/{candidate_id}/moves/preview",
    "POST /jobs/{job_id}/candidates/{candidate_id}/disqualifications",
    "POST /jobs/{job_id}/candidates/{candidate_id}/disqualifications/preview",
    "PUT /disqualification-reasons",
    "POST /jobs/{job_id}/bulk-moves",
    "POST /jobs/{job_id}/bulk-moves/preview",
    "POST /segments",
    "PATCH /segments/{segment_id}",
    "POST /campaigns/{campaign_id}/recipients/segment",
]


def _config(tenant: Tenant, seed: Seed) -> Config:
    """Every check, the admin's key for its routes and the service key for its own."""
    ids = {"probability": 0.8}
    # By the label ("POST /events"): two include keys would select either, not both.
    service = {"include-name-regex": "^(POST|PATCH) /(candidates|events)"}
    return Config.from_dict(
        {
            "seed": 20260101,
            "generation": {"max-examples": MAX_EXAMPLES},
            "request-timeout": 20,
            "headers": tenant.admin,
            "operations": [
                {**service, "headers": tenant.service},
                # Rules a schema cannot state, each refusing a request the schema allows:
                # an Idempotency-Key used before for another request, an event with neither
                # id nor key, a touchpoint whose sender is not the company's, whose template
                # names an unknown variable or which has an interval but comes first, an
                # address whose domain cannot receive mail; a stage action with two timings,
                # an e-mail of the first stage without a sender, or one "from the mover"
                # in a move by a service key; a teammate, job or pool an action names that
                # is not the company's; a bulk move's stage or reason that is not there;
                # a segment's custom field the company does not declare, or its
                # last_contacted asking two things at once, or a segment that is not there;
                # and a token must be signed.
                _also_refused(422, **{"include-name": _DOMAIN_RULES}),
                _also_refused(400, **{"include-path": "/unsubscribe/{token}"}),
            ],
            "dictionaries": {
                "users": {"values": seed.users},
                "campaigns": {"values": seed.campaigns},
                "candidates": {"values": seed.candidates},
                "batches": {"values": seed.batches},
                "segments": {"values": seed.segments},
                "tokens": {"values": seed.tokens},
                "files": {"values": seed.files},
            },
            "parameters": {
                "path.campaign_id": {"dictionary": "campaigns", **ids},
                "path.candidate_id": {"dictionary": "candidates", **ids},
                "path.batch_id": {"dictionary": "batches", **ids},
                "path.segment_id": {"dictionary": "segments", **ids},
                "body.segment_id": {"dictionary": "segments", **ids},
                "path.token": {"dictionary": "tokens", **ids},
                "path.file": {"dictionary": "files", **ids},
                "body.candidate_id": {"dictionary": "candidates", **ids},
                "body.candidate_ids[*]": {"dictionary": "candidates", **ids},
                "body.touchpoints[*].sender_user_id": {"dictionary": "users", **ids},
                # The company declares its own custom fields: the document cannot list them.
                "body.custom_fields": {"role": "Engineer"},
            },
        }
    )


def _run(app: FastAPI, config: Config) -> Figures:
    """In a thread: schemathesis drives the app on its own event loop, where the app's
    lifespan connects its own Temporal client and store engine, while the test's loop
    keeps the worker polling."""
    figures = Figures()
    started = time.monotonic()
    statistic = Statistic()
    try:
        schema = from_asgi("/openapi.json", app, config=config)
        figures.operations = schema.statistic.operations.selected
        stream = from_schema(schema).execute()
        for event in stream:
            if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
                statistic.on_scenario_finished(event.recorder)
                figures.statuses.update(
                    i.response.status_code
                    for i in event.recorder.interactions.values()
                    if i.response is not None
                )
            elif isinstance(event, events.NonFatalError):
                # An exception out of the app (a 500 in production) arrives here.
                figures.errors.append(f"{event.label}: {event.value!r}")
            elif isinstance(event, events.FatalError):
                figures.errors.append(f"schemathesis stopped: {event.exception!r}")
            elif isinstance(event, events.EngineFinished):
                figures.failures.extend(f"{f.title}: {f.message}" for f in event.failures)
            if time.monotonic() - started > DEADLINE_SECONDS and not stream.stop_event.is_set():
                figures.errors.append(f"the run took more than {DEADLINE_SECONDS:.0f} s")
                stream.stop()
    finally:
        shutdown_lifespans()
    figures.cases = statistic.total_cases
    for label, groups in statistic.failures.items():
        for group in groups.values():
            answer = ""
            if group.response is not None:
                body = group.response.content[:300].decode(errors="replace")
                answer = f"\n  answered {group.response.status_code}: {body}"
            figures.failures.extend(
                f"{label}: {f.title}: {f.message}{answer}\n  {group.code_sample}"
                for f in group.failures
            )
    figures.seconds = time.monotonic() - started
    return figures


async def test_schemathesis_finds_no_server_error_nor_schema_violation(
    request: pytest.FixtureRequest,
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    settings: Settings,
    tmp_path: Path,
) -> None:
    # The app under test makes its own Temporal client and engine in its lifespan, on the
    # loop schemathesis runs it on; `api`'s worker serves both apps' workflows.
    target = env.client.service_client.config.target_host
    (sink := tmp_path / "sink").mkdir()
    settings = settings.model_copy(update={"temporal_address": target, "mail_sink_dir": sink})
    seed = await _seed(api, tenant, settings)
    app = create_app(settings)
    figures = await asyncio.to_thread(_run, app, _config(tenant, seed))
    request.config.stash.setdefault(SUMMARY, []).append(figures.line())
    report = "\n".join([figures.line(), *figures.failures, *figures.errors])
    assert not (figures.failures or figures.errors), report
    reached = figures.cases > 500 and all(figures.statuses[s] for s in (200, 201, 409))
    assert reached, f"the seeded records were not reached: {figures.line()}"


# -- the document, checked without a run --------------------------------------------------

_ERROR = "#/components/schemas/ErrorOut"
_INVALID = "#/components/schemas/InvalidOut"


def _can_fail(parameter: dict[str, Any]) -> bool:
    """Whether a value can be refused: anything but a plain string."""
    schema = parameter.get("schema", {})
    return set(schema) - {"title", "description"} != {"type"} or schema["type"] != "string"


def _uses_temporal(route: APIRoute) -> bool:
    """Routes reach Temporal through `WorkflowsDep` only."""
    temporal = get_args(WorkflowsDep)[1].dependency
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is temporal:
            return True
        stack.extend(dependant.dependencies)
    return False


def test_every_operation_lists_what_it_can_answer_with_the_error_body(
    settings: Settings,
) -> None:
    app = create_app(settings)
    document = app.openapi()
    temporal = {
        (method.lower(), context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(route := context.original_route, APIRoute) and _uses_temporal(route)
        for method in context.methods or ()
    }
    assert temporal, "no route depends on Temporal?"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            answers = operation["responses"]
            needed = set()
            if operation.get("security"):
                needed |= {"401", "403"}
            parameters = operation.get("parameters", [])
            if any(p["in"] == "path" for p in parameters):
                needed.add("404")
            if "requestBody" in operation or any(_can_fail(p) for p in parameters):
                needed.add("422")
            if (method, path) in temporal:
                needed.add("503")
            assert needed <= set(answers), f"{where} does not list {sorted(needed - set(answers))}"
            for status, answer in answers.items():
                if int(status) < 400:
                    continue
                content = answer.get("content", {})
                if "application/json" not in content:
                    assert set(content) == {"text/html"}, f"{where} {status}: {content}"
                    continue
                ref = content["application/json"]["schema"].get("$ref")
                assert ref == (_INVALID if status == "422" else _ERROR), f"{where} {status}: {ref}"
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["InvalidOut"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/ProblemOut"
    }


def _accepts(text: str) -> bool:
    try:
        TypeAdapter(TimeOfDay).validate_python(text)
    except ValueError:
        return False
    return True


def test_send_time_pattern_says_exactly_what_the_validator_accepts() -> None:
    # A JSON Schema validator, not Python's `re`: `$` means the end, not before a newline.
    schema = jsonschema_rs.validator_for({"type": "string", "pattern": TIME_OF_DAY_PATTERN})
    parts = ["", "0", "9", "09", "12", "19", "23", "24", "29", "30", "59", "60", "99", "009"]
    texts = [f"{h}:{m}" for h in parts for m in parts]
    texts += ["09:30:00", "09:30Z", " 09:30", "09:30\n", "٠٩:٣٠", "0930", "9h30"]
    for text in texts:
        assert schema.is_valid(text) == _accepts(text), text
    assert _accepts("9:30") and _accepts("00:00") and _accepts("23:59")


async def test_a_wrong_method_answers_405_with_every_method_of_the_path(
    settings: Settings,
) -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://nurture.test") as client:
        for method in ("OPTIONS", "DELETE", "PUT"):
            response = await client.request(method, "/campaigns/7")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, PATCH"
            assert response.json() == {
                "detail": f"/campaigns/7 does not answer {method}: it allows GET, PATCH."
            }
        token = await client.options("/unsubscribe/abc")
        assert token.headers["allow"] == "GET, POST"
        # Not DELETE: `bulk` is no candidate id.
        bulk = await client.options("/campaigns/7/recipients/bulk")
        assert bulk.headers["allow"] == "POST"
        nothing = await client.get("/nowhere")
        assert nothing.status_code == 404 and "/nowhere" in nothing.json()["detail"]


async def test_a_body_that_is_not_text_is_refused_like_json_that_does_not_parse(
    settings: Settings,
) -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://nurture.test") as client:
        json = {"Content-Type": "application/json"}
        response = await client.post("/campaigns", content=b'{"name": "\xc3("}', headers=json)
    assert response.status_code == 422
    body = response.json()
    assert "not valid JSON" in body["detail"] and "UTF-8" in body["detail"], body
    assert [e["type"] for e in body["errors"]] == ["json_invalid"]
