"""Shared fixtures: one time-skipping Temporal server, a fresh store per test (SQLite, and
PostgreSQL when TEST_DATABASE_URL is set), a real SMTP server, the API over HTTP."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from orchestration import SEARCH_ATTRIBUTES
from store.companies import create_company, create_user, issue_api_key
from store.migrate import upgrade
from store.models import Base, Enrolment, Move, Role
from store.session import SessionFactory, create_engine, create_session_factory
from worker import activities_of, build_worker
from workflows.contracts import nurture_workflow_id, stage_actions_workflow_id

# -- process exit -------------------------------------------------------------------------
# The SDK's runtime sometimes aborts at interpreter exit (sdk-python #300); leave with the
# tests' own status before that teardown can run, so the exit code is the tests'.


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT] = int(exitstatus)


_EXIT = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _EXIT in config.stash:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash[_EXIT])


# -- Temporal -----------------------------------------------------------------------------


def _binary(name: str) -> str:
    return str(Path(sysconfig.get_path("scripts")) / name)


_VALUE_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: _VALUE_TYPES[
                    key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")
                ]
                for key in SEARCH_ATTRIBUTES
            },
        )
    )


async def _start_test_server() -> WorkflowEnvironment:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        # The default 5 s is too short for the JVM on a loaded 2-core machine.
        test_server_startup_timeout=timedelta(seconds=60),
    )
    await register_search_attributes(environment.client)
    return environment


@dataclass
class _TestServer:
    running: WorkflowEnvironment | None = None


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="session")
async def _test_server() -> AsyncIterator[_TestServer]:
    server = _TestServer()
    yield server
    if server.running is not None:
        await server.running.shutdown()


@pytest.fixture
async def env(
    request: pytest.FixtureRequest, _test_server: _TestServer
) -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server for the run, replaced after a test that failed: that test
    may have left workflows whose tasks nobody polls any more, and the server's clock
    cannot skip past them, so every later test's sleep would time out (CI saw 36 tests
    fail after one)."""
    if _test_server.running is None:
        _test_server.running = await _start_test_server()
    yield _test_server.running
    if request.node.stash.get(_FAILED, False):
        await _test_server.running.shutdown()
        _test_server.running = None


