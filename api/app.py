"""The FastAPI application: its factory, and the lifespan that owns the store and Temporal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from temporalio.client import Client

from api import errors
from api.deps import Clock
from api.routers import (
    campaigns,
    candidates,
    company,
    events,
    mailbox,
    numbers,
    pipelines,
    recipients,
    segments,
    tracking,
    unsubscribe,
    users,
)
from config import Settings
from mail.sandbox import TemplateSandbox
from orchestration import Workflows
from store.session import SessionFactory, create_engine, create_session_factory

DESCRIPTION = """
Nurture campaigns for candidates, on Temporal.

Authenticate with `Authorization: Bearer <API key>`: an admin's key for campaigns and
recipients, a service key for candidates and events.
"""


async def system_clock() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    temporal: Client | None = None,
    sessions: SessionFactory | None = None,
    clock: Clock = system_clock,
    templates: TemplateSandbox | None = None,
) -> FastAPI:
    """Tests pass their own Temporal client, sessions, clock and template processes;
    `make run` passes none."""
    settings.check_for_service()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        if sessions is None:
            engine = create_engine(settings.database_url)
            app.state.sessions = create_session_factory(engine)
        else:
            app.state.sessions = sessions
        client = temporal or await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
        app.state.workflows = Workflows(client, settings.task_queue)
        own_templates = None
        if templates is None:
            own_templates = TemplateSandbox(settings.render_processes)
            await own_templates.start()
        app.state.templates = templates or own_templates
        try:
            yield
        finally:
            if own_templates is not None:
                await own_templates.close()
            if engine is not None:
                await engine.dispose()

    # /docs and /redoc load Swagger UI and Redoc from the installed package, not a CDN, so
    # they work offline.
    app = FastAPIOffline(
        title="nurture",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    app.state.settings = settings
    app.state.clock = clock
    errors.install(app)
    for module in (
        candidates,
        campaigns,
        numbers,
        recipients,
        segments,
        events,
        unsubscribe,
        mailbox,
        pipelines,
        users,
        company,
        tracking,
    ):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> FastAPI:
    """`uvicorn --factory api.app:main`."""
    return create_app(Settings())
