"""A segment of N candidates added to a campaign as one job, beside bare workflow starts,
in one run, on one Temporal server.

    .venv/bin/python bench/segments.py [--n 100000] [--bad 3] [--poll 2] [--keep]

It starts the isolated stack of bench/stack.py (Temporal dev server, SQLite store, mail
sink, worker.py, the API, the bare worker) with N candidates written straight into the
store; then, by SQL and not measured, makes them all past applicants tagged "bench" and
spoils --bad of them (default 3: one without an e-mail, one without consent, one
unsubscribed, in turn) that the segment still holds; then, through the API, saves a
campaign (three touchpoints, the first due in about a day) and a segment (past
applicants tagged "bench"). Then:

1. ours: one POST /campaigns/{id}/recipients/segment ("to the 202": the request takes
   the segment's candidates in one INSERT … SELECT and starts the batch's workflow), then
   GET /campaigns/{id}/recipients/batches/{batch_id} every --poll seconds until its
   finished_at. "decided/s" is N over the time from the POST until every candidate has a
   verdict; "started/s (store)" is the added over the time until the batch marked all
   their workflows started; "first task/s" the added over the time until visibility
   counts them all with NurtureState="active" (their first workflow task ran). It checks
   the verdicts: N - bad added, bad refused (each with its reason).
2. bare: a plain client starts as many `bench.bare.BareWorkflow`s as ours added,
   --bare-concurrency (default settings.enrol_concurrency, 25: what the batch's activity
   has in flight) in flight, against the bare worker; "starts/s", "first task/s" alike.

It also reports how long the polls took (the job holds no request open) and the CPU
seconds of the server, the worker and the API during ours. It prints a table, a JSON line
last on stdout, and writes the JSON to bench/results/segments-<timestamp>-n<N>.json.
Everything it started is stopped at the end, on error and on Ctrl-C; the exit code is 0
when both sides got through and the verdicts are right, 1 when not, 130 when interrupted.
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script (`python bench/segments.py`), the repository's root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy
from sqlalchemy import insert, literal, select, update
from temporalio.client import Client

from bench.enrol import Bare, create_campaign, rate, run_bare, watch
from bench.stack import (
    Failed,
    Stack,
    cpu_seconds,
    descendants,
    log,
    versions,
    worker_log_problems,
)
from bench.stack import run as run_bench
from bench.stack import start as start_stack
from config import Settings
from store.models import Candidate, CandidateCategory, CandidateTag, UTCDateTime
from store.models import table as table_of
from store.session import sync_url
from workflows.nurture import CAMPAIGN_ID

TAG = "bench"
# What spoils a candidate the segment still holds, and the reason the batch must give.
SPOILERS: list[tuple[str, dict[str, Any]]] = [
    ("no_email", {"email": None}),
    ("no_consent", {"consent_given_at": None}),
    ("unsubscribed", {"unsubscribed_at": datetime(2026, 2, 1, tzinfo=UTC)}),
]
WATCHED = {"server": "temporal", "worker": "worker", "api": "api"}


def prepare(database_url: str, company_id: int, ids: Sequence[int], bad: int) -> dict[int, str]:
    """Every candidate a past applicant tagged TAG, in two statements; `bad` of them
    spoiled, spread over the ids. Answers the spoiled, with the reason each must get."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    spoiled: dict[int, str] = {}
    ours = Candidate.company_id == company_id
    try:
        with engine.begin() as connection:
            connection.execute(
                update(Candidate).where(ours).values(category=CandidateCategory.PAST_APPLICANT)
            )
            tagged = select(
                Candidate.company_id,
                Candidate.id,
                literal(TAG),
                literal(datetime.now(UTC), UTCDateTime()),
            ).where(ours)
            connection.execute(
                insert(table_of(CandidateTag)).from_select(
                    ["company_id", "candidate_id", "tag", "created_at"], tagged
                )
            )
            step = max(1, len(ids) // (bad + 1))
            for k in range(bad):
                candidate = ids[min(len(ids) - 1, (k + 1) * step)]
                reason, values = SPOILERS[k % len(SPOILERS)]
                connection.execute(
                    update(Candidate).where(Candidate.id == candidate).values(values)
                )
                spoiled[candidate] = reason
    finally:
        engine.dispose()
    return spoiled


def cpu_now(stack: Stack) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, name in WATCHED.items():
        pid = stack.child(name).process.pid
        out[label] = (cpu_seconds(pid) or 0.0) + sum(
            (cpu_seconds(c) or 0.0 for c in descendants(pid)), 0.0
        )
    return out


@dataclass
class Ours:
    total: int = 0
    added: int = 0
    already_active: int = 0
    refused: int = 0
    refusals_right: bool = False
    accepted_s: float | None = None  # the POST's answer, 202
    decided_s: float | None = None  # every candidate has a verdict
    store_started_s: float | None = None  # the batch marked every added one started
    finished_s: float | None = None  # the batch's finished_at seen
    started_s: float | None = None  # by visibility: every NurtureWorkflow exists
    first_task_s: float | None = None
    active: int = 0
    polls: int = 0
    poll_s_median: float | None = None
    poll_s_max: float | None = None
    decided_per_s: float | None = None
    store_started_per_s: float | None = None
    started_per_s: float | None = None
    first_task_per_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)


