"""The processes where every template is checked and rendered: the pool and the child.

A template can loop, compute or allocate without bound, so no template runs in the API's
or the worker's own interpreter. Each runs in a child process whose memory is capped, one
job at a time, under a wall-clock limit after which the child is killed (SIGKILL: it may
be deep in C code that nothing else interrupts) and replaced; a child whose parent dies
dies with it. `python -m mail.sandbox <parent pid>` is the child: it answers
length-prefixed JSON requests on its stdin with replies on its stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import struct
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, Self

from errors import UnavailableError, ValidationError, clause
from mail.rendering import (
    LIMITS,
    Brand,
    Part,
    RenderContext,
    RenderedEmail,
    RenderError,
    check_template,
    render_email,
)

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_HEADER = struct.Struct(">I")
# A child imports Jinja2 before it says it is ready; a loaded machine can take seconds.
_START_SECONDS = 30.0
_STOP_SECONDS = 5.0
# How long a job waits for a free process before it is refused (503 at save, a retry at
# send): long enough for a few jobs ahead of it, short enough that a burst of slow
# templates cannot hold requests (and what they hold) without bound.
WAIT_SECONDS = 5.0
# prctl(2): the signal a child receives when the thread that started it ends.
_PR_SET_PDEATHSIG = 1


def _frame(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message).encode()
    return _HEADER.pack(len(payload)) + payload


class _Child:
    """One child process (or none, until a job needs it)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    async def ready(self) -> None:
        if self._process is not None and self._process.returncode is None:
            return
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=_ROOT,
            )
        except OSError as error:
            raise UnavailableError(
                f"The template process could not start ({error}); try again."
            ) from error
        try:
            async with asyncio.timeout(_START_SECONDS):
                await self._read(process)
        except BaseException as error:
            process.kill()
            if not isinstance(error, TimeoutError | asyncio.IncompleteReadError):
                raise
            await process.wait()
            raise UnavailableError(
                "The template process did not start (see the service's log); try again."
            ) from error
        self._process = process

    async def exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(_frame(request))
        await self._process.stdin.drain()
        return await self._read(self._process)

    @staticmethod
    async def _read(process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
        reply: dict[str, Any] = json.loads(await process.stdout.readexactly(size))
        return reply

    async def ended(self) -> str:
        """How a child whose pipe closed under a job ended (`SIGKILL`, `exit status 1`)."""
        process, self._process = self._process, None
        if process is None:
            return "unknown"
        try:
            # Not kill() first: it would reap the child itself and lose its status.
            async with asyncio.timeout(_STOP_SECONDS):
                status = await process.wait()
        except TimeoutError:
            process.kill()
            status = await process.wait()
        if status < 0:
            with contextlib.suppress(ValueError):
                return signal.Signals(-status).name
        return f"exit status {status}"

    def cpu_seconds(self) -> float:
        """CPU time the child has used (0 if unknown): how long a job really rendered."""
        if self._process is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return 0.0
        # utime and stime, the 14th and 15th fields (the 12th and 13th after the name).
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def kill(self) -> asyncio.subprocess.Process | None:
        """The process, killed: the caller reaps it."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
        return process

    async def stop(self) -> None:
        """A closed stdin ends the child's loop; a child still busy is killed."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(_STOP_SECONDS):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


class TemplateSandbox:
    """A pool of template processes: `async with TemplateSandbox(2) as templates:`, then
    `check` at save time and `render` at send time. A process takes one job at a time, so
    a slow template only ever fails its own job. A job that finds every process busy
    waits for one at most `wait_seconds`, then is refused with UnavailableError: slow
    templates can make others wait that long, never longer."""

    def __init__(self, processes: int = 2, *, wait_seconds: float = WAIT_SECONDS) -> None:
        if processes < 1:
            raise ValueError("A template sandbox needs at least one process.")
        self._wait_seconds = wait_seconds
        self._children = [_Child() for _ in range(processes)]
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._reaping: set[asyncio.Task[int]] = set()
        self._closed = False

    async def start(self) -> None:
        await asyncio.gather(*(child.ready() for child in self._children))
        for child in self._children:
            self._idle.put_nowait(child)

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(child.stop() for child in self._children))
        await asyncio.gather(*self._reaping, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def check(
        self,
        source: str,
        part: Part,
        where: str,
        custom_fields: Sequence[str],
        *,
        unsubscribe: bool = True,
    ) -> None:
        """Raises ValidationError naming what is wrong: "The body of touchpoint 2 ...".
        `unsubscribe=False`: the e-mail carries no unsubscribe link to name."""
        reply = await self._job(
            {
                "job": "check",
                "source": source,
                "part": part,
                "where": where,
                "custom_fields": list(custom_fields),
                "unsubscribe": unsubscribe,
            },
            f"The {part} of {where}",
            templates=1,
        )
        if "refused" in reply:
            raise ValidationError(reply["refused"])

    async def render(
        self, subject: str, body: str, branded: bool, context: RenderContext, brand: Brand
    ) -> RenderedEmail:
        """Raises RenderError when this touchpoint cannot be rendered for this recipient."""
        reply = await self._job(
            {
                "job": "render",
                "subject": subject,
                "body": body,
                "branded": branded,
                "context": asdict(context),
                "brand": asdict(brand),
            },
            "The e-mail",
            templates=2,
        )
        if "refused" in reply:
            raise RenderError(reply["refused"])
        return RenderedEmail(**reply["email"])

    async def _job(self, request: dict[str, Any], what: str, *, templates: int) -> dict[str, Any]:
        """The child's reply; `what` starts the sentence of a refusal decided here, when the
        child cannot answer. The time limit is per template: a send renders two, each of
        which its check saw render within the limit."""
        seconds = LIMITS.render_seconds * templates
        try:
            async with asyncio.timeout(self._wait_seconds):
                child = await self._idle.get()
        except TimeoutError:
            raise UnavailableError(
                "Every template process is busy; try again in a moment."
            ) from None
        try:
            if self._closed:
                raise UnavailableError("The template processes are shut down; try again.")
            await child.ready()
            cpu = child.cpu_seconds()
            try:
                async with asyncio.timeout(seconds):
                    reply = await child.exchange(request)
            except TimeoutError:
                rendered = child.cpu_seconds() - cpu
                await self._reap(child.kill())
                if rendered < seconds / 2:
                    # The time went elsewhere (this process frozen, the machine swamped):
                    # that says nothing of the template, so it is not refused for it.
                    raise UnavailableError(
                        f"{what} was held up outside its template process (it rendered for "
                        f"{rendered:.1f} of {seconds:g} seconds); try again."
                    ) from None
                return {"refused": f"{what} takes longer than {seconds:g} seconds to render."}
            except (asyncio.IncompleteReadError, ConnectionError):
                how = await child.ended()
                return {
                    "refused": f"{what} cannot be rendered: the process rendering it ended ({how})."
                }
            except BaseException:
                # Cancelled mid-job: the child's answer would be read as the next job's.
                process = child.kill()
                if process is not None:
                    reaping = asyncio.create_task(process.wait())
                    self._reaping.add(reaping)
                    reaping.add_done_callback(self._reaping.discard)
                raise
        finally:
            self._idle.put_nowait(child)
        if "failed" in reply:
            # A template that trips something we did not foresee is refused, never a 500.
            return {"refused": f"{what} cannot be rendered ({clause(reply['failed'])})."}
        return reply

    @staticmethod
    async def _reap(process: asyncio.subprocess.Process | None) -> None:
        if process is not None:
            await process.wait()


# -- the child ----------------------------------------------------------------------------


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        if request["job"] == "check":
            check_template(
                request["source"],
                request["part"],
                request["where"],
                request["custom_fields"],
                unsubscribe=request["unsubscribe"],
            )
            return {}
        email = render_email(
            request["subject"],
            request["body"],
            request["branded"],
            RenderContext(**request["context"]),
            Brand(**request["brand"]),
        )
        return {"email": asdict(email)}
    except (ValidationError, RenderError) as refusal:
        return {"refused": str(refusal)}
    except Exception as error:
        log.exception("template job failed")
        return {"failed": f"{type(error).__name__}: {error}"}


def _read_request(requests: BinaryIO) -> dict[str, Any] | None:
    header = requests.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    request: dict[str, Any] = json.loads(requests.read(size))
    return request


def _die_with(parent: int) -> None:
    """A parent that is killed (SIGKILL, OOM) closes no pipe in time: without this, a child
    mid-render would go on until its render ended. Linux only; elsewhere the closed stdin
    ends the child once its job is done."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # the parent died before prctl could see it
        os._exit(1)


def serve(parent: int) -> None:
    """The child's loop: answer each request until stdin closes."""
    _die_with(parent)
    # Ctrl-C in a terminal reaches the whole process group; the parent closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cap = LIMITS.memory_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Anything else printed goes to stderr, never into a reply.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    replies.write(_frame({"ready": True}))
    replies.flush()
    with contextlib.suppress(BrokenPipeError):
        while (request := _read_request(sys.stdin.buffer)) is not None:
            replies.write(_frame(_answer(request)))
            replies.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
