"""The baseline of `bench/enrol.py`: a bare workflow with the first task of ours, no more.

Its first workflow task upserts NurtureState="active" (as NurtureWorkflow's does), then it
sleeps for a day. It lives in a module, not in `__main__`, so the sandbox accepts it. Its
worker runs as a process of its own, like ours:

    python -c "from bench.bare import main; main()" --address 127.0.0.1:17233 --task-queue q
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.nurture import STATE

WORKFLOW_NAME = "BareWorkflow"
SLEEP = timedelta(days=1)


@workflow.defn(name=WORKFLOW_NAME)
class BareWorkflow:
    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes([STATE.value_set("active")])
        try:
            await workflow.wait_condition(lambda: False, timeout=SLEEP)
        except TimeoutError:
            pass


async def _serve(address: str, task_queue: str) -> None:
    # Imported here so that the workflow sandbox, which re-imports this module, never
    # imports the worker's activities and store.
    from temporalio.client import Client
    from temporalio.worker import Worker

    from config import Settings
    from worker import workflow_runner

    settings = Settings()
    client = await Client.connect(address, namespace=settings.temporal_namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The same runner and cache sizes as worker.py, so the comparison is of the workflows.
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow],
        workflow_runner=workflow_runner(),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
    ):
        print(f"bare worker polling task queue {task_queue} on {address}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Runs the worker of BareWorkflow.")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.address, args.task_queue))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not the SDK's occasional abort at interpreter exit (sdk-python #300)