async def run_ours(
    client: Client,
    http: httpx.AsyncClient,
    campaign_id: int,
    segment_id: int,
    n: int,
    spoiled: dict[int, str],
    args: argparse.Namespace,
    stack: Stack,
) -> Ours:
    ours = Ours()
    expected = n - len(spoiled)
    type_query = f'WorkflowType="NurtureWorkflow" AND {CAMPAIGN_ID.name}="{campaign_id}"'
    cpu_before = cpu_now(stack)
    log(f"ours: adding segment {segment_id} ({n} candidates) to campaign {campaign_id}")
    t0 = time.monotonic()
    watcher = asyncio.create_task(
        watch(client, "ours", type_query, expected, t0, t0 + args.timeout, args.poll)
    )
    try:
        response = await http.post(
            f"/campaigns/{campaign_id}/recipients/segment", json={"segment_id": segment_id}
        )
        ours.accepted_s = round(time.monotonic() - t0, 3)
        if response.status_code != 202:
            raise Failed(f"segment add answered {response.status_code}: {response.text[:500]}")
        batch = response.json()
        ours.total = batch["total"]
        log(f"ours: 202 in {ours.accepted_s:.2f} s, batch {batch['batch_id']} of {ours.total}")
        url = f"/campaigns/{campaign_id}/recipients/batches/{batch['batch_id']}"
        durations, shown = [], 0.0
        while True:
            sent = time.monotonic()
            polled = await http.get(url)
            now = time.monotonic()
            durations.append(now - sent)
            if polled.status_code != 200:
                raise Failed(f"GET {url} answered {polled.status_code}: {polled.text[:300]}")
            batch = polled.json()
            if batch["decided"] >= ours.total and ours.decided_s is None:
                ours.decided_s = round(now - t0, 2)
                log(f"ours: all {ours.total} decided in {ours.decided_s:.1f} s")
            if batch["started"] >= batch["added"] and ours.decided_s is not None:
                ours.store_started_s = ours.store_started_s or round(now - t0, 2)
            if batch["finished_at"]:
                ours.finished_s = round(now - t0, 2)
                break
            if now - shown >= 10:
                shown = now
                log(
                    f"ours: {now - t0:6.1f} s, decided {batch['decided']}, added "
                    f"{batch['added']}, started {batch['started']}"
                )
            if now - t0 > args.timeout:
                raise Failed(f"the batch did not finish in {args.timeout:.0f} s: {batch}")
            stack.check()
            await asyncio.sleep(args.poll)
        ours.added, ours.refused = batch["added"], batch["refused"]
        ours.already_active = batch["already_active"]
        ours.polls = len(durations)
        ours.poll_s_median = round(statistics.median(durations), 3)
        ours.poll_s_max = round(max(durations), 3)
        refused = await http.get(f"{url}/results", params={"result": "refused", "limit": 1000})
        got = {r["candidate_id"]: r["reason"] for r in refused.json()["items"]}
        ours.refusals_right = got == spoiled and ours.added == expected
        log(f"ours: {ours.added} added, {ours.refused} refused ({got}) in {ours.finished_s} s")
        progress = await watcher
    finally:
        watcher.cancel()
    ours.cpu_s = {k: round(v - cpu_before[k], 1) for k, v in cpu_now(stack).items()}
    ours.started_s, ours.first_task_s = progress.started_s, progress.first_task_s
    ours.active = progress.active
    ours.decided_per_s = rate(n, ours.decided_s)
    ours.store_started_per_s = rate(expected, ours.store_started_s)
    ours.started_per_s = rate(expected, ours.started_s)
    ours.first_task_per_s = rate(expected, ours.first_task_s)
    return ours


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def table(results: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:,.1f}"

    o, b = Ours(**results["ours"]), Bare(**results["bare"])
    rows = [
        ("N (candidates in the segment)", f"{results['n']:,}", "", ""),
        ("", "ours", "bare", "ours/bare"),
        ("workflows", f"{o.added:,}", f"{o.added:,}", ""),
        ("seconds to the 202", cell(o.accepted_s), "", ""),
        ("decided/s (verdicts)", cell(o.decided_per_s), "", ""),
        (
            "started/s (store) vs starts/s (bare)",
            cell(o.store_started_per_s),
            cell(b.starts_per_s),
            cell(ratio(o.store_started_per_s, b.starts_per_s)),
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
        ("poll of the batch, median / max s", f"{o.poll_s_median} / {o.poll_s_max}", "", ""),
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
    settings = Settings()
    running = await start_stack(
        stack,
        n=args.n,
        source="bench/segments.py",
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        enrol_concurrency=args.concurrency,
    )
    client, run = running.client, uuid.uuid4().hex[:8]
    t = time.monotonic()
    spoiled = prepare(running.database_url, running.company_id, running.ids, args.bad)
    log(f"candidates tagged and {len(spoiled)} spoiled in {time.monotonic() - t:.1f} s")
    async with running.http(args.request_timeout) as http:
        campaign_id = await create_campaign(http, running.admin_user_id)
        made = await http.post(
            "/segments",
            json={
                "name": "Bench pool",
                "filter": {"categories": ["past_applicant"], "tags": [TAG]},
            },
        )
        if made.status_code != 201:
            raise Failed(f"POST /segments answered {made.status_code}: {made.text[:300]}")
        segment_id = made.json()["id"]
        log(f"campaign {campaign_id} and segment {segment_id} saved; stack ready")
        ours = await run_ours(client, http, campaign_id, segment_id, args.n, spoiled, args, stack)
        stack.check()
        await asyncio.sleep(args.pause)
        bare = await run_bare(client, ours.added, running.bare_queue, run, args)
        stack.check()

    problems = worker_log_problems(stack)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "bad": args.bad,
        "concurrency": args.concurrency,
        "bare_concurrency": args.bare_concurrency,
        "store": "sqlite",
        "ok": ours.refusals_right
        and ours.first_task_s is not None
        and bare.first_task_s is not None,
        "ours": asdict(ours),
        "bare": asdict(bare),
        "ratios": {
            "first_task_ours_over_bare": ratio(ours.first_task_per_s, bare.first_task_per_s),
            "started_ours_store_over_bare_starts": ratio(
                ours.store_started_per_s, bare.starts_per_s
            ),
            "started_ours_over_bare": ratio(ours.started_per_s, bare.started_per_s),
        },
        "worker_log_warnings": len(problems),
        "worker_log_warning_samples": problems[:5],
        "worker": {
            "max_cached_workflows": settings.max_cached_workflows,
            "max_concurrent_activities": settings.max_concurrent_activities,
            "workflow_task_slots": settings.workflow_task_slots,
        },
        "versions": versions(),
        "cpus": os.cpu_count(),
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="A segment added to a campaign as one job, beside bare workflow starts."
    )
    parser.add_argument("--n", type=int, default=100_000, help="candidates in the segment")
    parser.add_argument(
        "--bad", type=int, default=3, help="of them without e-mail, consent, or unsubscribed"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.enrol_concurrency,
        help="NURTURE_ENROL_CONCURRENCY for ours, and the bare client's starts in flight "
        f"(default: settings, {defaults.enrol_concurrency})",
    )
    parser.add_argument("--bare-concurrency", type=int, default=None, help="default: --concurrency")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per side to wait (default: max(300, N/5))",
    )
    parser.add_argument("--poll", type=float, default=2.0, help="batch and visibility poll, s")
    parser.add_argument("--pause", type=float, default=5.0, help="quiet seconds between sides")
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--temporal-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ui-port", type=int, default=0, help="serve the Web UI (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.bad < 0 or args.bad >= args.n:
        parser.error("--n and --concurrency must be at least 1, --bad from 0 to N - 1")
    if args.bare_concurrency is None:
        args.bare_concurrency = args.concurrency
    if args.timeout is None:
        args.timeout = max(300.0, args.n / 5)
    return args


def main() -> None:
    run_bench("segments", parse(), bench, table)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