# -- store --------------------------------------------------------------------------------

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A database of this run's own on TEST_DATABASE_URL's server, so that runs side by
    side (a developer's and a fresh-clone check) never truncate each other's tables."""
    server = make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
    name = f"nurture_test_{uuid.uuid4().hex[:12]}"
    admin = create_sync_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty store for this test."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "nurture.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgresql_url")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    if engine.dialect.name == "postgresql":
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


# -- SMTP ---------------------------------------------------------------------------------


@dataclass
class Inbox:
    """What the SMTP peer received, parsed; `wait_for` polls for arrivals."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    # When each message was taken (the loop's monotonic clock), after its final dot.
    arrived: list[float] = field(default_factory=list)

    # When set, the peer refuses every recipient with this reply (e.g. a 5xx).
    refuse_with: str | None = None
    # When set, the peer answers the next final dot with this reply (e.g. a 4xx), once.
    refuse_data_once_with: str | None = None
    # A slow peer: it waits this long before answering RCPT, and again after the dot.
    delay_seconds: float = 0.0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_with is not None:
            return self.refuse_with
        await asyncio.sleep(self.delay_seconds)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data_once_with is not None:
            refusal, self.refuse_data_once_with = self.refuse_data_once_with, None
            return refusal
        data = envelope.original_content or envelope.content
        self.raw.append(data)
        message = message_from_bytes(data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.arrived.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay_seconds)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [
            m
            for m, (_, rcpts) in zip(self.messages, self.envelopes, strict=True)
            if address in rcpts
        ]

    async def wait_for(self, count: int, seconds: float = 10.0) -> list[EmailMessage]:
        """Wait (in real time) until `count` e-mails arrived; fails after `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} e-mails, got {len(self.messages)}")
            await asyncio.sleep(0.02)
        return self.messages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


# -- the service --------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, inbox: tuple[Inbox, int]) -> Settings:
    return Settings(
        database_url=database_url,
        smtp_port=inbox[1],
        task_queue=f"nurture-{uuid.uuid4().hex[:8]}",
        public_base_url="https://nurture.test",
        mail_domain="nurture.test",
        environment="development",
    )


@pytest.fixture
def mailer(settings: Settings) -> Mailer:
    return Mailer(settings)


@pytest.fixture(scope="session")
async def templates() -> AsyncIterator[TemplateSandbox]:
    """The template processes, started once: the API and every worker of the run share them."""
    async with TemplateSandbox(2) as sandbox:
        yield sandbox


@dataclass(frozen=True)
class Tenant:
    company_id: int
    admin_id: int
    recruiter_id: int
    admin: dict[str, str]
    recruiter: dict[str, str]
    service: dict[str, str]


async def make_tenant(
    sessions: SessionFactory, name: str, *, time_zone: str = "Europe/Paris", add_on: bool = True
) -> Tenant:
    async with sessions() as session, session.begin():
        company = await create_company(
            session,
            name=name,
            time_zone=time_zone,
            campaigns_enabled=add_on,
            custom_fields=["role"],
            brand_logo_url="https://cdn.example/logo.png",
        )
        domain = f"{name.lower()}.example"
        admin = await create_user(
            session, company.id, role=Role.ADMIN, name="Ada Admin", email=f"ada@{domain}",
            title="Head of Talent",
        )  # fmt: skip
        recruiter = await create_user(
            session, company.id, role=Role.RECRUITER, name="Rex Recruiter", email=f"rex@{domain}"
        )
        keys = {
            role: await issue_api_key(session, company.id, role=role, user_id=user)
            for role, user in (
                (Role.ADMIN, admin.id),
                (Role.RECRUITER, recruiter.id),
                (Role.SERVICE, None),
            )
        }
    return Tenant(
        company_id=company.id,
        admin_id=admin.id,
        recruiter_id=recruiter.id,
        admin={"Authorization": f"Bearer {keys[Role.ADMIN]}"},
        recruiter={"Authorization": f"Bearer {keys[Role.RECRUITER]}"},
        service={"Authorization": f"Bearer {keys[Role.SERVICE]}"},
    )


@pytest.fixture
async def tenant(sessions: SessionFactory) -> Tenant:
    return await make_tenant(sessions, "Acme")


@pytest.fixture
async def other_tenant(sessions: SessionFactory) -> Tenant:
    return await make_tenant(sessions, "Globex")


@pytest.fixture
async def api(
    request: pytest.FixtureRequest,
    env: WorkflowEnvironment,
    settings: Settings,
    sessions: SessionFactory,
    mailer: Mailer,
    templates: TemplateSandbox,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over HTTP (ASGI), on the test server's clock, with a worker polling its task
    queue (unless the test is marked `own_worker`: it runs its own). Afterwards, every
    recipient's and move's workflow of this test is ended, so the next test starts on a
    quiet server: the time-skipping server cannot skip past a task that nobody polls."""
    app = create_app(
        settings,
        temporal=env.client,
        sessions=sessions,
        clock=env.get_current_time,
        templates=templates,
    )
    async with AsyncExitStack() as stack:
        if request.node.get_closest_marker("own_worker") is None:
            activities = activities_of(sessions, mailer, settings, env.client, templates)
            await stack.enter_async_context(build_worker(env.client, settings, activities))
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="https://nurture.test"
            )
        )
        async with sessions() as session:
            enrolments = (await session.scalars(select(Enrolment))).all()
            moves = (await session.scalars(select(Move))).all()
        workflow_ids = [nurture_workflow_id(e.campaign_id, e.candidate_id) for e in enrolments]
        workflow_ids += [stage_actions_workflow_id(m.job_id, m.candidate_id, m.key) for m in moves]
        for workflow_id in workflow_ids:
            handle = env.client.get_workflow_handle(workflow_id)
            try:
                await handle.terminate("test finished")
            except RPCError:
                pass
