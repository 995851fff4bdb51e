"""Bulk enrolment beside a bare Temporal baseline, in one run, on one Temporal server.

    .venv/bin/python bench/enrol.py --n 2000 [--chunk 1000] [--keep]

It starts an isolated stack in a temporary directory, on free ports (never those of
`make run`): a Temporal dev server (SQLite, WAL, our search attributes), a migrated SQLite
store with one company (Europe/Paris), the mail sink, `worker.py` and the API (uvicorn).
It writes N candidates straight into the store (setup, not measured) and saves a campaign of
three touchpoints through the API, the first due in about a day. Then:

1. ours: POST /campaigns/{id}/recipients/bulk in chunks. "accepted/s" is N over the time to
   the last bulk answer; "first task/s" is N over the time from the first POST until
   visibility counts N NurtureWorkflows with NurtureState="active" (upserted by their first
   workflow task; the start sets "starting").
2. bare: a plain client starts N `bench.bare.BareWorkflow`s (same search attribute, same
   first task shape), `--bare-concurrency` (default settings.enrol_concurrency, 25) in
   flight, against a worker process of its own; "starts/s" and "first task/s" are measured
   the same way. Each bulk request is a batch with its own enrol_concurrency, so ours may
   have up to that times the number of requests in flight (the table shows both bounds):
   `--chunk N` or `--bare-concurrency` make the two sides alike.

It prints a table, a JSON line last on stdout, and writes the JSON to
bench/results/enrol-<timestamp>-n<N>.json. Everything it started is stopped at the end, on
error and on Ctrl-C; the exit code is 0 when both sides reached N, 1 when not, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# Run as a script (`python bench/enrol.py`), the repository's root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.stack import (
    TIME_ZONE,
    Failed,
    Stack,
    count,
    log,
    versions,
    worker_log_problems,
)
from bench.stack import create_campaign as create_plan
from bench.stack import run as run_bench
from bench.stack import start as start_stack
from config import Settings
from workflows.nurture import CAMPAIGN_ID, STATE

BARE_WORKFLOW = "BareWorkflow"  # bench.bare.WORKFLOW_NAME; its worker runs in a child


async def create_campaign(http: httpx.AsyncClient, sender_user_id: int) -> int:
    """Three touchpoints, the first at 5 minutes before now (Paris) so it is due tomorrow."""
    send_time = (datetime.now(ZoneInfo(TIME_ZONE)) - timedelta(minutes=5)).strftime("%H:%M")
    return await create_plan(http, sender_user_id, "Enrolment bench", send_time, 3)


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Progress:
    """What visibility showed, in seconds from the phase's start."""

    started_s: float | None = None
    first_task_s: float | None = None
    started: int = 0
    active: int = 0


async def watch(
    client: Client,
    label: str,
    type_query: str,
    n: int,
    t0: float,
    deadline: float,
    poll: float,
) -> Progress:
    """Poll visibility until N of the workflows are through their first task (or time)."""
    progress = Progress()
    shown = 0.0
    while True:
        progress.started = await count(client, type_query)
        progress.active = await count(client, f'{type_query} AND {STATE.name}="active"')
        now = time.monotonic()
        if progress.started >= n and progress.started_s is None:
            progress.started_s = now - t0
        if progress.active >= n:
            progress.first_task_s = now - t0
            log(f"{label}: {n} through their first task in {progress.first_task_s:.1f} s")
            return progress
        if now - shown >= 10:
            shown = now
            log(f"{label}: {now - t0:6.1f} s, started {progress.started}, active {progress.active}")
        if now > deadline:
            log(f"{label}: gave up after {now - t0:.0f} s at {progress.active} of {n}")
            return progress
        await asyncio.sleep(poll)


def rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


def chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@dataclass
class Ours:
    added: int = 0
    already_active: int = 0
    refused: int = 0
    requests: int = 0
    accepted_s: float | None = None
    request_s_median: float | None = None
    request_s_max: float | None = None
    started_s: float | None = None  # by visibility: every NurtureWorkflow exists
    first_task_s: float | None = None
    active: int = 0
    batches_finished_s: float | None = None
    accepted_per_s: float | None = None
    started_per_s: float | None = None
    first_task_per_s: float | None = None


