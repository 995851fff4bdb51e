"""Records CampaignTestWorkflow histories for the replay test, one send delivered and one
that fails every attempt, with stand-in activities (the workflow's own logic is what
replays). Run it in a checkout of the version to record, so that its workflow is the one
imported; the file is written beside this script:

    cd <old checkout> && PYTHONPATH=. python <this script> v1
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from worker import workflow_runner
from workflows.campaign_test import CampaignTestWorkflow
from workflows.contracts import CampaignTestInput, SendOutcome

HERE = Path(__file__).resolve().parent
REFUSED = 2


@activity.defn(name="send_test_message")
async def send_test_message(message_id: int) -> SendOutcome:
    if message_id == REFUSED:
        raise ApplicationError("the relay is down")
    return SendOutcome.SENT


@activity.defn(name="record_test_failure")
async def record_test_failure(message_id: int) -> SendOutcome:
    return SendOutcome.FAILED


async def record(label: str) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(scripts / "temporal-test-server"),
        test_server_startup_timeout=timedelta(seconds=60),
    )
    queue = f"record-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[CampaignTestWorkflow],
        activities=[send_test_message, record_test_failure],
        workflow_runner=workflow_runner(),
    ):
        handle = await env.client.start_workflow(
            CampaignTestWorkflow.run,
            CampaignTestInput(campaign_id=1, message_ids=(1, REFUSED)),
            id=f"campaign-test/1/{uuid.uuid4().hex[:12]}",
            task_queue=queue,
        )
        try:
            print("ended with", await handle.result())
        except WorkflowFailureError as error:
            print("failed:", error.cause)
        history = await handle.fetch_history()
    path = HERE / f"campaign-test-{label}-refused-send.json"
    path.write_text(history.to_json())
    print(f"wrote {path}")
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
