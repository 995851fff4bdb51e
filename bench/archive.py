"""Archiving a campaign of N recipients beside N bare signals, in one run, on one Temporal
server.

    .venv/bin/python bench/archive.py [--n 20000] [--signal-concurrency 50] [--ours-first]
        [--poll 2] [--keep]

It starts the isolated stack of bench/stack.py (Temporal dev server, SQLite store, mail
sink, worker.py, the API, the bare worker) with N candidates written straight into the
store, then, not measured:

- ours: saves a campaign of three touchpoints whose first is due in about a day (nothing is
  sent) and adds the N candidates by POST /campaigns/{id}/recipients/bulk in chunks, as
  bench/enrol.py does, until visibility counts N NurtureWorkflows through their first task
  (NurtureState="active", asleep) and no enrolment batch runs;
- bare: starts N `bench.bare.BareSignalWorkflow`s (--concurrency in flight) against the bare
  worker (worker.py's runner and concurrency settings), until visibility counts N of them
  through their first task (asleep on a day's timer, or until one `exit` signal).

Then the two sides, one after the other (bare first; --ours-first for the other order),
--pause quiet seconds before each:

1. bare: a plain client sends each bare workflow one `exit` signal, --signal-concurrency
   (default settings.signal_concurrency) in flight. "exits/s" is N over the time from the
   first signal until visibility counts N of them ExecutionStatus="Completed".
2. ours: one POST /campaigns/{id}/archive. The store exits every recipient in one
   transaction and the API starts CampaignSignalsWorkflow, whose activity pages the store
   and signals each NurtureWorkflow `exit`, settings.signal_concurrency in flight (the
   children get --signal-concurrency as NURTURE_SIGNAL_CONCURRENCY). "exits/s" is N over
   the time from the POST until visibility counts N of the campaign's NurtureWorkflows
   Completed. It also reports the POST's latency and answer size, when the
   CampaignSignalsWorkflow completed (every signal sent), and checks the store: N
   recipients exited, reason archived.

Visibility is polled every --poll seconds (2): on the dev server a count holds its one
SQLite connection, the one every workflow task needs too, so the counts are timed and their
sum reported. For each side it reports the CPU seconds (/proc/<pid>/stat utime + stime) the
Temporal server, the worker (and its template processes), the bare worker, the API and this
process (the bare side's client) spent from the first signal or the POST until every
workflow had closed, and what the rest of the machine took meanwhile (/proc/stat, less
those): the machine may be shared, and a busy neighbour slows either side. It prints a
table, a JSON
line last on stdout, and writes the JSON to bench/results/archive-<timestamp>-n<N>.json.
Everything it started is stopped at the end, on error and on Ctrl-C; the exit code is 0
when both sides closed N workflows (and the store exited N), 1 when not, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# Run as a script (`python bench/archive.py`), the repository's root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.bare import SIGNAL, SIGNAL_WORKFLOW_NAME
from bench.dispatch import ratio
from bench.enrol import rate
from bench.enrol import run_ours as enrol_ours
from bench.enrol import watch as watch_first_task
from bench.moves import (
    Store,
    cell,
    cpu_now,
    cpu_rows,
    cpu_since,
    in_flight,
    layout,
    ms,
    spread,
    watch,
)
from bench.stack import (
    CLOCK_TICKS,
    TIME_ZONE,
    Failed,
    Running,
    Stack,
    count,
    cpu_seconds,
    create_campaign,
    log,
    versions,
    worker_log_problems,
)
from bench.stack import run as run_bench
from bench.stack import start as start_stack
from config import Settings
from workflows.nurture import CAMPAIGN_ID, STATE

TOUCHPOINTS = 3
TELLER = "CampaignSignalsWorkflow"


class Enrolments(Store):
    """bench/moves.py's reads of the store, and the one this bench checks."""

    async def archived(self, campaign_id: int) -> int:
        """The campaign's recipients exited by its archive."""
        query = (
            "SELECT count(*) FROM enrolments WHERE campaign_id = :campaign "
            "AND status = 'exited' AND exit_reason = 'archived'"
        )
        return await asyncio.to_thread(self._scalar, query, {"campaign": campaign_id})


