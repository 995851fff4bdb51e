"""Touchpoint templates over HTTP: whatever a template does, a campaign that holds it is
refused naming the limit, nothing changes, and the API keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from api.schemas import TouchpointIn
from mail.rendering import LIMITS
from mail.sandbox import TemplateSandbox
from store.campaigns import MAX_TOUCHPOINTS
from store.models import Format, Touchpoint
from store.session import SessionFactory
from tests.builders import touchpoint
from tests.conftest import Tenant
from tests.snapshot import unchanged

# ~30 s of CPU in a filter, within every count: only the time limit stops it.
SLOW = '{{ "ab"|slice(100000000)|select|list }}'

HOSTILE = [
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "The body of touchpoint 2 asks range() for more than 1,000 numbers.",
        id="nested-range",
    ),
    pytest.param(
        "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
        "The body of touchpoint 2 loops more than 1,000 times (all its loops together).",
        id="nested-loops",
    ),
    pytest.param(
        "{{ 10 ** (10 ** 7) }}",
        "The body of touchpoint 2 computes a number beyond ±10^15.",
        id="huge-power",
    ),
    pytest.param(
        "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
        "The body of touchpoint 2 nests deeper than 50 levels.",
        id="5000-parentheses",
    ),
    pytest.param(
        # 2,000 nested ifs are longer than a body may be (below); 1,100 fit.
        "{%if 1%}" * 1100 + "x" + "{%endif%}" * 1100,
        "The body of touchpoint 2 nests deeper than 50 levels.",
        id="1100-nested-ifs",
    ),
    pytest.param(
        # Within our nesting limit, past Python's own: 20 statically nested blocks.
        "{% for a in [1] %}" * 21 + "x" + "{% endfor %}" * 21,
        "The body of touchpoint 2 nests more blocks ({% for %}, {% if %}...) inside one "
        "another than the 20 Python can compile.",
        id="21-nested-fors",
    ),
    pytest.param(
        "{{ " + "9" * 5000 + " }}",
        "The body of touchpoint 2 is not a valid template: exceeds the limit (4300 digits)",
        id="5000-digit-literal",
    ),
    pytest.param(
        "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000,
        "should have at most 20000 characters",
        id="2000-nested-ifs",
    ),
    pytest.param(
        "Hi {{ first_name.upper }}",
        "The body of touchpoint 2 prints the method 'upper' instead of calling it: "
        "write first_name.upper().",
        id="printed-method",
    ),
    pytest.param(
        "x" * 20_001,
        "should have at most 20000 characters",
        id="long-body",
    ),
    pytest.param(
        "{{ first_name|center(1000000000) }}",
        "The body of touchpoint 2 uses more than 512 MiB of memory.",
        id="memory",
    ),
    pytest.param(
        '{{ "x" * 10 ** 10 }}',
        "The body of touchpoint 2 builds a text or list longer than 100,000 items.",
        id="repeated-text",
    ),
    pytest.param(
        '{% for i in range(1000) %}{{ "x" * 101 }}{% endfor %}',
        "The body of touchpoint 2 renders to more than 100,000 characters.",
        id="long-output",
    ),
    pytest.param(
        SLOW,
        "The body of touchpoint 2 takes longer than 2 seconds to render.",
        id="slow",
    ),
]


def campaign(tenant: Tenant, body: str = "Hi", subject: str = "News") -> dict[str, Any]:
    return {
        "name": "Passive engineers",
        "touchpoints": [
            touchpoint(tenant, "Hello {{ first_name }}"),
            touchpoint(tenant, subject, interval_days=1, body=body),
        ],
    }


@pytest.mark.parametrize(("body", "says"), HOSTILE)
async def test_a_hostile_body_is_refused_naming_the_limit(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, body: str, says: str
) -> None:
    async with unchanged(sessions):
        response = await api.post("/campaigns", json=campaign(tenant, body), headers=tenant.admin)
    assert response.status_code == 422, response.text
    assert says.casefold() in response.json()["detail"].casefold()


@pytest.mark.parametrize(
    ("subject", "says"),
    [
        ("x" * 501, "should have at most 500 characters"),
        (
            "{% for i in range(100) %}0123456789{% endfor %}",
            "The subject of touchpoint 2 renders to more than 900 characters.",
        ),
        (
            "{{ first_name.lower }}",
            "The subject of touchpoint 2 prints the method 'lower' instead of calling it",
        ),
    ],
)
async def test_a_hostile_subject_is_refused_naming_the_limit(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, subject: str, says: str
) -> None:
    async with unchanged(sessions):
        response = await api.post(
            "/campaigns", json=campaign(tenant, subject=subject), headers=tenant.admin
        )
    assert response.status_code == 422, response.text
    assert says.casefold() in response.json()["detail"].casefold()


async def test_every_path_that_checks_templates_refuses_one_past_a_limit(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    created = await api.post("/campaigns", json=campaign(tenant), headers=tenant.admin)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    says = "The body of touchpoint 2 computes a number beyond ±10^15."
    async with unchanged(sessions):
        edited = await api.patch(
            f"/campaigns/{cid}",
            json={"touchpoints": campaign(tenant, "{{ 10 ** (10 ** 7) }}")["touchpoints"]},
            headers=tenant.admin,
        )
    assert (edited.status_code, edited.json()["detail"]) == (422, says)
    # A draft written before the limits existed: saving or testing it checks it again.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Touchpoint)
            .where(Touchpoint.campaign_id == cid, Touchpoint.position == 1)
            .values(body="{{ 10 ** (10 ** 7) }}")
        )
    async with unchanged(sessions):
        saved = await api.post(f"/campaigns/{cid}/save", headers=tenant.admin)
        tested = await api.post(
            f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
        )
    assert (saved.status_code, saved.json()["detail"]) == (422, says)
    assert (tested.status_code, tested.json()["detail"]) == (422, says)
    got = await api.get(f"/campaigns/{cid}", headers=tenant.admin)
    assert got.json()["status"] == "draft"


async def test_the_api_keeps_answering_while_a_slow_template_is_checked(
    api: httpx.AsyncClient, tenant: Tenant
) -> None:
    """The check runs in another process: every other request (any tenant's) is served
    meanwhile; checked on the API's own event loop, none would be until it ended."""
    saving = asyncio.create_task(
        api.post("/campaigns", json=campaign(tenant, SLOW), headers=tenant.admin)
    )
    answered = 0
    while not saving.done():
        health = await api.get("/health")
        assert health.status_code == 200
        answered += 1
        await asyncio.sleep(0.05)
    response = await saving
    assert response.status_code == 422
    assert "takes longer than 2 seconds to render" in response.json()["detail"]
    assert answered >= 10
    listed = await api.get("/campaigns", headers=tenant.admin)
    assert (listed.status_code, listed.json()) == (200, [])


def test_the_api_bounds_the_templates_as_the_renderer_does() -> None:
    schema = TouchpointIn.model_json_schema()["properties"]
    assert schema["subject"]["maxLength"] == LIMITS.subject_chars
    assert schema["body"]["maxLength"] == LIMITS.body_chars


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{% foo %}", "The body of touchpoint 2 is not a valid template: encountered unknown tag"),
        ("{% if x %}", "The body of touchpoint 2 is not a valid template: unexpected end of"),
    ],
)
async def test_a_syntax_error_reads_as_one_sentence(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory, body: str, says: str
) -> None:
    async with unchanged(sessions):
        response = await api.post("/campaigns", json=campaign(tenant, body), headers=tenant.admin)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(says), detail
    assert not re.search(r": [A-Z][a-z]", detail), detail
    assert ".." not in detail