async def run_ours(
    client: Client,
    http: httpx.AsyncClient,
    campaign_id: int,
    ids: Sequence[int],
    args: argparse.Namespace,
    stack: Stack,
) -> Ours:
    n = len(ids)
    ours = Ours()
    type_query = f'WorkflowType="NurtureWorkflow" AND {CAMPAIGN_ID.name}="{campaign_id}"'
    log(f"ours: posting {n} ids in chunks of {args.chunk}")
    t0 = time.monotonic()
    watcher = asyncio.create_task(
        watch(client, "ours", type_query, n, t0, t0 + args.timeout, args.poll)
    )
    try:
        durations = []
        for chunk in chunks(ids, args.chunk):
            sent = time.monotonic()
            response = await http.post(
                f"/campaigns/{campaign_id}/recipients/bulk",
                json={"candidate_ids": list(chunk)},
            )
            durations.append(time.monotonic() - sent)
            if response.status_code != 202:
                raise Failed(f"bulk add answered {response.status_code}: {response.text[:500]}")
            body = response.json()
            ours.added += body["added"]
            ours.already_active += body["already_active"]
            ours.refused += body["refused"]
            ours.requests += 1
            stack.check()
        ours.accepted_s = time.monotonic() - t0
        ours.request_s_median = round(statistics.median(durations), 3)
        ours.request_s_max = round(max(durations), 3)
        log(
            f"ours: {ours.added} added ({ours.refused} refused, {ours.already_active} already "
            f"active) in {ours.accepted_s:.2f} s, {ours.requests} requests"
        )
        if ours.added != n:
            raise Failed(f"only {ours.added} of {n} candidates were added")
        progress = await watcher
    finally:
        watcher.cancel()
    ours.started_s, ours.first_task_s = progress.started_s, progress.first_task_s
    ours.active = progress.active
    # The batches' activities may still be marking rows as started: let them finish, so the
    # bare phase has the server to itself.
    batches = 'WorkflowType="EnrolmentBatchWorkflow" AND ExecutionStatus="Running"'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not await count(client, batches):
            ours.batches_finished_s = time.monotonic() - t0
            break
        await asyncio.sleep(args.poll)
    ours.accepted_per_s = rate(n, ours.accepted_s)
    ours.started_per_s = rate(n, ours.started_s)
    ours.first_task_per_s = rate(n, ours.first_task_s)
    return ours


@dataclass
class Bare:
    starts_s: float | None = None
    started_s: float | None = None  # by visibility, as for ours
    first_task_s: float | None = None
    active: int = 0
    starts_per_s: float | None = None
    started_per_s: float | None = None
    first_task_per_s: float | None = None


async def run_bare(
    client: Client, n: int, task_queue: str, run: str, args: argparse.Namespace
) -> Bare:
    bare = Bare()
    type_query = f'WorkflowType="{BARE_WORKFLOW}"'
    log(f"bare: starting {n} workflows, {args.bare_concurrency} in flight")
    following = iter(range(n))

    async def starter() -> None:
        # A fixed number of starters, each taking the next index: bounded memory at any N.
        for i in following:
            await client.start_workflow(
                BARE_WORKFLOW,
                id=f"bare/{run}/{i}",
                task_queue=task_queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(STATE, "starting")]),
                task_timeout=timedelta(seconds=10),
            )

    t0 = time.monotonic()
    watcher = asyncio.create_task(
        watch(client, "bare", type_query, n, t0, t0 + args.timeout, args.poll)
    )
    try:
        await asyncio.gather(*(starter() for _ in range(args.bare_concurrency)))
        bare.starts_s = time.monotonic() - t0
        log(f"bare: {n} started in {bare.starts_s:.2f} s")
        progress = await watcher
    finally:
        watcher.cancel()
    bare.started_s, bare.first_task_s = progress.started_s, progress.first_task_s
    bare.active = progress.active
    bare.starts_per_s = rate(n, bare.starts_s)
    bare.started_per_s = rate(n, bare.started_s)
    bare.first_task_per_s = rate(n, bare.first_task_s)
    return bare


