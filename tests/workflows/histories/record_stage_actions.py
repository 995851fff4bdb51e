"""Records StageActionsWorkflow histories for the replay test, with stand-in activities
(the workflow's own logic is what replays): a move whose actions all ran (one at once,
one 3 days later), one cancelled by a new move while its delayed action waited, one
whose action failed every attempt, and (from v2) one whose delayed action alone a reply
cancelled while it waited. Run it in a checkout of the version to record; the
files are written beside this script:

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
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import register_search_attributes
from worker import workflow_runner
from workflows.contracts import (
    ActionFailure,
    CancelMoveSignal,
    PlannedAction,
    SkipActionsSignal,
    StageActionsInput,
    stage_actions_workflow_id,
)
from workflows.stage_actions import StageActionsWorkflow

HERE = Path(__file__).resolve().parent
FAILING = 99


@activity.defn(name="plan_stage_actions")
async def plan_stage_actions(input: StageActionsInput) -> list[PlannedAction]:
    now = activity.info().current_attempt_scheduled_time
    move_id = input.move_id
    if move_id == FAILING:
        return [PlannedAction(id=FAILING, kind="email", due_at=now)]
    return [
        PlannedAction(id=move_id * 10, kind="note", due_at=now),
        PlannedAction(id=move_id * 10 + 1, kind="email", due_at=now + timedelta(days=3)),
    ]


@activity.defn(name="run_stage_action")
async def run_stage_action(action: PlannedAction) -> str:
    if action.id == FAILING:
        raise ApplicationError("the relay is down")
    return "done"


@activity.defn(name="record_stage_action_failure")
async def record_stage_action_failure(failure: ActionFailure) -> None:
    return None


async def record(label: str) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(scripts / "temporal-test-server"),
        test_server_startup_timeout=timedelta(seconds=60),
    )
    await register_search_attributes(env.client)
    queue = f"record-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[StageActionsWorkflow],
        activities=[plan_stage_actions, run_stage_action, record_stage_action_failure],
        workflow_runner=workflow_runner(),
    ):
        scenarios = [("done", 1), ("cancelled", 2), ("failed", FAILING)]
        if label != "v1":
            scenarios.append(("replied", 3))
        for name, move_id in scenarios:
            key = uuid.uuid4().hex[:16]
            handle = await env.client.start_workflow(
                StageActionsWorkflow.run,
                StageActionsInput(
                    company_id=1,
                    job_id=1,
                    candidate_id=move_id,
                    stage_id=3,
                    move_id=move_id,
                    move_key=key,
                ),
                id=stage_actions_workflow_id(1, move_id, key),
                task_queue=queue,
            )
            if name == "cancelled":
                await env.sleep(timedelta(days=1))
                await handle.signal(StageActionsWorkflow.cancel, CancelMoveSignal("moved to 4"))
            elif name == "replied":
                await env.sleep(timedelta(days=1))
                skip = SkipActionsSignal("the candidate replied", [move_id * 10 + 1])
                await handle.signal(StageActionsWorkflow.skip_actions, skip)
                await env.sleep(timedelta(days=3))
            else:
                await env.sleep(timedelta(days=4))
            print(name, "ended with", await handle.result())
            path = HERE / f"stage-actions-{label}-{name}.json"
            path.write_text((await handle.fetch_history()).to_json())
            print(f"wrote {path}")
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