def many(tenant: Tenant, count: int) -> list[dict[str, Any]]:
    return [touchpoint(tenant, "News")] + [
        touchpoint(tenant, "News", interval_days=1) for _ in range(count - 1)
    ]


async def test_a_campaign_past_the_touchpoint_limit_is_refused_naming_it(
    api: httpx.AsyncClient, tenant: Tenant, sessions: SessionFactory
) -> None:
    limit = MAX_TOUCHPOINTS
    says = f"touchpoints: list should have at most {limit} items after validation, not {limit + 1}"
    at_limit = await api.post(
        "/campaigns",
        json={"name": "Long", "touchpoints": many(tenant, limit)},
        headers=tenant.admin,
    )
    assert at_limit.status_code == 201, at_limit.text
    cid = at_limit.json()["id"]
    async with unchanged(sessions):
        created = await api.post(
            "/campaigns",
            json={"name": "Longer", "touchpoints": many(tenant, limit + 1)},
            headers=tenant.admin,
        )
        edited = await api.patch(
            f"/campaigns/{cid}", json={"touchpoints": many(tenant, limit + 1)}, headers=tenant.admin
        )
    for response in (created, edited):
        assert response.status_code == 422, response.text
        assert says in response.json()["detail"]
    # A draft stored before the limit: saving or testing it refuses it.
    async with sessions() as session, session.begin():
        await session.execute(
            insert(Touchpoint).values(
                company_id=tenant.company_id,
                campaign_id=cid,
                position=limit,
                interval_days=1,
                send_hour=9,
                send_minute=0,
                sender_user_id=tenant.admin_id,
                format=Format.PLAIN,
                subject="News",
                body="Hi",
            )
        )
    async with unchanged(sessions):
        saved = await api.post(f"/campaigns/{cid}/save", headers=tenant.admin)
        tested = await api.post(
            f"/campaigns/{cid}/test", json={"recipients": ["me@acme.example"]}, headers=tenant.admin
        )
    for response in (saved, tested):
        assert (response.status_code, response.json()["detail"]) == (
            422,
            f"A campaign has at most {limit} touchpoints; this one has {limit + 1}.",
        )


async def test_no_database_connection_waits_on_a_template_check(
    api: httpx.AsyncClient,
    tenant: Tenant,
    engine: AsyncEngine,
    templates: TemplateSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check takes up to seconds per template: a request that held a connection of the
    pool meanwhile would let a few dozen slow saves leave every other request none."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    held: list[int] = []
    check = templates.check

    async def watched(*args: Any, **kwargs: Any) -> None:
        held.append(pool.checkedout())
        await check(*args, **kwargs)

    monkeypatch.setattr(templates, "check", watched)
    created = await api.post("/campaigns", json=campaign(tenant), headers=tenant.admin)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    edited = await api.patch(
        f"/campaigns/{cid}",
        json={"touchpoints": campaign(tenant)["touchpoints"]},
        headers=tenant.admin,
    )
    assert edited.status_code == 200, edited.text
    tested = await api.post(
        f"/campaigns/{cid}/test",
        json={"recipients": ["me@acme.example"], "candidate_id": 999_999},
        headers=tenant.admin,
    )
    assert tested.status_code == 404, tested.text  # the candidate, checked after the templates
    saved = await api.post(f"/campaigns/{cid}/save", headers=tenant.admin)
    assert saved.status_code == 200, saved.text
    # Two templates per touchpoint, two touchpoints, four requests; none holding a connection.
    assert held == [0] * 16