def machine_cpu() -> float:
    """CPU seconds every process of the machine spent (all cores), from /proc/stat."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Meter:
    """CPU seconds from a moment on: the stack's children (bench/moves.py's), this process
    (the bare side's client sends its signals from here), and the machine's: the others
    are what the rest of the machine took meanwhile (it is shared)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.children = cpu_now(stack)
        self.client = cpu_seconds(os.getpid()) or 0.0
        self.machine = machine_cpu()

    def since(self) -> dict[str, float]:
        used = cpu_since(self.stack, self.children)
        used["this client"] = round((cpu_seconds(os.getpid()) or 0.0) - self.client, 2)
        used["machine"] = round(machine_cpu() - self.machine, 2)
        mine = sum(v for k, v in used.items() if k != "machine")
        used["others"] = round(used["machine"] - mine, 2)
        return used


class Counts:
    """Visibility counts, timed: on the dev server they share its one SQLite connection with
    everything else, so a slow count holds up the workflows it is counting."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.durations: list[float] = []

    async def __call__(self, query: str) -> int:
        sent = time.monotonic()
        try:
            return await count(self.client, query)
        finally:
            self.durations.append(time.monotonic() - sent)

    def summary(self) -> tuple[int, list[float | None], float]:
        """How many; their median, p95 and max in milliseconds; their sum in seconds."""
        return (
            len(self.durations),
            [ms(s) for s in spread(self.durations)],
            round(sum(self.durations), 2),
        )


# -- ours ---------------------------------------------------------------------------------


@dataclass
class Ours:
    campaign_id: int = 0
    enrolled_s: float | None = None  # setup: the first bulk add to N asleep
    post_s: float | None = None  # the archive's answer
    post_status: int = 0
    post_bytes: int = 0
    cancelled_total: int | None = None
    cancelled_listed: int = 0
    told_s: float | None = None  # CampaignSignalsWorkflow completed: every signal sent
    told: int | None = None  # what its activity answers: workflows signalled
    closed_s: float | None = None  # visibility: N NurtureWorkflows Completed
    closed: int = 0
    store_exited: int = 0  # enrolments exited, reason archived
    exits_per_s: float | None = None
    cpu_post: dict[str, float] = field(default_factory=dict)  # until the answer
    cpu: dict[str, float] = field(default_factory=dict)  # until N closed
    counts: int = 0  # visibility counts while measuring
    count_ms: list[float | None] = field(default_factory=list)  # median, p95, max
    count_s: float = 0.0  # all of them: the server's connection was theirs that long


async def enrol(
    running: Running, http: httpx.AsyncClient, ours: Ours, args: argparse.Namespace
) -> None:
    """The campaign, its N recipients asleep; the first touchpoint is due in about a day."""
    send_time = (datetime.now(ZoneInfo(TIME_ZONE)) - timedelta(minutes=5)).strftime("%H:%M")
    ours.campaign_id = await create_campaign(
        http, running.admin_user_id, "Archive bench", send_time, TOUCHPOINTS
    )
    log(f"ours: campaign {ours.campaign_id} saved, first touchpoint at {send_time} tomorrow")
    enrolled = await enrol_ours(
        running.client, http, ours.campaign_id, running.ids, args, running.stack
    )
    if enrolled.first_task_s is None:
        raise Failed(f"ours: only {enrolled.active} of {args.n} recipients asleep")
    ours.enrolled_s = round(enrolled.first_task_s, 2)


async def run_ours(
    running: Running,
    http: httpx.AsyncClient,
    store: Enrolments,
    ours: Ours,
    args: argparse.Namespace,
) -> Ours:
    stack, client, n = running.stack, running.client, args.n
    closed_query = (
        f'WorkflowType="NurtureWorkflow" AND {CAMPAIGN_ID.name}="{ours.campaign_id}" '
        'AND ExecutionStatus="Completed"'
    )
    teller_query = f'WorkflowType="{TELLER}" AND ExecutionStatus="Completed"'

    counts = Counts(client)

    async def closed() -> int:
        return await counts(closed_query)

    async def told() -> int:
        return n if await counts(teller_query) else 0

    log(f"ours: POST /campaigns/{ours.campaign_id}/archive, {n} recipients")
    meter = Meter(stack)
    t0 = time.monotonic()
    probes = {"closed": closed, "told": told}
    watcher = asyncio.create_task(watch("ours", probes, n, t0, meter.children, args, stack))
    try:
        response = await http.post(f"/campaigns/{ours.campaign_id}/archive")
        ours.post_s = round(time.monotonic() - t0, 3)
        ours.cpu_post = meter.since()
        ours.post_status, ours.post_bytes = response.status_code, len(response.content)
        if response.status_code != 200:
            raise Failed(f"the archive answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        ours.cancelled_total = body["cancelled_total"]
        ours.cancelled_listed = len(body["cancelled"])
        log(
            f"ours: archived in {ours.post_s:.2f} s, {ours.cancelled_total} touchpoints "
            f"cancelled, {ours.post_bytes / 1e3:.0f} kB answer"
        )
        watched = await watcher
    finally:
        watcher.cancel()
    ours.closed_s, ours.told_s = watched.reached_s["closed"], watched.reached_s["told"]
    ours.closed, ours.cpu = watched.last["closed"], meter.since()
    ours.exits_per_s = rate(n, ours.closed_s)
    ours.counts, ours.count_ms, ours.count_s = counts.summary()
    async for execution in client.list_workflows(teller_query):
        ours.told = await client.get_workflow_handle(execution.id).result()
    ours.store_exited = await store.archived(ours.campaign_id)
    log(f"ours: {ours.told} told, the store has {ours.store_exited} exited (archived)")
    return ours


# -- bare ---------------------------------------------------------------------------------


@dataclass
class Bare:
    run: str = ""
    started_s: float | None = None  # setup: the first start to N asleep
    signals_s: float | None = None  # the last signal's answer
    closed_s: float | None = None  # visibility: N Completed
    closed: int = 0
    exits_per_s: float | None = None
    request_s_median: float | None = None
    request_s_p95: float | None = None
    request_s_max: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # until N closed
    counts: int = 0  # visibility counts while measuring
    count_ms: list[float | None] = field(default_factory=list)  # median, p95, max
    count_s: float = 0.0  # all of them: the server's connection was theirs that long


def bare_id(run: str, i: int) -> str:
    return f"bare-signal/{run}/{i}"


async def start_bare(running: Running, bare: Bare, args: argparse.Namespace) -> None:
    """N bare workflows asleep, --concurrency starts in flight."""
    client, n = running.client, args.n
    bare.run = uuid.uuid4().hex[:8]

    async def start(i: int) -> None:
        await client.start_workflow(
            SIGNAL_WORKFLOW_NAME,
            id=bare_id(bare.run, i),
            task_queue=running.bare_queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(STATE, "starting")]),
            task_timeout=timedelta(seconds=10),
        )

    log(f"bare: starting {n} workflows, {args.concurrency} in flight")
    t0 = time.monotonic()
    watcher = asyncio.create_task(
        watch_first_task(
            client, "bare", f'WorkflowType="{SIGNAL_WORKFLOW_NAME}"', n, t0,
            t0 + args.timeout, args.poll,
        )
    )  # fmt: skip
    try:
        await in_flight(args.concurrency, range(n), start)
        progress = await watcher
    finally:
        watcher.cancel()
    if progress.first_task_s is None:
        raise Failed(f"bare: only {progress.active} of {n} workflows asleep")
    bare.started_s = round(progress.first_task_s, 2)


async def run_bare(running: Running, bare: Bare, args: argparse.Namespace) -> Bare:
    stack, client, n = running.stack, running.client, args.n
    closed_query = f'WorkflowType="{SIGNAL_WORKFLOW_NAME}" AND ExecutionStatus="Completed"'
    durations: list[float] = []

    counts = Counts(client)

    async def closed() -> int:
        return await counts(closed_query)

    async def signalled() -> int:
        return len(durations)

    async def signal(i: int) -> None:
        sent = time.monotonic()
        await client.get_workflow_handle(bare_id(bare.run, i)).signal(SIGNAL, "archived")
        durations.append(time.monotonic() - sent)

    log(f"bare: {n} signals, {args.signal_concurrency} in flight")
    meter = Meter(stack)
    t0 = time.monotonic()
    probes = {"closed": closed, "signalled": signalled}
    watcher = asyncio.create_task(watch("bare", probes, n, t0, meter.children, args, stack))
    try:
        await in_flight(args.signal_concurrency, range(n), signal)
        bare.signals_s = round(time.monotonic() - t0, 2)
        log(f"bare: {n} signals answered in {bare.signals_s:.1f} s")
        watched = await watcher
    finally:
        watcher.cancel()
    bare.closed_s, bare.closed, bare.cpu = (
        watched.reached_s["closed"],
        watched.last["closed"],
        meter.since(),
    )
    bare.exits_per_s = rate(n, bare.closed_s)
    bare.counts, bare.count_ms, bare.count_s = counts.summary()
    bare.request_s_median, bare.request_s_p95, bare.request_s_max = spread(durations)
    return bare


# -- the run ------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    o, b = Ours(**results["ours"]), Bare(**results["bare"])
    rows: list[tuple[str, str, str, str]] = [
        ("N", f"{results['n']:,}", f"order: {results['order']}", ""),
        ("", "ours", "bare", "ours/bare"),
        ("signals in flight", str(results["signal_concurrency"]),
         str(results["signal_concurrency"]), ""),
        ("exits/s (to N closed)", cell(o.exits_per_s), cell(b.exits_per_s),
         cell(ratio(o.exits_per_s, b.exits_per_s), 2)),
        ("seconds to N closed", cell(o.closed_s), cell(b.closed_s),
         cell(ratio(o.closed_s, b.closed_s), 2)),
        ("seconds to every signal sent", cell(o.told_s), cell(b.signals_s), ""),
        ("archive POST s (ours)", cell(o.post_s, 2), "", ""),
        ("archive answer kB (ours)", cell(o.post_bytes / 1e3), "", ""),
        ("signal ms median / p95 / max (bare)", "",
         f"{cell(ms(b.request_s_median))} / {cell(ms(b.request_s_p95))} / "
         f"{cell(ms(b.request_s_max))}", ""),
        ("visibility counts while measuring", str(o.counts), str(b.counts), ""),
        ("  their s, all together", cell(o.count_s), cell(b.count_s), ""),
        ("  count ms median / p95 / max", " / ".join(cell(v, 0) for v in o.count_ms),
         " / ".join(cell(v, 0) for v in b.count_ms), ""),
        *cpu_rows(o.cpu, b.cpu),
        ("this client's CPU s (bare: its signals)", cell(o.cpu.get("this client")),
         cell(b.cpu.get("this client")), ""),
        ("machine CPU s, all processes", cell(o.cpu.get("machine")), cell(b.cpu.get("machine")),
         ""),
        ("  others' (not this bench's)", cell(o.cpu.get("others")), cell(b.cpu.get("others")),
         ""),
        ("setup: s to N asleep", cell(o.enrolled_s), cell(b.started_s), ""),
    ]  # fmt: skip
    lines = layout(rows)
    lines.append(
        f"ours: {o.cancelled_total} touchpoints cancelled ({o.cancelled_listed} in the "
        f"answer), {o.told} workflows told, {o.closed:,} closed, the store has "
        f"{o.store_exited:,} exited (archived); API CPU s to the answer "
        f"{cell(o.cpu_post.get('api'))}"
    )
    return "\n".join(lines)


async def bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    # The children inherit our environment: ours signals as many in flight as bare.
    os.environ["NURTURE_SIGNAL_CONCURRENCY"] = str(args.signal_concurrency)
    settings = Settings()
    load = os.getloadavg()
    running = await start_stack(
        stack,
        n=args.n,
        source="bench/archive.py",
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        enrol_concurrency=args.concurrency,
    )
    store = Enrolments(running.database_url)
    stack.on_stop.append(store.close)
    ours, bare = Ours(), Bare()
    async with running.http(args.request_timeout) as http:
        await enrol(running, http, ours, args)
        await start_bare(running, bare, args)
        log("stack ready: both sides asleep")
        for side in ("ours", "bare") if args.ours_first else ("bare", "ours"):
            if args.pause:
                await asyncio.sleep(args.pause)
            if side == "ours":
                await run_ours(running, http, store, ours, args)
            else:
                await run_bare(running, bare, args)
            stack.check()
    problems = worker_log_problems(stack)
    api_problems = worker_log_problems(stack, "api")
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "store": "sqlite",
        "signal_concurrency": args.signal_concurrency,
        "enrol_concurrency": args.concurrency,
        "order": "ours-first" if args.ours_first else "bare-first",
        "ok": ours.closed_s is not None
        and bare.closed_s is not None
        and ours.store_exited == args.n,
        "ours": asdict(ours),
        "bare": asdict(bare),
        "ratios": {
            "exits_per_s_ours_over_bare": ratio(ours.exits_per_s, bare.exits_per_s),
            "server_cpu_ours_over_bare": ratio(ours.cpu.get("server"), bare.cpu.get("server")),
            "worker_cpu_ours_over_bare": ratio(ours.cpu.get("worker"), bare.cpu.get("bare worker")),
        },
        "worker_log_warnings": len(problems),
        "worker_log_warning_samples": problems[:5],
        "api_log_warnings": len(api_problems),
        "api_log_warning_samples": api_problems[:5],
        "worker": {
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
            "max_concurrent_activities": settings.max_concurrent_activities,
            # What ours takes at once (bare takes max_concurrent_workflow_tasks).
            "ours_workflow_task_slots": settings.workflow_task_slots,
        },
        "versions": versions(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="Archiving a campaign of N recipients beside N bare signals, on one "
        "isolated stack."
    )
    parser.add_argument("--n", type=int, default=20_000, help="recipients / bare workflows")
    parser.add_argument(
        "--signal-concurrency", type=int, default=defaults.signal_concurrency,
        help="signals in flight: the bare client's, and NURTURE_SIGNAL_CONCURRENCY for ours "
        f"(default: settings, {defaults.signal_concurrency})",
    )  # fmt: skip
    parser.add_argument("--chunk", type=int, default=1000, help="candidate ids per bulk add")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.enrol_concurrency,
        help="setup: bare starts in flight, and NURTURE_ENROL_CONCURRENCY for ours "
        f"(default: settings, {defaults.enrol_concurrency})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="seconds per phase to wait for N (default: max(300, N/5))",
    )  # fmt: skip
    parser.add_argument(
        "--poll", type=float, default=2.0,
        help="visibility poll interval, s: each count holds the dev server's one SQLite "
        "connection (up to a second at 20,000 workflows), slowing what it measures",
    )  # fmt: skip
    parser.add_argument("--pause", type=float, default=5.0, help="quiet seconds before a side")
    parser.add_argument("--ours-first", action="store_true", help="archive before the bare side")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="per request, s")
    parser.add_argument("--temporal-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ui-port", type=int, default=0, help="serve the Web UI (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if min(args.n, args.chunk, args.concurrency, args.signal_concurrency) < 1:
        parser.error("--n, --chunk and the concurrencies must be at least 1")
    if args.chunk > 100_000:
        parser.error("--chunk is at most 100000 (the API's limit per request)")
    if args.timeout is None:
        args.timeout = max(300.0, args.n / 5)
    return args


def main() -> None:
    run_bench("archive", parse(), bench, table)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
