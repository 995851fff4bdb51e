"""Records workflow histories for the replay test: run it when a workflow changes on
purpose, keep the files of the versions before, and add the new ones.

    .venv/bin/python -m tests.workflows.histories.record [version-label]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.migrate import upgrade
from store.session import create_engine, create_session_factory
from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, _binary, _free_port, make_tenant, register_search_attributes
from worker import activities_of, build_worker
from workflows.contracts import nurture_workflow_id

HERE = Path(__file__).resolve().parent


async def record(label: str) -> None:
    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder / 'nurture.db'}"
    upgrade(url)
    inbox, port = Inbox(), _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server")
    )
    await register_search_attributes(env.client)
    settings = Settings(
        database_url=url,
        smtp_port=port,
        task_queue=f"record-{uuid.uuid4()}",
        environment="development",
    )
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    templates = TemplateSandbox()
    app = create_app(
        settings,
        temporal=env.client,
        sessions=sessions,
        clock=env.get_current_time,
        templates=templates,
    )
    activities = activities_of(sessions, Mailer(settings), settings, env.client, templates)
    transport = httpx.ASGITransport(app=app)
    async with (
        templates,
        build_worker(env.client, settings, activities),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://nurture.test") as api,
    ):
        tenant = await make_tenant(sessions, "Acme")
        plan = [
            touchpoint(tenant, "One"),
            touchpoint(tenant, "Two", interval_days=2, format="branded"),
            touchpoint(tenant, "Three", interval_days=3),
        ]
        campaign = await saved_campaign(api, tenant, plan, exit_options=["applied"])
        completed = await add_candidate(api, tenant, email="c@example.org")
        paused = await add_candidate(api, tenant, email="p@example.org")
        applied = await add_candidate(api, tenant, email="a@example.org")
        for candidate in (completed, paused, applied):
            await enrol(api, tenant, campaign, candidate)
        # From v4: a whole campaign paused while a touchpoint falls due, then resumed.
        held_campaign = await saved_campaign(api, tenant, plan)
        held = await add_candidate(api, tenant, email="h@example.org")
        await enrol(api, tenant, held_campaign, held)
        await env.sleep(timedelta(days=2))
        assert (
            await api.post(f"/campaigns/{held_campaign}/pause", headers=tenant.admin)
        ).is_success
        recipients = f"/campaigns/{campaign}/recipients/{paused}"
        assert (await api.post(f"{recipients}/pause", headers=tenant.admin)).status_code == 200
        event = {"id": "ats-1", "type": "applied", "candidate_id": applied}
        assert (await api.post("/events", json=event, headers=tenant.service)).status_code == 200
        await env.sleep(timedelta(days=3))
        assert (await api.post(f"{recipients}/resume", headers=tenant.admin)).status_code == 200
        resumed = await api.post(f"/campaigns/{held_campaign}/resume", headers=tenant.admin)
        assert resumed.json()["released"] == 1
        await env.sleep(timedelta(days=10))
        for name, campaign_id, candidate in (
            ("completed", campaign, completed),
            ("paused", campaign, paused),
            ("applied", campaign, applied),
            ("held", held_campaign, held),
        ):
            handle = env.client.get_workflow_handle(nurture_workflow_id(campaign_id, candidate))
            await handle.result()
            history = await handle.fetch_history()
            path = HERE / f"nurture-{label}-{name}.json"
            path.write_text(history.to_json())
            print(f"wrote {path.relative_to(Path.cwd())}")
    await engine.dispose()
    await env.shutdown()
    smtp.stop()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
    sys.stdout.flush()
    os._exit(0)
