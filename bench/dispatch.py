"""A morning's dispatch: N recipients due at the same minute, beside a bare baseline.

    .venv/bin/python bench/dispatch.py --n 2000 [--store sqlite|postgres]
        [--kill-every SECONDS] [--freeze SECONDS] [--profile [raw|flamegraph|speedscope]] [--keep]

It starts the isolated stack of bench/stack.py (Temporal dev server, store, mail sink,
worker.py, the API, the bare worker), writes N candidates straight into the store (setup,
not measured), then:

1. ours: picks a due minute, now + N/--enrol-rate + --margin rounded up to a whole minute,
   saves a campaign through the API whose (first) touchpoint is sent at that minute
   (hour:minute, Europe/Paris), and adds the N candidates by POST
   /campaigns/{id}/recipients/bulk in chunks. Visibility must show N NurtureWorkflows
   active (asleep) before the minute, or the run fails: the minute would have passed for
   some of them. From the due minute it counts the .eml files the mail sink writes, until
   N unique Message-IDs are in (without chaos), or until every message row of the store
   has settled (with --kill-every / --freeze). "dispatch s" is the last unique e-mail's
   arrival (its file's mtime) minus the due minute; e-mails/s is unique e-mails over that.
2. bare: N `bench.bare.BareDispatchWorkflow`s, started --bare-concurrency (25) in flight
   against the bare worker (same runner and concurrency settings as worker.py), whose
   timer fires at a later common minute and whose one activity sends a fixed small
   message over SMTP, one connection per message, to the same sink; measured the same way.

After each window it waits until visibility counts every workflow of that side done with
the minute: bare's have their second workflow task, an upsert and their close still to
go once their e-mail is out (ours do theirs in the workflow task that sends); ours are
done once closed (the last touchpoint) or their next touchpoint is scheduled. It reports
that time, workflows done per second and the CPU spent until then, beside the e-mail
window's.

For each window it reports the Temporal server's CPU seconds (/proc/<pid>/stat utime +
stime, from the due minute to the window's end), the worker's CPU seconds and peak RSS
(VmHWM; across restarts, the largest), delivered / unique / duplicate Message-IDs, and for
ours the recipients without an e-mail and the store's message states.

--kill-every S: from the due minute on, SIGKILL worker.py every S seconds and start it again
at once; --freeze S: SIGSTOP it for S seconds once, when half the e-mails are in, then
SIGCONT. With either, the run waits for every message row to settle and fails (exit 1) on
any duplicate Message-ID in the sink or any recipient without a delivered e-mail, naming
them. --store postgres creates a fresh database bench_dispatch_<random> on
127.0.0.1:5432 (user postgres) and drops it at the end.

It prints a table, a JSON line last on stdout, and writes the JSON to
bench/results/dispatch-<timestamp>-n<N>.json. Everything it started is stopped at the end,
on error and on Ctrl-C; the exit code is 0 when both sides delivered N unique e-mails (and
ours no duplicate, no recipient without one), 1 when not, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# Run as a script (`python bench/dispatch.py`), the repository's root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
import sqlalchemy
from psycopg import sql
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.bare import DISPATCH_WORKFLOW_NAME, MAIL_DOMAIN, BareDispatchInput, bare_address
from bench.stack import (
    RESULTS,
    ROOT,
    TIME_ZONE,
    Failed,
    Running,
    Stack,
    candidate_address,
    count,
    cpu_seconds,
    create_campaign,
    descendants,
    log,
    peak_rss_kb,
    versions,
    worker_log_problems,
)
from bench.stack import run as run_bench
from bench.stack import start as start_stack
from config import Settings
from store.session import sync_url
from workflows.nurture import CAMPAIGN_ID, NEXT_SEND_AT, STATE

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
# States a message row leaves on its own (a retry, a timeout): the rest are settled.
UNSETTLED = ("prepared", "sending")
SAMPLES = 20  # names of duplicates / missing recipients kept in the results
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
TO = re.compile(rb"^To:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
ADDRESS = re.compile(r"<([^<>]+)>\s*$")


# -- the sink -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    name: str
    arrived: float  # the file's mtime: when the sink finished writing it
    message_id: str
    to: str


def sink_names(directory: Path) -> set[str]:
    if not directory.exists():
        return set()
    with os.scandir(directory) as entries:
        return {e.name for e in entries if e.name.endswith(".eml")}


def read_mail(directory: Path, name: str) -> Mail:
    path = directory / name
    data = path.read_bytes()
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    found = MESSAGE_ID.search(head)
    to = TO.search(head)
    address = to.group(1).decode(errors="replace").strip() if to else ""
    if bracketed := ADDRESS.search(address):
        address = bracketed.group(1)
    return Mail(
        name=name,
        arrived=path.stat().st_mtime,
        message_id=found.group(1).decode(errors="replace") if found else f"(none: {name})",
        to=address.lower(),
    )


def is_bare(mail: Mail) -> bool:
    return mail.message_id.endswith(f"@{MAIL_DOMAIN}>")


# -- the processes we watch -------------------------------------------------------------


class Tracked:
    """CPU seconds and peak RSS of a child from a moment on, across restarts; and the CPU
    seconds of its own children (the worker's template processes)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = cpu_seconds(pid) or 0.0
        self.done = 0.0
        self.peak_kb = peak_rss_kb(pid) or 0
        self.children: dict[int, float] = {}  # pid: CPU seconds when first seen
        self.children_done = 0.0
        self._children_at_start()

    def _children_at_start(self) -> None:
        self.children = {c: cpu_seconds(c) or 0.0 for c in descendants(self.pid)}

    def children_cpu(self) -> float:
        """Of the children alive now (a killed worker's died with it: counted till then)."""
        used = self.children_done
        for child in descendants(self.pid):
            now = cpu_seconds(child)
            if now is not None:
                used += now - self.children.get(child, 0.0)
        return used

    def sample(self) -> None:
        self.peak_kb = max(self.peak_kb, peak_rss_kb(self.pid) or 0)

    def cpu(self) -> float:
        now = cpu_seconds(self.pid)
        return self.done + (now - self.base if now is not None else 0.0)

    def retire(self) -> None:
        """Right before its process is killed: keep what it used."""
        self.sample()
        self.done = self.cpu()
        self.children_done = self.children_cpu()
        self.base = cpu_seconds(self.pid) or 0.0

    def adopt(self, pid: int) -> None:
        """Its replacement, counted from its start."""
        self.pid, self.base, self.children = pid, 0.0, {}


# -- one window ---------------------------------------------------------------------------


@dataclass
class Window:
    """One side's dispatch, in seconds from its due minute unless named otherwise."""

    due: str = ""
    due_local: str = ""
    lead_s: float = 0.0  # from choosing the minute to the minute
    enrolled_s: float | None = None  # from the first start / POST to N active
    slack_s: float | None = None  # from N active to the due minute
    batches_finished: bool | None = None
    delivered: int = 0
    unique: int = 0
    duplicates: int = 0
    early: int = 0  # arrived more than a second before the due minute
    missing: int = 0
    first_s: float | None = None
    median_s: float | None = None
    p95_s: float | None = None
    last_s: float | None = None
    per_s: float | None = None
    window_s: float | None = None  # from the due minute to the window's end
    timed_out: bool = False
    server_cpu_s: float | None = None
    worker_cpu_s: float | None = None
    worker_children_cpu_s: float | None = None  # its template processes
    worker_peak_rss_kb: int | None = None
    # Until every workflow of the side is done with the minute (visibility): bare's
    # workflows still have a workflow task, an upsert and their close to go after their
    # e-mail, which ours does in the task that sends.
    done_s: float | None = None
    done_server_cpu_s: float | None = None
    done_worker_cpu_s: float | None = None
    duplicate_samples: list[str] = field(default_factory=list)
    missing_samples: list[str] = field(default_factory=list)


def due_minute(n: int, args: argparse.Namespace) -> float:
    """now + the estimated enrolment time + the margin, up to a whole minute (epoch s)."""
    ahead = time.time() + n / args.enrol_rate + args.margin
    return float(math.ceil(ahead / 60) * 60)


def local(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, ZoneInfo(TIME_ZONE))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


async def sleep_until(epoch: float) -> None:
    await asyncio.sleep(max(0.0, epoch - time.time()))


async def await_asleep(
    client: Client,
    label: str,
    active_query: str,
    n: int,
    due: float,
    t0: float,
    window: Window,
    poll: float,
    stack: Stack,
) -> None:
    """Until visibility counts N active (asleep) before the due minute; fail if not."""
    shown = 0.0
    while True:
        stack.check()
        active = await count(client, active_query)
        now = time.monotonic()
        if active >= n:
            window.enrolled_s = round(now - t0, 2)
            window.slack_s = round(due - time.time(), 2)
            log(
                f"{label}: {n} asleep {window.enrolled_s:.1f} s after the first start, "
                f"{window.slack_s:.0f} s before their minute"
            )
            return
        if time.time() > due - 1:
            raise Failed(
                f"{label}: enrolment too slow: only {active} of {n} workflows asleep at their "
                f"due minute {local(due):%H:%M:%S} ({now - t0:.0f} s after the first start); "
                "give it more time (--margin, or a lower --enrol-rate)"
            )
        if now - shown >= 10:
            shown = now
            log(f"{label}: {now - t0:6.1f} s, {active} of {n} asleep")
        await asyncio.sleep(poll)


@dataclass
class Progress:
    """What the window's poll saw last, for the freezer."""

    delivered: int = 0
    half: asyncio.Event = field(default_factory=asyncio.Event)  # half of N in the sink
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def dispatch(
    label: str,
    stack: Stack,
    mail_dir: Path,
    n: int,
    due: float,
    window: Window,
    tracked: Tracked,
    server: Tracked,
    settled: Callable[[], Awaitable[bool]] | None,
    args: argparse.Namespace,
    progress: Progress,
    before: set[str],
) -> list[Mail]:
    """From the due minute until N unique e-mails are in (or, when `settled` is given,
    until it answers true): answers this window's e-mails. `tracked` is the worker and
    `server` the Temporal server, from the due minute on (a killer may move the worker to
    a new process)."""
    if (lag := time.time() - due) > 1:
        log(f"{label}: the window starts {lag:.1f} s after the due minute")
    deadline = due + args.timeout
    seen: dict[str, Mail] = {}
    ids: set[str] = set()
    shown = time.monotonic()
    while True:
        await asyncio.sleep(args.sink_poll)
        stack.check()
        tracked.sample()
        names = sink_names(mail_dir) - before
        progress.delivered = len(names)
        if progress.delivered >= n / 2:
            progress.half.set()
        if settled is not None:
            if await settled():
                break
        elif len(names) >= n:
            # Read only once N files could be in: parsing must not compete with the send.
            for name in names - seen.keys():
                mail = read_mail(mail_dir, name)
                seen[name] = mail
                ids.add(mail.message_id)
            if len(ids) >= n:
                break
        if time.time() > deadline:
            window.timed_out = True
            log(f"{label}: gave up {args.timeout:.0f} s after the due minute")
            break
        if time.monotonic() - shown >= 10:
            shown = time.monotonic()
            log(f"{label}: {time.time() - due:6.1f} s after the minute, {len(names)} in the sink")
    window.window_s = round(time.time() - due, 2)
    window.server_cpu_s = round(server.cpu(), 2)
    tracked.sample()
    window.worker_cpu_s = round(tracked.cpu(), 2)
    window.worker_children_cpu_s = round(tracked.children_cpu(), 2)
    window.worker_peak_rss_kb = tracked.peak_kb
    progress.done.set()
    # Late writes of files already counted, and what was not read yet.
    for name in sink_names(mail_dir) - before - seen.keys():
        seen[name] = read_mail(mail_dir, name)
    return list(seen.values())


async def await_done(
    client: Client,
    label: str,
    done_query: str,
    n: int,
    due: float,
    window: Window,
    tracked: Tracked,
    server: Tracked,
    args: argparse.Namespace,
) -> None:
    """After the window: until visibility counts N workflows done with the minute, with
    the CPU the server and the worker spent from the due minute until then."""
    if window.timed_out:
        return
    deadline = due + args.timeout
    while time.time() < deadline:
        tracked.sample()
        if await count(client, done_query) >= n:
            window.done_s = round(time.time() - due, 2)
            window.done_server_cpu_s = round(server.cpu(), 2)
            tracked.sample()
            window.done_worker_cpu_s = round(tracked.cpu(), 2)
            log(f"{label}: every workflow done with the minute {window.done_s:.1f} s after it")
            return
        await asyncio.sleep(args.sink_poll)
    log(f"{label}: not every workflow was done with the minute {args.timeout:.0f} s after it")


def tally(
    label: str, window: Window, mails: Sequence[Mail], due: float, expected: set[str], n: int
) -> None:
    """Delivered, unique, duplicates, missing recipients and arrival times of a window; the
    duplicates and the recipients without an e-mail are logged, all of them."""
    per_id = Counter(m.message_id for m in mails)
    first: dict[str, float] = {}
    for mail in sorted(mails, key=lambda m: m.arrived):
        first.setdefault(mail.message_id, mail.arrived)
    window.delivered = len(mails)
    window.unique = len(per_id)
    window.duplicates = window.delivered - window.unique
    duplicated = [f"{mid} x{k}" for mid, k in per_id.most_common() if k > 1]
    window.duplicate_samples = duplicated[:SAMPLES]
    missing = sorted(expected - {m.to for m in mails}, key=lambda a: (len(a), a))
    window.missing = len(missing)
    window.missing_samples = missing[:SAMPLES]
    if duplicated:
        log(f"{label}: {len(duplicated)} Message-IDs delivered more than once: {duplicated}")
    if missing:
        log(f"{label}: {len(missing)} recipients without an e-mail: {missing}")
    arrivals = sorted(t - due for t in first.values())
    window.early = sum(1 for t in arrivals if t < -1.0)
    if arrivals:
        window.first_s = round(arrivals[0], 2)
        window.median_s = round(statistics.median(arrivals), 2)
        window.p95_s = round(arrivals[min(len(arrivals) - 1, int(0.95 * len(arrivals)))], 2)
        window.last_s = round(arrivals[-1], 2)
        if window.last_s > 0:
            window.per_s = round(window.unique / window.last_s, 1)
    if window.unique != n:
        log(f"{label}: {window.unique} unique e-mails of {n}")


# -- ours ---------------------------------------------------------------------------------


def worker_pid(stack: Stack) -> int:
    return stack.child("worker").process.pid


def chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@dataclass(frozen=True)
class Row:
    candidate_id: int | None
    state: str
    message_id: str
    attempts: int
    error: str | None


def message_rows(database_url: str, campaign_id: int) -> list[Row]:
    """The rows of the campaign's first-touchpoint messages."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    "SELECT candidate_id, state, message_id, attempts, error FROM messages "
                    "WHERE campaign_id = :campaign AND position = 0"
                ),
                {"campaign": campaign_id},
            ).all()
    finally:
        engine.dispose()
    return [Row(r[0], str(r[1]), str(r[2]), int(r[3] or 0), r[4]) for r in rows]


@dataclass
class Chaos:
    kill_every: float | None = None
    freeze: float | None = None
    kills: list[dict[str, Any]] = field(default_factory=list)
    frozen: dict[str, Any] | None = None
    settle_s: float | None = None  # from the due minute until every row had settled


async def killer(
    stack: Stack, every: float, due: float, chaos: Chaos, progress: Progress, tracked: Tracked
) -> None:
    moment = due + every
    while not progress.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.done.wait(), timeout=max(0.0, moment - time.time()))
        if progress.done.is_set():
            return
        old = stack.child("worker").process.pid
        rss = peak_rss_kb(old)
        tracked.retire()
        new = stack.respawn("worker").process.pid
        tracked.adopt(new)
        at = round(time.time() - due, 1)
        chaos.kills.append(
            {"at_s": at, "killed_pid": old, "new_pid": new, "delivered": progress.delivered,
             "killed_peak_rss_kb": rss}
        )  # fmt: skip
        log(f"ours: killed the worker (pid {old}) at {at} s, {progress.delivered} in; pid {new}")
        moment += every


async def freezer(
    stack: Stack, seconds: float, due: float, chaos: Chaos, progress: Progress
) -> None:
    waits = [asyncio.create_task(progress.half.wait()), asyncio.create_task(progress.done.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if progress.done.is_set():
        return
    pid = stack.child("worker").process.pid
    at = round(time.time() - due, 1)
    os.kill(pid, signal.SIGSTOP)
    log(f"ours: froze the worker (pid {pid}) at {at} s for {seconds:g} s, {progress.delivered} in")
    chaos.frozen = {"at_s": at, "seconds": seconds, "pid": pid, "delivered": progress.delivered}
    try:
        await asyncio.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    log(f"ours: thawed the worker (pid {pid}), {progress.delivered} in")


@dataclass
class Ours:
    window: Window
    campaign_id: int = 0
    requests: int = 0
    added: int = 0
    states: dict[str, int] = field(default_factory=dict)
    # Per state: how many of its Message-IDs are in the sink.
    states_delivered: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    without_row: int = 0
    not_sent_samples: list[dict[str, Any]] = field(default_factory=list)
    chaos: Chaos = field(default_factory=Chaos)


async def run_ours(running: Running, http: httpx.AsyncClient, args: argparse.Namespace) -> Ours:
    stack, client, ids = running.stack, running.client, running.ids
    n = len(ids)
    chosen = time.time()
    due = due_minute(n, args)
    at = local(due)
    ours = Ours(Window(due=iso(due), due_local=f"{at:%Y-%m-%d %H:%M} {TIME_ZONE}"))
    ours.window.lead_s = round(due - chosen, 1)
    ours.campaign_id = await create_campaign(
        http, running.admin_user_id, "Dispatch bench", f"{at:%H:%M}", args.touchpoints
    )
    log(f"ours: campaign {ours.campaign_id} due {ours.window.due_local}, in {due - chosen:.0f} s")
    t0 = time.monotonic()
    for chunk in chunks(ids, args.chunk):
        response = await http.post(
            f"/campaigns/{ours.campaign_id}/recipients/bulk", json={"candidate_ids": list(chunk)}
        )
        if response.status_code != 202:
            raise Failed(f"bulk add answered {response.status_code}: {response.text[:500]}")
        ours.added += response.json()["added"]
        ours.requests += 1
        stack.check()
    log(f"ours: {ours.added} added in {time.monotonic() - t0:.1f} s, {ours.requests} requests")
    if ours.added != n:
        raise Failed(f"only {ours.added} of {n} candidates were added")
    if time.time() > due - 1:
        raise Failed("enrolment too slow: the bulk adds took until the due minute")
    query = (
        f'WorkflowType="NurtureWorkflow" AND {CAMPAIGN_ID.name}="{ours.campaign_id}" '
        f'AND {STATE.name}="active"'
    )
    await await_asleep(client, "ours", query, n, due, t0, ours.window, args.poll, stack)
    batches = 'WorkflowType="EnrolmentBatchWorkflow" AND ExecutionStatus="Running"'
    running_batches = await count(client, batches)
    while running_batches and time.time() < due - 2:
        await asyncio.sleep(args.poll)
        running_batches = await count(client, batches)
    ours.window.batches_finished = running_batches == 0
    if running_batches:
        log(f"ours: {running_batches} enrolment batches still running at the minute")

    chaos = Chaos(kill_every=args.kill_every, freeze=args.freeze)
    ours.chaos = chaos
    progress = Progress()
    settled: Callable[[], Awaitable[bool]] | None = None
    if args.kill_every or args.freeze:

        async def all_settled() -> bool:
            rows = await asyncio.to_thread(message_rows, running.database_url, ours.campaign_id)
            return len(rows) >= n and not any(r.state in UNSETTLED for r in rows)

        last_check = 0.0

        async def settled_now() -> bool:
            # The store is read every 2 s at most, not at every poll of the sink.
            nonlocal last_check
            if time.monotonic() - last_check < 2:
                return False
            last_check = time.monotonic()
            return await all_settled()

        settled = settled_now
    before = sink_names(running.mail_dir)
    await sleep_until(due)
    log(f"ours: due minute {at:%H:%M} — counting the sink")
    tracked = Tracked(worker_pid(stack))
    server = Tracked(stack.child("temporal").process.pid)
    spy = profiler(stack, args)
    tasks = []
    if args.kill_every:
        tasks.append(
            asyncio.create_task(killer(stack, args.kill_every, due, chaos, progress, tracked))
        )
    if args.freeze:
        tasks.append(asyncio.create_task(freezer(stack, args.freeze, due, chaos, progress)))
    try:
        mails = await dispatch(
            "ours", stack, running.mail_dir, n, due, ours.window, tracked, server, settled,
            args, progress, before,
        )  # fmt: skip
    finally:
        if spy is not None:
            args.profile_written = stop_profiler(spy, stack, args)
        progress.done.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if settled is not None and not ours.window.timed_out:
        chaos.settle_s = ours.window.window_s
    # A recipient is done with the minute once its workflow has closed (the last
    # touchpoint) or scheduled its next touchpoint.
    done = (
        f'WorkflowType="NurtureWorkflow" AND {CAMPAIGN_ID.name}="{ours.campaign_id}" AND '
        + ('ExecutionStatus="Completed"' if args.touchpoints == 1
           else f'{NEXT_SEND_AT.name} > "{iso(due + 60)}"')
    )  # fmt: skip
    await await_done(client, "ours", done, n, due, ours.window, tracked, server, args)
    expected = {candidate_address(i) for i in range(n)}
    tally("ours", ours.window, [m for m in mails if not is_bare(m)], due, expected, n)
    # The last e-mails' rows may not say `sent` yet when they are in the sink: give their
    # commits a moment before reading the states.
    grace = time.monotonic() + 30
    while True:
        rows = await asyncio.to_thread(message_rows, running.database_url, ours.campaign_id)
        if not any(r.state in UNSETTLED for r in rows) or time.monotonic() > grace:
            break
        await asyncio.sleep(0.5)
    in_sink = {m.message_id for m in mails}
    ours.rows = len(rows)
    ours.without_row = len(set(ids) - {r.candidate_id for r in rows})
    ours.states = dict(Counter(r.state for r in rows))
    ours.states_delivered = dict(Counter(r.state for r in rows if r.message_id in in_sink))
    ours.not_sent_samples = [
        {"candidate_id": r.candidate_id, "state": r.state, "attempts": r.attempts,
         "in_sink": r.message_id in in_sink, "error": r.error}
        for r in rows if r.state != "sent"
    ][:SAMPLES]  # fmt: skip
    for sample in ours.not_sent_samples:
        if not sample["in_sink"]:
            log(f"ours: not delivered: {sample}")
    log(f"ours: message states {ours.states}, of which in the sink {ours.states_delivered}")
    return ours


# -- bare ---------------------------------------------------------------------------------


@dataclass
class Bare:
    window: Window
    run: str = ""


async def run_bare(running: Running, args: argparse.Namespace) -> Bare:
    stack, client, n = running.stack, running.client, args.n
    chosen = time.time()
    due = due_minute(n, args)
    at = local(due)
    bare = Bare(Window(due=iso(due), due_local=f"{at:%Y-%m-%d %H:%M} {TIME_ZONE}"))
    bare.window.lead_s = round(due - chosen, 1)
    bare.run = run = uuid.uuid4().hex[:8]
    log(f"bare: {n} workflows due {bare.window.due_local}, {args.bare_concurrency} in flight")
    following = iter(range(n))

    async def starter() -> None:
        # A fixed number of starters, each taking the next index: bounded memory at any N.
        for i in following:
            await client.start_workflow(
                DISPATCH_WORKFLOW_NAME,
                BareDispatchInput(run=run, index=i, due=due),
                id=f"bare-dispatch/{run}/{i}",
                task_queue=running.bare_queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(STATE, "starting")]),
                task_timeout=timedelta(seconds=10),
            )

    t0 = time.monotonic()
    await asyncio.gather(*(starter() for _ in range(args.bare_concurrency)))
    log(f"bare: {n} started in {time.monotonic() - t0:.1f} s")
    query = f'WorkflowType="{DISPATCH_WORKFLOW_NAME}" AND {STATE.name}="active"'
    await await_asleep(client, "bare", query, n, due, t0, bare.window, args.poll, stack)
    before = sink_names(running.mail_dir)
    await sleep_until(due)
    log(f"bare: due minute {at:%H:%M} — counting the sink")
    tracked = Tracked(stack.child("bare-worker").process.pid)
    server = Tracked(stack.child("temporal").process.pid)
    mails = await dispatch(
        "bare", stack, running.mail_dir, n, due, bare.window, tracked, server, None, args,
        Progress(), before,
    )  # fmt: skip
    done = f'WorkflowType="{DISPATCH_WORKFLOW_NAME}" AND ExecutionStatus="Completed"'
    await await_done(client, "bare", done, n, due, bare.window, tracked, server, args)
    expected = {bare_address(i) for i in range(n)}
    tally("bare", bare.window, [m for m in mails if is_bare(m)], due, expected, n)
    return bare


# -- the store ----------------------------------------------------------------------------


def admin_url() -> str:
    return f"{POSTGRES.replace('+psycopg', '')}/postgres"


def create_database(stack: Stack) -> str:
    """A fresh PostgreSQL database, dropped when the stack stops; answers its URL."""
    name = f"bench_dispatch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url(), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(admin_url(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        log(f"dropped database {name}")

    stack.on_stop.append(drop)
    log(f"created database {name}")
    return f"{POSTGRES}/{name}"


# -- the run ------------------------------------------------------------------------------


def py_spy() -> Path:
    return Path(sysconfig.get_path("scripts")) / "py-spy"


PROFILE_SUFFIX = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}


def profile_path(stack: Stack, args: argparse.Namespace) -> Path:
    """Where py-spy writes the profile, in the stack's directory."""
    return stack.directory / f"worker-profile.{PROFILE_SUFFIX[args.profile]}"


def profiler(stack: Stack, args: argparse.Namespace) -> subprocess.Popen[bytes] | None:
    """py-spy attached to worker.py for our dispatch window only (not the enrolment)."""
    if not args.profile:
        return None
    output = profile_path(stack, args)
    command = [str(py_spy()), "record", "--pid", str(worker_pid(stack)),
               "--format", args.profile, "--output", str(output)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(
    spy: subprocess.Popen[bytes], stack: Stack, args: argparse.Namespace
) -> str | None:
    """py-spy writes its profile when interrupted; it is copied to bench/results/."""
    spy.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.wait(timeout=30)
    written = profile_path(stack, args)
    if not written.exists():
        log("py-spy wrote no profile")
        return None
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"dispatch-profile-{datetime.now():%Y%m%d-%H%M%S}{written.suffix}"
    target.write_bytes(written.read_bytes())
    log(f"worker profile of the dispatch window written to {target.relative_to(ROOT)}")
    return str(target.relative_to(ROOT))


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def done_rate(window: Window) -> float | None:
    """Workflows done with the minute per second, from the minute."""
    return round(window.unique / window.done_s, 1) if window.done_s else None


def table(results: dict[str, Any]) -> str:
    def cell(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    def mib(kb: int | None) -> float | None:
        return kb / 1024 if kb else None

    o, b = Window(**results["ours"]["window"]), Window(**results["bare"]["window"])
    rows: list[tuple[str, str, str, str]] = [
        ("N", f"{results['n']:,}", f"store: {results['store']}", ""),
        ("", "ours", "bare", "ours/bare"),
        ("due minute (local)", o.due_local[11:16], b.due_local[11:16], ""),
        ("enrolled, all asleep after s", cell(o.enrolled_s), cell(b.enrolled_s), ""),
        ("slack before the minute s", cell(o.slack_s), cell(b.slack_s), ""),
        ("first e-mail after s", cell(o.first_s, 2), cell(b.first_s, 2), ""),
        ("median e-mail after s", cell(o.median_s), cell(b.median_s), ""),
        ("p95 e-mail after s", cell(o.p95_s), cell(b.p95_s), ""),
        ("last e-mail after s (dispatch)", cell(o.last_s), cell(b.last_s),
         cell(ratio(o.last_s, b.last_s), 2)),
        ("e-mails/s", cell(o.per_s), cell(b.per_s), cell(ratio(o.per_s, b.per_s), 2)),
        ("server CPU s in the window", cell(o.server_cpu_s), cell(b.server_cpu_s),
         cell(ratio(o.server_cpu_s, b.server_cpu_s), 2)),
        ("worker CPU s in the window", cell(o.worker_cpu_s), cell(b.worker_cpu_s),
         cell(ratio(o.worker_cpu_s, b.worker_cpu_s), 2)),
        ("worker's children CPU s", cell(o.worker_children_cpu_s),
         cell(b.worker_children_cpu_s), ""),
        ("worker peak RSS MiB", cell(mib(o.worker_peak_rss_kb)), cell(mib(b.worker_peak_rss_kb)),
         cell(ratio(mib(o.worker_peak_rss_kb), mib(b.worker_peak_rss_kb)), 2)),
        ("window s (due minute to end)", cell(o.window_s), cell(b.window_s), ""),
        ("all workflows done after s", cell(o.done_s), cell(b.done_s),
         cell(ratio(o.done_s, b.done_s), 2)),
        ("  workflows done/s", cell(done_rate(o)), cell(done_rate(b)),
         cell(ratio(done_rate(o), done_rate(b)), 2)),
        ("  server CPU s until then", cell(o.done_server_cpu_s), cell(b.done_server_cpu_s),
         cell(ratio(o.done_server_cpu_s, b.done_server_cpu_s), 2)),
        ("  worker CPU s until then", cell(o.done_worker_cpu_s), cell(b.done_worker_cpu_s),
         cell(ratio(o.done_worker_cpu_s, b.done_worker_cpu_s), 2)),
        ("delivered", str(o.delivered), str(b.delivered), ""),
        ("unique Message-IDs", str(o.unique), str(b.unique), ""),
        ("duplicates", str(o.duplicates), str(b.duplicates), ""),
        ("recipients without an e-mail", str(o.missing), str(b.missing), ""),
        ("before the minute", str(o.early), str(b.early), ""),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
    ours = results["ours"]
    lines.append(f"ours, the store's message states: {_states(ours['states'])}")
    lines.append(f"  of which in the sink: {_states(ours['states_delivered'])}")
    chaos = ours["chaos"]
    if chaos["kill_every"]:
        at = ", ".join(f"{k['at_s']:g}" for k in chaos["kills"]) or "none"
        lines.append(
            f"worker killed every {chaos['kill_every']:g} s: {len(chaos['kills'])} times "
            f"(at {at} s after the minute)"
        )
    if chaos["freeze"]:
        frozen = chaos["frozen"]
        at = f"at {frozen['at_s']:g} s after the minute" if frozen else "not done"
        lines.append(f"worker frozen for {chaos['freeze']:g} s: {at}")
    if chaos["kill_every"] or chaos["freeze"]:
        lines.append(f"every row settled {cell(chaos['settle_s'])} s after the minute")
        lines.append(f"delivered once, none lost: {'yes' if results['once'] else 'NO'}")
    return "\n".join(lines)


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "—"


async def bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    settings = Settings()  # the worker tuning the children inherit from our environment
    load = os.getloadavg()
    database_url = create_database(stack) if args.store == "postgres" else None
    args.profile_written = None
    if args.profile and not py_spy().exists():
        log(f"--profile: py-spy is not installed ({py_spy()}); running without it")
        args.profile = None
    running = await start_stack(
        stack,
        n=args.n,
        source="bench/dispatch.py",
        database_url=database_url,
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        enrol_concurrency=args.concurrency,
    )
    log("stack ready")
    async with running.http(args.request_timeout) as http:
        ours = await run_ours(running, http, args)
    stack.check()
    if args.pause:
        await asyncio.sleep(args.pause)
    bare = await run_bare(running, args)
    stack.check()
    o, b = ours.window, bare.window
    once = o.duplicates == 0 and o.missing == 0 and o.unique == args.n
    problems = worker_log_problems(stack)
    if not once:
        log(
            f"ours: NOT every e-mail delivered once: {o.unique} of {args.n} delivered, "
            f"{o.duplicates} duplicates, {o.missing} recipients without an e-mail"
        )
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "store": args.store,
        "touchpoints": args.touchpoints,
        "chunk": args.chunk,
        "enrol_concurrency": args.concurrency,
        "bare_concurrency": args.bare_concurrency,
        "ok": once and b.unique == args.n and not o.timed_out and not b.timed_out,
        "once": once,
        "ours": asdict(ours),
        "bare": asdict(bare),
        "ratios": {
            "e_mails_per_s_ours_over_bare": ratio(o.per_s, b.per_s),
            "dispatch_s_ours_over_bare": ratio(o.last_s, b.last_s),
            "server_cpu_ours_over_bare": ratio(o.server_cpu_s, b.server_cpu_s),
            "worker_cpu_ours_over_bare": ratio(o.worker_cpu_s, b.worker_cpu_s),
            "done_per_s_ours_over_bare": ratio(done_rate(o), done_rate(b)),
        },
        "worker_log_warnings": len(problems),
        "worker_log_warning_samples": problems[:5],
        "profile": args.profile_written,
        "worker": {
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
            "max_concurrent_activities": settings.max_concurrent_activities,
            # What ours takes at once (bare takes max_concurrent_workflow_tasks).
            "ours_workflow_task_slots": settings.workflow_task_slots,
            "render_processes": settings.render_processes,
        },
        "versions": versions(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="A morning's dispatch beside a bare Temporal baseline, on one isolated stack."
    )
    parser.add_argument("--n", type=int, default=2000, help="recipients / workflows per side")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--kill-every", type=float, default=None, metavar="SECONDS",
        help="SIGKILL and restart worker.py every SECONDS during our dispatch",
    )  # fmt: skip
    parser.add_argument(
        "--freeze", type=float, default=None, metavar="SECONDS",
        help="SIGSTOP worker.py for SECONDS once, when half our e-mails are in",
    )  # fmt: skip
    parser.add_argument(
        "--profile", nargs="?", const="flamegraph", choices=sorted(PROFILE_SUFFIX),
        help="attach py-spy to worker.py for our dispatch window (default: a flame graph)",
    )  # fmt: skip
    parser.add_argument("--touchpoints", type=int, default=1, help="our campaign's touchpoints")
    parser.add_argument("--chunk", type=int, default=1000, help="candidate ids per bulk request")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.enrol_concurrency,
        help=f"NURTURE_ENROL_CONCURRENCY for ours (default {defaults.enrol_concurrency})",
    )  # fmt: skip
    parser.add_argument("--bare-concurrency", type=int, default=25, help="bare starts in flight")
    parser.add_argument(
        "--enrol-rate", type=float, default=30.0,
        help="workflows/s assumed to choose the due minute (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--margin", type=float, default=30.0, help="seconds added before rounding to a minute"
    )
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="seconds from a due minute to give up (default: max(600, N/2))",
    )  # fmt: skip
    parser.add_argument("--poll", type=float, default=1.0, help="visibility poll interval, s")
    parser.add_argument("--sink-poll", type=float, default=0.25, help="sink poll interval, s")
    parser.add_argument("--pause", type=float, default=5.0, help="quiet seconds between sides")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="per bulk request")
    parser.add_argument("--temporal-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ui-port", type=int, default=0, help="serve the Web UI (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if min(args.n, args.chunk, args.concurrency, args.bare_concurrency, args.touchpoints) < 1:
        parser.error("--n, --chunk, --touchpoints and the concurrencies must be at least 1")
    if args.chunk > 100_000:
        parser.error("--chunk is at most 100000 (the API's limit per request)")
    for name in ("kill_every", "freeze"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.profile and (args.kill_every or args.freeze):
        parser.error("--profile does not combine with --kill-every or --freeze")
    if args.enrol_rate <= 0 or args.margin < 0:
        parser.error("--enrol-rate must be positive and --margin not negative")
    if args.timeout is None:
        args.timeout = max(600.0, args.n / 2)
    return args


def main() -> None:
    run_bench("dispatch", parse(), bench, table)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
