"""The worker: connects to Temporal and runs every workflow and activity of the service."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.bulk_moves import BulkMoveActivities
from activities.campaign_signals import CampaignSignalActivities
from activities.enrolment import EnrolmentActivities
from activities.nurture import NurtureActivities
from activities.stage_actions import StageActionActivities
from config import Settings
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from orchestration import Workflows
from store.session import SessionFactory, create_engine, create_session_factory
from workflows.bulk_move import BulkMoveWorkflow
from workflows.campaign_signals import CampaignSignalsWorkflow
from workflows.campaign_test import CampaignTestWorkflow
from workflows.enrolment_batch import EnrolmentBatchWorkflow
from workflows.nurture import NurtureWorkflow
from workflows.stage_actions import StageActionsWorkflow

WORKFLOWS: Sequence[type] = (
    NurtureWorkflow,
    CampaignTestWorkflow,
    EnrolmentBatchWorkflow,
    StageActionsWorkflow,
    BulkMoveWorkflow,
    CampaignSignalsWorkflow,
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox with `zoneinfo` usable: by default it is a restricted proxy, and
    `astimezone(ZoneInfo(...))` raises TypeError inside workflows."""
    restrictions = SandboxRestrictions.default
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(
            restrictions,
            invalid_module_members=restrictions.invalid_module_members.with_child_unrestricted(
                "zoneinfo"
            ),
        )
    )


def activities_of(
    sessions: SessionFactory,
    mailer: Mailer,
    settings: Settings,
    client: Client,
    templates: TemplateSandbox,
) -> list[Callable[..., Any]]:
    """Every activity of the service, one class per job."""
    nurture = NurtureActivities(sessions, mailer, settings, templates)
    workflows = Workflows(client, settings.task_queue)
    enrolment = EnrolmentActivities(sessions, settings, workflows)
    stage = StageActionActivities(sessions, mailer, settings, templates)
    bulk = BulkMoveActivities(sessions, workflows)
    told = CampaignSignalActivities(sessions, settings, workflows)
    return [
        stage.plan_stage_actions,
        stage.run_stage_action,
        stage.record_stage_action_failure,
        nurture.send_touchpoint,
        nurture.record_send_failure,
        nurture.send_test_message,
        nurture.record_test_failure,
        enrolment.start_enrolments,
        bulk.run_bulk_move,
        told.tell_recipients,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Callable[..., Any]],
    task_queue: str | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=activities,
        workflow_runner=workflow_runner(),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
        # The sends run as local activities (workflows/nurture.py), as many at once.
        max_concurrent_local_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.workflow_task_slots,
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    settings = Settings()
    settings.check_for_service()
    client = await connect(settings)
    engine = create_engine(settings.database_url)
    # Sends queue for a template process longer than a person at the API would wait:
    # a busy pool only slows a morning's dispatch, it must not spend its retries.
    templates = TemplateSandbox(settings.render_processes, wait_seconds=30.0)
    mailer = Mailer(settings)
    activities = activities_of(create_session_factory(engine), mailer, settings, client, templates)
    worker = build_worker(client, settings, activities)
    logging.info(
        "worker polling task queue %s on %s", settings.task_queue, settings.temporal_address
    )
    # SIGTERM (a container stopping) and Ctrl-C let running activities finish first.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        # The template processes outlive the worker, so that running sends can finish.
        async with templates, worker:
            await stopping.wait()
            logging.info("worker stopping: finishing what runs")
    finally:
        await mailer.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
