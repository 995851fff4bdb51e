"""`make run` says it is up only when every part answers, and Ctrl-C stops it quietly."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

DEVSTACK = Path(__file__).resolve().parent.parent / "devstack.py"
UP = "nurture is up"
# A line of the dev server's own log (Go's slog text format).
SERVER_LINE = re.compile(r"\blevel=(WARN|ERROR|INFO|DEBUG)\b")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    temporal: int = field(default_factory=free_port)
    ui: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    smtp: int = field(default_factory=free_port)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class Devstack:
    """`devstack.py` in `directory`, its console read line by line as it comes."""

    def __init__(self, directory: Path, ports: Ports, **env: str) -> None:
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NURTURE_") and k not in ("DATABASE_URL", "TEST_DATABASE_URL")
        }
        environment.update(
            NURTURE_TEMPORAL_ADDRESS=f"127.0.0.1:{ports.temporal}",
            NURTURE_UI_PORT=str(ports.ui),
            NURTURE_API_PORT=str(ports.api),
            NURTURE_SMTP_PORT=str(ports.smtp),
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, str(DEVSTACK)],
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.children: set[int] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str | None, seconds: float) -> bool:
        """Whether `text` appeared on the console before it closed or time ran out (None:
        read until it closes)."""
        deadline = time.monotonic() + seconds
        while True:
            self.children.update(children_of(self.process.pid))
            try:
                line = self._queue.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    return False
                continue
            if line is None:
                return False
            self.lines.append(line)
            if text is not None and text in line:
                self.children.update(children_of(self.process.pid))
                return True

    def interrupt(self, seconds: float) -> int:
        """Ctrl-C to devstack alone (not its process group); its exit code."""
        self.children.update(children_of(self.process.pid))
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=seconds)
        self.wait_for(None, 5)
        return code

    def kill(self) -> None:
        """Whatever is still running: devstack, then each child's own process group."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.children:
            if running(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # not a group of its own after all
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


async def worker_polls(temporal: int) -> bool:
    client = await Client.connect(f"127.0.0.1:{temporal}")
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name="nurture"),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(answer.pollers) > 0


def service_key(directory: Path) -> str:
    text = (directory / "var" / "demo-keys.env").read_text()
    match = re.search(r"^export NURTURE_SERVICE_KEY=(\S+)$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


async def check_everything_answers(directory: Path, ports: Ports) -> int:
    """What a newcomer does right after "up"; answers the candidate's id."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ports.api}", trust_env=False, timeout=5
    ) as http:
        assert (await http.get("/health")).status_code == 200
        ui = await http.get(f"http://127.0.0.1:{ports.ui}/")
        assert ui.status_code == 200
        assert await worker_polls(ports.temporal)
        created = await http.post(
            "/candidates",
            headers={"Authorization": f"Bearer {service_key(directory)}"},
            json={"first_name": "Grace", "last_name": "Hopper"},
        )
        assert created.status_code == 201, created.text
        candidate_id: int = created.json()["id"]
        return candidate_id


async def test_up_only_when_every_part_answers_and_ctrl_c_stops_quietly(tmp_path: Path) -> None:
    ports = Ports()
    keys = ""
    # The second start finds the store, the server's file and the keys of the first.
    for start in ("first", "second"):
        stack = Devstack(tmp_path, ports)
        try:
            # Blocking reads go to a thread: the event loop is shared with other tests.
            assert await asyncio.to_thread(stack.wait_for, UP, 120), stack.output
            await check_everything_answers(tmp_path, ports)
            if start == "first":
                keys = (tmp_path / "var" / "demo-keys.env").read_text()
            assert (tmp_path / "var" / "demo-keys.env").read_text() == keys
            assert stack.children, "devstack started no child"
            before = len(stack.lines)

            assert await asyncio.to_thread(stack.interrupt, 30) == 0, stack.output
            after = "".join(stack.lines[before:])
            assert not SERVER_LINE.search(stack.output), after
            assert "Traceback" not in after, after
            assert [pid for pid in stack.children if running(pid)] == []
            log = tmp_path / "var" / "temporal.log"
            assert "Temporal Server" in log.read_text()
            assert str(log) in stack.output
            assert "nurture stopped" in after, after
        finally:
            stack.kill()


def test_a_part_that_does_not_come_up_is_named_and_everything_stops(tmp_path: Path) -> None:
    # The worker refuses a namespace the server does not have and exits.
    stack = Devstack(tmp_path, Ports(), NURTURE_TEMPORAL_NAMESPACE="no-such-namespace")
    try:
        assert stack.wait_for("stopping nurture", 120), stack.output
        code = stack.process.wait(timeout=30)
        stack.wait_for(None, 5)
        assert code == 1, stack.output
        assert UP not in stack.output
        assert "the worker exited with code" in stack.output, stack.output
        assert [pid for pid in stack.children if running(pid)] == []
    finally:
        stack.kill()