# -- the run ------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def table(results: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:,.1f}"

    o, b = Ours(**results["ours"]), Bare(**results["bare"])
    rows = [
        ("N", f"{results['n']:,}", "", ""),
        ("", "ours", "bare", "ours/bare"),
        (
            "starts in flight (at most)",
            str(results["ours_max_in_flight"]),
            str(results["bare_concurrency"]),
            "",
        ),
        (
            "accepted/s (ours) vs starts/s (bare)",
            cell(o.accepted_per_s),
            cell(b.starts_per_s),
            cell(ratio(o.accepted_per_s, b.starts_per_s)),
        ),
        (
            "started/s (visibility)",
            cell(o.started_per_s),
            cell(b.started_per_s),
            cell(ratio(o.started_per_s, b.started_per_s)),
        ),
        (
            "through first task/s",
            cell(o.first_task_per_s),
            cell(b.first_task_per_s),
            cell(ratio(o.first_task_per_s, b.first_task_per_s)),
        ),
        ("seconds to first task of all", cell(o.first_task_s), cell(b.first_task_s), ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


async def bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    settings = Settings()  # the worker tuning the children inherit from our environment
    running = await start_stack(
        stack,
        n=args.n,
        source="bench/enrol.py",
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        enrol_concurrency=args.concurrency,
    )
    client, ids, run = running.client, running.ids, uuid.uuid4().hex[:8]
    async with running.http(args.request_timeout) as http:
        campaign_id = await create_campaign(http, running.admin_user_id)
        log(f"campaign {campaign_id} saved; stack ready")

        ours: Ours | None = None
        bare: Bare | None = None
        for side in ("bare", "ours") if args.bare_first else ("ours", "bare"):
            if side == "ours":
                ours = await run_ours(client, http, campaign_id, ids, args, stack)
            else:
                bare = await run_bare(client, args.n, running.bare_queue, run, args)
            stack.check()
            if args.pause:
                await asyncio.sleep(args.pause)

    mail = running.mail_dir
    sent = len(list(mail.glob("*.eml"))) if mail.exists() else 0
    problems = worker_log_problems(stack)
    assert ours is not None and bare is not None
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "chunk": args.chunk,
        "concurrency": args.concurrency,
        "bare_concurrency": args.bare_concurrency,
        # Each bulk request is a batch whose activity has its own `enrol_concurrency`.
        "ours_max_in_flight": args.concurrency
        * min(-(-args.n // args.chunk), settings.max_concurrent_activities),
        "order": "bare-first" if args.bare_first else "ours-first",
        "ok": ours.first_task_s is not None and bare.first_task_s is not None,
        "ours": asdict(ours),
        "bare": asdict(bare),
        "ratios": {
            "first_task_ours_over_bare": ratio(ours.first_task_per_s, bare.first_task_per_s),
            "accepted_ours_over_bare_starts": ratio(ours.accepted_per_s, bare.starts_per_s),
            "started_ours_over_bare": ratio(ours.started_per_s, bare.started_per_s),
        },
        "e_mails_sent": sent,
        "worker_log_warnings": len(problems),
        "worker_log_warning_samples": problems[:5],
        "worker": {
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
            "max_concurrent_activities": settings.max_concurrent_activities,
            # What ours takes at once (bare takes max_concurrent_workflow_tasks).
            "ours_workflow_task_slots": settings.workflow_task_slots,
        },
        "versions": versions(),
        "cpus": os.cpu_count(),
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="Bulk enrolment beside a bare Temporal client, on one isolated stack."
    )
    parser.add_argument("--n", type=int, default=2000, help="candidates / workflows per side")
    parser.add_argument("--chunk", type=int, default=1000, help="candidate ids per bulk request")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.enrol_concurrency,
        help="starts in flight: the bare client's, and NURTURE_ENROL_CONCURRENCY for ours "
        f"(default: settings, {defaults.enrol_concurrency})",
    )
    parser.add_argument(
        "--bare-concurrency",
        type=int,
        default=None,
        help="the bare client's starts in flight (default: --concurrency); ours has up to "
        "concurrency x min(bulk requests, worker activity slots) in flight, one batch each",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per side to wait for N first tasks (default: max(300, N/5))",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="visibility poll interval, s")
    parser.add_argument("--pause", type=float, default=5.0, help="quiet seconds after a side")
    parser.add_argument("--bare-first", action="store_true", help="run the bare side first")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="per bulk request")
    parser.add_argument("--temporal-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ui-port", type=int, default=0, help="serve the Web UI (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if min(args.n, args.chunk, args.concurrency, args.bare_concurrency or 1) < 1:
        parser.error("--n, --chunk and the concurrencies must be at least 1")
    if args.chunk > 100_000:
        parser.error("--chunk is at most 100000 (the API's limit per request)")
    if args.bare_concurrency is None:
        args.bare_concurrency = args.concurrency
    if args.timeout is None:
        args.timeout = max(300.0, args.n / 5)
    return args


def main() -> None:
    run_bench("enrol", parse(), bench, table)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
