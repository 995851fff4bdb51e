"""What an operator sees in the Web UI, on the real dev server: search attributes to find a
recipient's workflow, a summary, and a line saying what it waits for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from temporalio.testing import WorkflowEnvironment

from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from orchestration import SEARCH_ATTRIBUTES, Workflows
from store.enrolments import nurture_input
from store.models import Enrolment
from store.session import SessionFactory
from tests.conftest import _binary
from worker import activities_of, build_worker
from workflows.contracts import NurturePlan, TouchpointPlan
from workflows.nurture import NEXT_SEND_AT


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"), search_attributes=SEARCH_ATTRIBUTES
    )
    yield environment
    await environment.shutdown()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_operator_finds_a_recipient_by_campaign_and_reads_what_it_waits_for(
    dev_server: WorkflowEnvironment,
    settings: Settings,
    sessions: SessionFactory,
    templates: TemplateSandbox,
) -> None:
    campaign, candidate = 900 + uuid.uuid4().int % 1000, 77
    plan = NurturePlan(
        touchpoints=(TouchpointPlan(0, 0, 9, 0), TouchpointPlan(1, 3, 9, 0)),
        time_zone="Europe/Paris",
        exit_options=("applied",),
    )
    enrolment = Enrolment(
        id=1, company_id=1, campaign_id=campaign, candidate_id=candidate, run=1,
        entered_at=datetime(2030, 1, 7, 12, tzinfo=UTC),
    )  # fmt: skip
    activities = activities_of(sessions, Mailer(settings), settings, dev_server.client, templates)
    async with build_worker(dev_server.client, settings, activities):
        await Workflows(dev_server.client, settings.task_queue).start_nurture(
            nurture_input(enrolment, plan),
            campaign_name="Passive engineers",
            replace_running=True,
        )
        handle = dev_server.client.get_workflow_handle(f"nurture/{campaign}/{candidate}")
        query = f'NurtureCampaignId="{campaign}" AND NurtureState="active"'
        for _ in range(100):
            if (await dev_server.client.count_workflows(query)).count == 1:
                break
            await asyncio.sleep(0.1)
        found = [w async for w in dev_server.client.list_workflows(query)]
        assert [w.id for w in found] == [f"nurture/{campaign}/{candidate}"]
        description = await handle.describe()
        assert await description.static_summary() == (
            f"Campaign {campaign} “Passive engineers”, candidate {candidate} (run 1): "
            "2 touchpoints, first due 2030-01-08 09:00 Europe/Paris"
        )
        details = await handle.query("__temporal_workflow_metadata")
        assert details.current_details == (
            "waits for touchpoint 1 of 2, due 2030-01-08 09:00 Europe/Paris"
        )
        due = description.typed_search_attributes.get(NEXT_SEND_AT)
        assert due == datetime(2030, 1, 8, 8, tzinfo=UTC)
        await handle.terminate("test finished")
