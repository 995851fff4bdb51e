"""The baselines of `bench/`: bare workflows that do what ours do, and no more.

- `BareWorkflow` (bench/enrol.py): its first workflow task upserts NurtureState="active"
  (as NurtureWorkflow's does), then it sleeps for a day.
- `BareDispatchWorkflow` (bench/dispatch.py): the same first task, then a timer until the
  common due moment, then one activity, `bare_send`, that sends a fixed small message over
  SMTP (aiosmtplib, one connection per message, as ours does), with ours' retry policy;
  then NurtureState="completed".
- `BareSignalWorkflow` (bench/archive.py): the same first task, then it sleeps for a day
  or until one `exit` signal (a reason, as ours carry), upserts NurtureState="exited" (as
  ours do on the way out) and ends.

They live in a module, not in `__main__`, so the sandbox accepts them. Their worker runs as
a process of its own, like ours, with worker.py's runner and concurrency settings, and
sends to NURTURE_SMTP_HOST:NURTURE_SMTP_PORT:

    python -c "from bench.bare import main; main()" --address 127.0.0.1:17233 --task-queue q
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from workflows.nurture import SEND_RETRY, STATE

WORKFLOW_NAME = "BareWorkflow"
DISPATCH_WORKFLOW_NAME = "BareDispatchWorkflow"
SIGNAL_WORKFLOW_NAME = "BareSignalWorkflow"
SIGNAL = "exit"
SEND_ACTIVITY = "bare_send"
MAIL_DOMAIN = "bare.bench.example"
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


@dataclass(frozen=True)
class BareDispatchInput:
    run: str
    index: int
    due: float  # seconds since the epoch (a datetime field fails to convert in the sandbox)


@dataclass(frozen=True)
class BareMessage:
    run: str
    index: int


def bare_address(index: int) -> str:
    return f"bare{index}@candidates.example"


def bare_message_id(run: str, index: int) -> str:
    return f"<{run}.{index}@{MAIL_DOMAIN}>"


@workflow.defn(name=DISPATCH_WORKFLOW_NAME)
class BareDispatchWorkflow:
    @workflow.run
    async def run(self, input: BareDispatchInput) -> None:
        workflow.upsert_search_attributes([STATE.value_set("active")])
        wait = timedelta(seconds=input.due - workflow.now().timestamp())
        if wait > timedelta(0):
            try:
                await workflow.wait_condition(lambda: False, timeout=wait)
            except TimeoutError:
                pass
        await workflow.execute_activity(
            SEND_ACTIVITY,
            BareMessage(input.run, input.index),
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(days=1),
            retry_policy=SEND_RETRY,
        )
        workflow.upsert_search_attributes([STATE.value_set("completed")])


@workflow.defn(name=SIGNAL_WORKFLOW_NAME)
class BareSignalWorkflow:
    def __init__(self) -> None:
        self._reason: str | None = None

    @workflow.run
    async def run(self) -> None:
        workflow.upsert_search_attributes([STATE.value_set("active")])
        try:
            # A timer, as ours wait on one: the signal wakes it and it is cancelled.
            await workflow.wait_condition(lambda: self._reason is not None, timeout=SLEEP)
        except TimeoutError:
            pass
        workflow.upsert_search_attributes([STATE.value_set("exited")])

    @workflow.signal(name=SIGNAL)
    def exit(self, reason: str) -> None:
        self._reason = reason


@activity.defn(name=SEND_ACTIVITY)
async def bare_send(message: BareMessage) -> None:
    """A fixed small message, one SMTP session for it: connect, MAIL, RCPT, DATA, QUIT."""
    # Imported here: the workflow sandbox re-imports this module and needs none of it.
    from email.message import EmailMessage
    from email.utils import formatdate

    import aiosmtplib

    from config import Settings

    settings = Settings()
    email = EmailMessage()
    email["From"] = f"Bare Bench <bench@{MAIL_DOMAIN}>"
    email["To"] = bare_address(message.index)
    email["Subject"] = "Bare dispatch"
    email["Date"] = formatdate(localtime=True)
    email["Message-ID"] = bare_message_id(message.run, message.index)
    email.set_content("Hello,\n\nThis is the bare dispatch baseline.\n")
    smtp = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        timeout=settings.smtp_timeout_seconds,
        start_tls=False,
    )
    await smtp.connect()
    try:
        await smtp.mail(f"bench@{MAIL_DOMAIN}")
        await smtp.rcpt(bare_address(message.index))
        await smtp.data(email.as_bytes())
    finally:
        try:
            await smtp.quit()
        except aiosmtplib.SMTPException:
            smtp.close()


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
        workflows=[BareWorkflow, BareDispatchWorkflow, BareSignalWorkflow],
        activities=[bare_send],
        workflow_runner=workflow_runner(),
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_concurrent_activities=settings.max_concurrent_activities,
    ):
        print(f"bare worker polling task queue {task_queue} on {address}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Runs the worker of the bare workflows.")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.address, args.task_queue))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not the SDK's occasional abort at interpreter exit (sdk-python #300)
