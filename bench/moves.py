"""Stage moves through the API beside bare workflow starts, in one run, on one Temporal server.

    .venv/bin/python bench/moves.py --n 2000 [--store sqlite|postgres] [--concurrency 25]
        [--bare-first] [--keep]
    .venv/bin/python bench/moves.py --bulk [--n 10000] [--bulk-poll 3] [...]

It starts the isolated stack of bench/stack.py (Temporal dev server, store, mail sink,
worker.py, the API, the bare worker) with N candidates written straight into the store,
then, through the API and not measured: creates a job, gives its second stage
("Screening", the first kept first with its id) two actions, an immediate note and an
e-mail 3 days later (from the company's admin), and enters the N candidates into the job
as imported applications (POST /jobs/{id}/applications, source "import": no actions).
Then:

1. ours: N moves into Screening, POST /jobs/{id}/candidates/{cid}/moves, --concurrency
   (default settings.enrol_concurrency, 25) requests in flight. "accepted/s" is N over the
   time to the last 201; "note done/s" is N over the time from the first POST until the
   store holds N notes written by a move action (each move's StageActionsWorkflow has run
   its plan and its note activities); "asleep/s" until visibility counts N of them with
   StageState="waiting", asleep until the e-mail's moment. The e-mails stay pending: the
   run checks that none was sent (sink, messages rows) and that N are pending.
2. bare: N `bench.bare.BareDispatchWorkflow`s, --bare-concurrency (default --concurrency)
   starts in flight, against the bare worker (worker.py's runner and concurrency
   settings). Their due moment is in the past, so no timer: the first task upserts the
   state and schedules the one activity at once, which sends a fixed small message over
   SMTP to the sink; then a last task closes it. That is the closest bare analogue of a
   move's "started, and did its first immediate step" (ours: a plan then a note activity,
   then a timer): "activity done/s" counts their e-mails in the sink, "completed/s"
   visibility's ExecutionStatus="Completed" (ours' analogue: asleep).

With --bulk (--n then defaults to 10,000, at most 10,000), ours is instead one bulk move
of the N candidates into Screening, actions run: POST /jobs/{id}/bulk-moves answers 202
("to the 202"), then GET /bulk-moves/{id} every --bulk-poll seconds (its body holds one
result per candidate done: large at 10,000) until its finished_at is set. "moved/s" is N
over the time from the POST to finished_at (the server's clock, on this machine); "note
done/s" and "asleep/s" as above. It reports the moved and refused counts (expect N and 0,
the first refusals' details when not), the BulkMoveWorkflow's status and the progress of
the results at each poll. The bare side is the same; the ratios pair moved/s with bare's
starts/s, note done/s with activity done/s, asleep/s with completed/s. Its results go to
bench/results/moves-bulk-<timestamp>-n<N>.json.

For each side it reports the CPU seconds (/proc/<pid>/stat utime + stime) the Temporal
server, the worker (and its template processes) and, for ours, the API spent from the
first request until every workflow was asleep (ours) or completed (bare).

It prints a table, a JSON line last on stdout, and writes the JSON to
bench/results/moves-<timestamp>-n<N>.json. Everything it started is stopped at the end, on
error and on Ctrl-C; the exit code is 0 when both sides got through N (and ours sent no
e-mail and left N pending), 1 when not, 130 when interrupted.
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script (`python bench/moves.py`), the repository's root is not on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.schemas import MAX_BULK_MOVE
from bench.bare import DISPATCH_WORKFLOW_NAME, BareDispatchInput
from bench.dispatch import create_database, is_bare, ratio, read_mail, sink_names
from bench.enrol import rate
from bench.stack import (
    Failed,
    Running,
    Stack,
    count,
    cpu_seconds,
    descendants,
    log,
    versions,
    worker_log_problems,
)
from bench.stack import run as run_bench
from bench.stack import start as start_stack
from config import Settings
from store.session import sync_url
from workflows.nurture import STATE
from workflows.stage_actions import JOB_ID as STAGE_JOB_ID
from workflows.stage_actions import STATE as STAGE_STATE

STAGE = "Screening"
DELAY_DAYS = 3
NOTE = "Moved to Screening by the moves bench"

# -- the processes we watch -------------------------------------------------------------

WATCHED = {"server": "temporal", "worker": "worker", "api": "api", "bare worker": "bare-worker"}


def cpu_now(stack: Stack) -> dict[str, float]:
    """CPU seconds of each watched child so far, and of the workers' own children."""
    out: dict[str, float] = {}
    for label, name in WATCHED.items():
        pid = stack.child(name).process.pid
        out[label] = cpu_seconds(pid) or 0.0
        if name.endswith("worker"):
            out[f"{label} children"] = sum((cpu_seconds(c) or 0.0 for c in descendants(pid)), 0.0)
    return out


def cpu_since(stack: Stack, before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 2) for k, v in cpu_now(stack).items()}


# -- measuring ----------------------------------------------------------------------------


async def in_flight(
    concurrency: int, items: Iterable[Any], call: Callable[[Any], Awaitable[None]]
) -> None:
    """`call` on each item, `concurrency` at a time: a fixed number of runners, each taking
    the next item (bounded memory at any N)."""
    following = iter(items)

    async def runner() -> None:
        for item in following:
            await call(item)

    await asyncio.gather(*(runner() for _ in range(concurrency)))


def spread(durations: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Median, p95 and max, in seconds."""
    if not durations:
        return None, None, None
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return round(statistics.median(ordered), 4), round(p95, 4), round(ordered[-1], 4)


@dataclass
class Watched:
    """When each probe first counted N, in seconds from t0, and what it counted last."""

    reached_s: dict[str, float | None] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # from t0 until all reached N


async def watch(
    label: str,
    probes: Mapping[str, Callable[[], Awaitable[int]]],
    n: int,
    t0: float,
    cpu0: dict[str, float],
    args: argparse.Namespace,
    stack: Stack,
) -> Watched:
    """Poll every probe until each has counted N (or time is up)."""
    watched = Watched(reached_s=dict.fromkeys(probes), last=dict.fromkeys(probes, 0))
    shown = time.monotonic()
    deadline = t0 + args.timeout
    while True:
        stack.check()
        for name, probe in probes.items():
            if watched.reached_s[name] is None:
                watched.last[name] = await probe()
                if watched.last[name] >= n:
                    watched.reached_s[name] = round(time.monotonic() - t0, 2)
                    log(f"{label}: {n} {name} {watched.reached_s[name]:.1f} s after the first")
        now = time.monotonic()
        if all(s is not None for s in watched.reached_s.values()):
            watched.cpu = cpu_since(stack, cpu0)
            return watched
        if now > deadline:
            log(f"{label}: gave up after {now - t0:.0f} s at {watched.last}")
            watched.cpu = cpu_since(stack, cpu0)
            return watched
        if now - shown >= 10:
            shown = now
            log(f"{label}: {now - t0:6.1f} s, {watched.last}")
        await asyncio.sleep(args.poll)


# -- setup through the API --------------------------------------------------------------


async def create_job(http: httpx.AsyncClient, sender_user_id: int) -> tuple[int, int]:
    """A job whose second stage runs a note at once and an e-mail 3 days later; answers
    the job's id and that stage's."""
    created = await http.post("/jobs", json={"title": "Moves bench"})
    if created.status_code != 201:
        raise Failed(f"POST /jobs answered {created.status_code}: {created.text[:500]}")
    job_id: int = created.json()["id"]
    found = await http.get(f"/jobs/{job_id}")
    if found.status_code != 200:
        raise Failed(f"GET /jobs/{job_id} answered {found.status_code}: {found.text[:500]}")
    stages: list[dict[str, Any]] = [
        {"id": s["id"], "name": s["name"], "actions": s["actions"]} for s in found.json()["stages"]
    ]
    if len(stages) < 2 or stages[1]["name"] != STAGE:
        raise Failed(f"the job's second stage is not {STAGE}: {[s['name'] for s in stages]}")
    stages[1]["actions"] = [
        {"kind": "note", "note": {"text": NOTE}},
        {
            "kind": "email",
            "delay_days": DELAY_DAYS,
            "email": {
                "subject": "Hello {{ first_name }}",
                "body": "Hello {{ first_name }},\n\nThanks for your application.\n\n"
                "{{ sender_name }}, {{ company_name }}",
                "sender_user_id": sender_user_id,
            },
        },
    ]
    put = await http.put(f"/jobs/{job_id}/pipeline", json={"stages": stages})
    if put.status_code != 200:
        raise Failed(f"PUT /jobs/{job_id}/pipeline answered {put.status_code}: {put.text[:500]}")
    saved = put.json()["stages"]
    if [s["id"] for s in saved[:2]] != [s["id"] for s in stages[:2]]:
        raise Failed(f"the pipeline's first two stages changed ids: {saved}")
    if [a["kind"] for a in saved[1]["actions"]] != ["note", "email"]:
        raise Failed(f"{STAGE} does not carry the note and the e-mail: {saved[1]}")
    stage_id: int = saved[1]["id"]
    return job_id, stage_id


async def apply_all(
    http: httpx.AsyncClient, job_id: int, ids: Sequence[int], args: argparse.Namespace
) -> float:
    """Each candidate's application, imported: no actions. Answers the seconds taken."""

    async def apply(candidate_id: int) -> None:
        response = await http.post(
            f"/jobs/{job_id}/applications", json={"candidate_id": candidate_id, "source": "import"}
        )
        if response.status_code != 201:
            raise Failed(f"an application answered {response.status_code}: {response.text[:500]}")
        if response.json()["workflow_id"] is not None:
            raise Failed(f"an imported application started actions: {response.text[:500]}")

    t0 = time.monotonic()
    await in_flight(args.concurrency, ids, apply)
    return round(time.monotonic() - t0, 2)


# -- the store ----------------------------------------------------------------------------


class Store:
    """Reads of the store, off the loop, on one engine for the run."""

    def __init__(self, database_url: str) -> None:
        self.engine = sqlalchemy.create_engine(sync_url(database_url))

    def _scalar(self, query: str, params: dict[str, Any]) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text(query), params).scalar_one())

    async def notes(self, job_id: int) -> int:
        """Notes an action wrote (an automatic note names its action)."""
        query = "SELECT count(*) FROM notes WHERE job_id = :job AND move_action_id IS NOT NULL"
        return await asyncio.to_thread(self._scalar, query, {"job": job_id})

    async def stage_messages(self) -> int:
        query = "SELECT count(*) FROM messages WHERE source_kind = 'stage_action'"
        return await asyncio.to_thread(self._scalar, query, {})

    def _actions(self, job_id: int) -> dict[str, dict[str, int]]:
        query = (
            "SELECT a.kind, a.state, count(*) FROM move_actions a JOIN moves m "
            "ON m.id = a.move_id WHERE m.job_id = :job GROUP BY a.kind, a.state"
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as connection:
            for kind, state, k in connection.execute(sqlalchemy.text(query), {"job": job_id}):
                out.setdefault(str(kind), {})[str(state)] = int(k)
        return out

    async def actions(self, job_id: int) -> dict[str, dict[str, int]]:
        """The job's move actions: per kind, per state, how many."""
        return await asyncio.to_thread(self._actions, job_id)

    def close(self) -> None:
        self.engine.dispose()


# -- ours ---------------------------------------------------------------------------------


@dataclass
class Ours:
    job_id: int = 0
    stage_id: int = 0
    applications_s: float | None = None  # setup, not measured
    moves: int = 0
    accepted_s: float | None = None
    note_done_s: float | None = None  # the store: N notes written by their actions
    asleep_s: float | None = None  # visibility: N StageActionsWorkflows "waiting"
    request_s_median: float | None = None
    request_s_p95: float | None = None
    request_s_max: float | None = None
    accepted_per_s: float | None = None
    note_done_per_s: float | None = None
    asleep_per_s: float | None = None
    notes: int = 0
    asleep: int = 0
    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    e_mails_pending: int = 0
    e_mails_sent: int = 0  # in the sink
    message_rows: int = 0  # the store's stage-action messages
    cpu_accepted: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # until N asleep


async def run_ours(
    running: Running,
    http: httpx.AsyncClient,
    store: Store,
    ours: Ours,
    args: argparse.Namespace,
) -> Ours:
    stack, client, ids = running.stack, running.client, running.ids
    n = len(ids)
    asleep_query = (
        f'WorkflowType="StageActionsWorkflow" AND {STAGE_JOB_ID.name}="{ours.job_id}" '
        f'AND {STAGE_STATE.name}="waiting"'
    )

    async def notes() -> int:
        return await store.notes(ours.job_id)

    async def asleep() -> int:
        return await count(client, asleep_query)

    durations: list[float] = []

    async def move(candidate_id: int) -> None:
        sent = time.monotonic()
        response = await http.post(
            f"/jobs/{ours.job_id}/candidates/{candidate_id}/moves",
            json={"stage_id": ours.stage_id},
        )
        durations.append(time.monotonic() - sent)
        if response.status_code != 201:
            raise Failed(f"a move answered {response.status_code}: {response.text[:500]}")
        kinds = [(a["kind"], a["state"]) for a in response.json()["actions"]]
        if kinds != [("note", "pending"), ("email", "pending")]:
            raise Failed(f"a move's actions are not a note and an e-mail: {kinds}")
        ours.moves += 1

    before = sink_names(running.mail_dir)
    log(f"ours: {n} moves into {STAGE}, {args.concurrency} in flight")
    cpu0 = cpu_now(stack)
    t0 = time.monotonic()
    probes = {"notes done": notes, "asleep": asleep}
    watcher = asyncio.create_task(watch("ours", probes, n, t0, cpu0, args, stack))
    try:
        await in_flight(args.concurrency, ids, move)
        ours.accepted_s = round(time.monotonic() - t0, 2)
        ours.cpu_accepted = cpu_since(stack, cpu0)
        log(f"ours: {ours.moves} moves accepted in {ours.accepted_s:.2f} s")
        watched = await watcher
    finally:
        watcher.cancel()
    ours.note_done_s = watched.reached_s["notes done"]
    ours.asleep_s = watched.reached_s["asleep"]
    ours.notes, ours.asleep = watched.last["notes done"], watched.last["asleep"]
    ours.cpu = watched.cpu
    ours.request_s_median, ours.request_s_p95, ours.request_s_max = spread(durations)
    ours.accepted_per_s = rate(n, ours.accepted_s)
    ours.note_done_per_s = rate(n, ours.note_done_s)
    ours.asleep_per_s = rate(n, ours.asleep_s)
    ours.actions = await store.actions(ours.job_id)
    ours.e_mails_pending = ours.actions.get("email", {}).get("pending", 0)
    ours.message_rows = await store.stage_messages()
    new = sink_names(running.mail_dir) - before
    ours.e_mails_sent = sum(1 for name in new if not is_bare(read_mail(running.mail_dir, name)))
    log(
        f"ours: actions {ours.actions}; {ours.e_mails_sent} e-mails in the sink, "
        f"{ours.message_rows} message rows"
    )
    return ours


# -- ours, in bulk ------------------------------------------------------------------------


@dataclass
class BulkOurs:
    job_id: int = 0
    stage_id: int = 0
    applications_s: float | None = None  # setup, not measured
    bulk_id: int = 0
    workflow_id: str = ""
    total: int = 0
    accepted_s: float | None = None  # to the 202
    finished_s: float | None = None  # from the POST to finished_at (the server's clock)
    finished_seen_s: float | None = None  # when a poll first saw finished_at
    server_s: float | None = None  # created_at to finished_at, both the server's
    note_done_s: float | None = None  # the store: N notes written by their actions
    asleep_s: float | None = None  # visibility: N StageActionsWorkflows "waiting"
    moved_per_s: float | None = None
    note_done_per_s: float | None = None
    asleep_per_s: float | None = None
    moved: int = 0
    refused: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)  # the first few
    workflow_status: str | None = None  # the BulkMoveWorkflow's, at the end
    polls: int = 0
    poll_s_max: float | None = None
    poll_bytes_max: int = 0
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s, results) per poll
    notes: int = 0
    asleep: int = 0
    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    e_mails_pending: int = 0
    e_mails_sent: int = 0  # in the sink
    message_rows: int = 0  # the store's stage-action messages
    cpu_accepted: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # until finished, N notes, N asleep


def server_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_bulk(
    running: Running,
    http: httpx.AsyncClient,
    store: Store,
    ours: BulkOurs,
    args: argparse.Namespace,
) -> BulkOurs:
    stack, client, ids = running.stack, running.client, running.ids
    n = len(ids)
    asleep_query = (
        f'WorkflowType="StageActionsWorkflow" AND {STAGE_JOB_ID.name}="{ours.job_id}" '
        f'AND {STAGE_STATE.name}="waiting"'
    )

    async def notes() -> int:
        return await store.notes(ours.job_id)

    async def asleep() -> int:
        return await count(client, asleep_query)

    polled_at, done = 0.0, 0

    async def finished() -> int:
        """Results so far, from GET /bulk-moves/{id} at most every --bulk-poll seconds;
        N once finished_at is set (whatever the results: `moved` and `refused` tell)."""
        nonlocal polled_at, done
        if time.monotonic() - polled_at < args.bulk_poll:
            return done
        sent = time.monotonic()
        response = await http.get(f"/bulk-moves/{ours.bulk_id}")
        took = time.monotonic() - sent
        polled_at = time.monotonic()
        if response.status_code != 200:
            raise Failed(f"GET /bulk-moves answered {response.status_code}: {response.text[:500]}")
        ours.polls += 1
        ours.poll_s_max = round(max(ours.poll_s_max or 0.0, took), 3)
        ours.poll_bytes_max = max(ours.poll_bytes_max, len(response.content))
        body = response.json()
        ours.moved, ours.refused = body["moved"], body["refused"]
        done = len(body["results"])
        ours.progress.append((round(polled_at - t0, 1), done))
        if body["finished_at"] is None:
            return done
        at = server_time(body["finished_at"])
        ours.finished_s = round((at - t0_wall).total_seconds(), 2)
        ours.server_s = round((at - server_time(body["created_at"])).total_seconds(), 2)
        ours.refusals = [r for r in body["results"] if r["result"] != "moved"][:5]
        done = n
        return n

    before = sink_names(running.mail_dir)
    log(f"ours: one bulk move of {n} candidates into {STAGE}, polled every {args.bulk_poll} s")
    cpu0 = cpu_now(stack)
    t0_wall = datetime.now(UTC)
    t0 = time.monotonic()
    response = await http.post(
        f"/jobs/{ours.job_id}/bulk-moves",
        json={"candidate_ids": list(ids), "stage_id": ours.stage_id, "run_actions": True},
    )
    ours.accepted_s = round(time.monotonic() - t0, 2)
    ours.cpu_accepted = cpu_since(stack, cpu0)
    if response.status_code != 202:
        raise Failed(f"POST bulk-moves answered {response.status_code}: {response.text[:500]}")
    created = response.json()
    ours.bulk_id, ours.workflow_id, ours.total = (
        created["id"],
        created["workflow_id"],
        created["total"],
    )
    if ours.total != n:
        raise Failed(f"the bulk move's total is {ours.total}, not {n}")
    log(f"ours: bulk move {ours.bulk_id} ({ours.workflow_id}) accepted in {ours.accepted_s} s")
    probes = {"finished": finished, "notes done": notes, "asleep": asleep}
    watched = await watch("ours", probes, n, t0, cpu0, args, stack)
    ours.finished_seen_s = watched.reached_s["finished"]
    ours.note_done_s = watched.reached_s["notes done"]
    ours.asleep_s = watched.reached_s["asleep"]
    ours.notes, ours.asleep = watched.last["notes done"], watched.last["asleep"]
    ours.cpu = watched.cpu
    ours.moved_per_s = rate(ours.moved, ours.finished_s)
    ours.note_done_per_s = rate(n, ours.note_done_s)
    ours.asleep_per_s = rate(n, ours.asleep_s)
    description = await client.get_workflow_handle(ours.workflow_id).describe()
    ours.workflow_status = description.status.name if description.status else None
    ours.actions = await store.actions(ours.job_id)
    ours.e_mails_pending = ours.actions.get("email", {}).get("pending", 0)
    ours.message_rows = await store.stage_messages()
    new = sink_names(running.mail_dir) - before
    ours.e_mails_sent = sum(1 for name in new if not is_bare(read_mail(running.mail_dir, name)))
    log(
        f"ours: {ours.moved} moved, {ours.refused} refused, workflow {ours.workflow_status}; "
        f"actions {ours.actions}; {ours.e_mails_sent} e-mails in the sink, "
        f"{ours.message_rows} message rows"
    )
    return ours


# -- bare ---------------------------------------------------------------------------------


@dataclass
class Bare:
    run: str = ""
    starts_s: float | None = None
    activity_done_s: float | None = None  # the sink: N of their e-mails in
    completed_s: float | None = None  # visibility: N closed
    request_s_median: float | None = None
    request_s_p95: float | None = None
    request_s_max: float | None = None
    starts_per_s: float | None = None
    activity_done_per_s: float | None = None
    completed_per_s: float | None = None
    e_mails: int = 0
    completed: int = 0
    cpu_started: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # until N completed


async def run_bare(running: Running, args: argparse.Namespace) -> Bare:
    stack, client, n = running.stack, running.client, args.n
    bare = Bare(run=uuid.uuid4().hex[:8])
    before = sink_names(running.mail_dir)
    completed_query = f'WorkflowType="{DISPATCH_WORKFLOW_NAME}" AND ExecutionStatus="Completed"'

    async def e_mails() -> int:
        return len(sink_names(running.mail_dir) - before)

    async def completed() -> int:
        return await count(client, completed_query)

    durations: list[float] = []

    async def start(i: int) -> None:
        sent = time.monotonic()
        # Due at the epoch: no timer, the one activity at once (see the module's doc).
        await client.start_workflow(
            DISPATCH_WORKFLOW_NAME,
            BareDispatchInput(run=bare.run, index=i, due=0.0),
            id=f"bare-moves/{bare.run}/{i}",
            task_queue=running.bare_queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(STATE, "starting")]),
            task_timeout=timedelta(seconds=10),
        )
        durations.append(time.monotonic() - sent)

    log(f"bare: starting {n} workflows, {args.bare_concurrency} in flight")
    cpu0 = cpu_now(stack)
    t0 = time.monotonic()
    probes = {"activities done": e_mails, "completed": completed}
    watcher = asyncio.create_task(watch("bare", probes, n, t0, cpu0, args, stack))
    try:
        await in_flight(args.bare_concurrency, range(n), start)
        bare.starts_s = round(time.monotonic() - t0, 2)
        bare.cpu_started = cpu_since(stack, cpu0)
        log(f"bare: {n} started in {bare.starts_s:.2f} s")
        watched = await watcher
    finally:
        watcher.cancel()
    bare.activity_done_s = watched.reached_s["activities done"]
    bare.completed_s = watched.reached_s["completed"]
    bare.e_mails, bare.completed = watched.last["activities done"], watched.last["completed"]
    bare.cpu = watched.cpu
    bare.request_s_median, bare.request_s_p95, bare.request_s_max = spread(durations)
    bare.starts_per_s = rate(n, bare.starts_s)
    bare.activity_done_per_s = rate(n, bare.activity_done_s)
    bare.completed_per_s = rate(n, bare.completed_s)
    return bare


# -- the run ------------------------------------------------------------------------------


def cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def layout(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
    """The first column left, the others right, each as wide as its widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def actions_line(actions: Mapping[str, Mapping[str, int]]) -> str:
    shown = "; ".join(
        f"{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        for kind, states in sorted(actions.items())
    )
    return f"ours, the move actions: {shown or '—'}"


def e_mails_line(pending: int, sent: int, rows: int) -> str:
    return (
        f"ours, e-mails {DELAY_DAYS} days later: {pending} pending, {sent} "
        f"in the sink, {rows} message rows (none sent: "
        f"{'yes' if not sent and not rows else 'NO'})"
    )


def table(results: dict[str, Any]) -> str:
    if results.get("mode") == "bulk":
        return bulk_table(results)
    o, b = Ours(**results["ours"]), Bare(**results["bare"])
    rows: list[tuple[str, str, str, str]] = [
        ("N", f"{results['n']:,}", f"store: {results['store']}", ""),
        ("", "ours", "bare", "ours/bare"),
        ("in flight", str(results["concurrency"]), str(results["bare_concurrency"]), ""),
        ("accepted/s (moves) vs starts/s (bare)", cell(o.accepted_per_s), cell(b.starts_per_s),
         cell(ratio(o.accepted_per_s, b.starts_per_s), 2)),
        ("first step done/s (note vs activity)", cell(o.note_done_per_s),
         cell(b.activity_done_per_s), cell(ratio(o.note_done_per_s, b.activity_done_per_s), 2)),
        ("asleep/s (ours) vs completed/s (bare)", cell(o.asleep_per_s), cell(b.completed_per_s),
         cell(ratio(o.asleep_per_s, b.completed_per_s), 2)),
        ("seconds to the last answer", cell(o.accepted_s, 2), cell(b.starts_s, 2), ""),
        ("seconds to the last first step", cell(o.note_done_s), cell(b.activity_done_s), ""),
        ("seconds to all asleep / completed", cell(o.asleep_s), cell(b.completed_s), ""),
        ("request ms median (move vs start)", cell(ms(o.request_s_median)),
         cell(ms(b.request_s_median)), ""),
        ("request ms p95", cell(ms(o.request_s_p95)), cell(ms(b.request_s_p95)), ""),
        ("request ms max", cell(ms(o.request_s_max)), cell(ms(b.request_s_max)), ""),
        *cpu_rows(o.cpu, b.cpu),
    ]  # fmt: skip
    lines = layout(rows)
    lines.append(actions_line(o.actions))
    lines.append(e_mails_line(o.e_mails_pending, o.e_mails_sent, o.message_rows))
    lines.append(f"setup, {results['n']:,} imported applications: {cell(o.applications_s)} s")
    return "\n".join(lines)


def cpu_rows(oc: Mapping[str, float], bc: Mapping[str, float]) -> list[tuple[str, str, str, str]]:
    return [
        ("server CPU s (to all asleep / completed)", cell(oc.get("server")), cell(bc.get("server")),
         cell(ratio(oc.get("server"), bc.get("server")), 2)),
        ("worker CPU s", cell(oc.get("worker")), cell(bc.get("bare worker")),
         cell(ratio(oc.get("worker"), bc.get("bare worker")), 2)),
        ("worker's children CPU s", cell(oc.get("worker children")),
         cell(bc.get("bare worker children")), ""),
        ("API CPU s", cell(oc.get("api")), "", ""),
    ]  # fmt: skip


def bulk_table(results: dict[str, Any]) -> str:
    o, b = BulkOurs(**results["ours"]), Bare(**results["bare"])
    rows: list[tuple[str, str, str, str]] = [
        ("N", f"{results['n']:,}", f"store: {results['store']}", ""),
        ("", "ours (bulk)", "bare", "ours/bare"),
        ("requests in flight", "1", str(results["bare_concurrency"]), ""),
        ("moved/s (to finished_at) vs starts/s", cell(o.moved_per_s), cell(b.starts_per_s),
         cell(ratio(o.moved_per_s, b.starts_per_s), 2)),
        ("first step done/s (note vs activity)", cell(o.note_done_per_s),
         cell(b.activity_done_per_s), cell(ratio(o.note_done_per_s, b.activity_done_per_s), 2)),
        ("asleep/s (ours) vs completed/s (bare)", cell(o.asleep_per_s), cell(b.completed_per_s),
         cell(ratio(o.asleep_per_s, b.completed_per_s), 2)),
        ("seconds to the 202 vs the last start", cell(o.accepted_s, 2), cell(b.starts_s, 2), ""),
        ("seconds to finished_at (seen by a poll)",
         f"{cell(o.finished_s)} ({cell(o.finished_seen_s)})", "", ""),
        ("seconds to the last first step", cell(o.note_done_s), cell(b.activity_done_s), ""),
        ("seconds to all asleep / completed", cell(o.asleep_s), cell(b.completed_s), ""),
        *cpu_rows(o.cpu, b.cpu),
    ]  # fmt: skip
    lines = layout(rows)
    lines.append(
        f"ours, bulk move {o.bulk_id}: {o.moved:,} moved, {o.refused:,} refused of {o.total:,}; "
        f"{o.workflow_id} {o.workflow_status or '—'}; {o.polls} polls, the slowest "
        f"{cell(ms(o.poll_s_max), 0)} ms, the largest {o.poll_bytes_max / 1e6:.1f} MB"
    )
    for refusal in o.refusals:
        lines.append(f"  refused: {refusal}")
    lines.append(actions_line(o.actions))
    lines.append(e_mails_line(o.e_mails_pending, o.e_mails_sent, o.message_rows))
    lines.append(f"setup, {results['n']:,} imported applications: {cell(o.applications_s)} s")
    return "\n".join(lines)


async def bench(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    settings = Settings()  # the worker tuning the children inherit from our environment
    load = os.getloadavg()
    database_url = create_database(stack) if args.store == "postgres" else None
    running = await start_stack(
        stack,
        n=args.n,
        source="bench/moves.py",
        database_url=database_url,
        temporal_port=args.temporal_port,
        ui_port=args.ui_port,
        enrol_concurrency=args.concurrency,
    )
    store = Store(running.database_url)
    stack.on_stop.append(store.close)
    ours = Ours()
    bulk = BulkOurs()
    bare: Bare | None = None
    async with running.http(args.request_timeout) as http:
        ours.job_id, ours.stage_id = await create_job(http, running.admin_user_id)
        log(f"job {ours.job_id}: {STAGE} (stage {ours.stage_id}) has a note and an e-mail")
        ours.applications_s = await apply_all(http, ours.job_id, running.ids, args)
        log(f"{args.n} imported applications in {ours.applications_s:.1f} s; stack ready")
        bulk.job_id, bulk.stage_id = ours.job_id, ours.stage_id
        bulk.applications_s = ours.applications_s
        for side in ("bare", "ours") if args.bare_first else ("ours", "bare"):
            if args.pause:
                await asyncio.sleep(args.pause)
            if side == "ours" and args.bulk:
                bulk = await run_bulk(running, http, store, bulk, args)
            elif side == "ours":
                ours = await run_ours(running, http, store, ours, args)
            else:
                bare = await run_bare(running, args)
            stack.check()
    assert bare is not None
    problems = worker_log_problems(stack)
    api_problems = worker_log_problems(stack, "api")
    if args.bulk:
        mine = bulk_results(args, bulk, bare)
    else:
        none_sent = ours.e_mails_sent == 0 and ours.message_rows == 0
        mine = {
            "mode": "single",
            "ok": ours.asleep_s is not None
            and ours.note_done_s is not None
            and bare.completed_s is not None
            and none_sent
            and ours.e_mails_pending == args.n,
            "none_sent": none_sent,
            "ours": asdict(ours),
            "bare": asdict(bare),
            "ratios": {
                "accepted_ours_over_bare_starts": ratio(ours.accepted_per_s, bare.starts_per_s),
                "note_done_ours_over_bare_activity_done": ratio(
                    ours.note_done_per_s, bare.activity_done_per_s
                ),
                "asleep_ours_over_bare_completed": ratio(ours.asleep_per_s, bare.completed_per_s),
                "server_cpu_ours_over_bare": ratio(ours.cpu.get("server"), bare.cpu.get("server")),
                "worker_cpu_ours_over_bare": ratio(
                    ours.cpu.get("worker"), bare.cpu.get("bare worker")
                ),
            },
        }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "store": args.store,
        "concurrency": args.concurrency,
        "bare_concurrency": args.bare_concurrency,
        "order": "bare-first" if args.bare_first else "ours-first",
        **mine,
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


def bulk_results(args: argparse.Namespace, ours: BulkOurs, bare: Bare) -> dict[str, Any]:
    none_sent = ours.e_mails_sent == 0 and ours.message_rows == 0
    return {
        "mode": "bulk",
        "ok": ours.finished_s is not None
        and ours.moved == args.n
        and ours.refused == 0
        and ours.note_done_s is not None
        and ours.asleep_s is not None
        and bare.completed_s is not None
        and none_sent
        and ours.e_mails_pending == args.n,
        "none_sent": none_sent,
        "ours": asdict(ours),
        "bare": asdict(bare),
        "ratios": {
            "moved_ours_over_bare_starts": ratio(ours.moved_per_s, bare.starts_per_s),
            "note_done_ours_over_bare_activity_done": ratio(
                ours.note_done_per_s, bare.activity_done_per_s
            ),
            "asleep_ours_over_bare_completed": ratio(ours.asleep_per_s, bare.completed_per_s),
            "server_cpu_ours_over_bare": ratio(ours.cpu.get("server"), bare.cpu.get("server")),
            "worker_cpu_ours_over_bare": ratio(ours.cpu.get("worker"), bare.cpu.get("bare worker")),
        },
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description="Stage moves through the API beside bare workflow starts, on one isolated "
        "stack."
    )
    parser.add_argument(
        "--n", type=int, default=None,
        help="moves / bare workflows (default: 2000, with --bulk 10,000)",
    )  # fmt: skip
    parser.add_argument(
        "--bulk", action="store_true",
        help="ours is one bulk move of the N (POST /jobs/{id}/bulk-moves) instead of N moves",
    )  # fmt: skip
    parser.add_argument(
        "--bulk-poll", type=float, default=3.0,
        help="with --bulk, seconds between polls of GET /bulk-moves/{id} (its body is large)",
    )  # fmt: skip
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.enrol_concurrency,
        help="moves (and setup applications) in flight through the API, and "
        f"NURTURE_ENROL_CONCURRENCY (default: settings, {defaults.enrol_concurrency})",
    )  # fmt: skip
    parser.add_argument(
        "--bare-concurrency", type=int, default=None,
        help="the bare client's starts in flight (default: --concurrency)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="seconds per side to wait for N (default: max(300, N/5))",
    )  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.5, help="store / visibility poll, s")
    parser.add_argument("--pause", type=float, default=5.0, help="quiet seconds before a side")
    parser.add_argument("--bare-first", action="store_true", help="run the bare side first")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="per request, s")
    parser.add_argument("--temporal-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ui-port", type=int, default=0, help="serve the Web UI (default: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = MAX_BULK_MOVE if args.bulk else 2000
    if args.bulk and args.n > MAX_BULK_MOVE:
        parser.error(f"--bulk moves at most {MAX_BULK_MOVE:,} candidates")
    if args.bulk_poll <= 0:
        parser.error("--bulk-poll must be positive")
    if args.bare_concurrency is None:
        args.bare_concurrency = args.concurrency
    if min(args.n, args.concurrency, args.bare_concurrency) < 1:
        parser.error("--n and the concurrencies must be at least 1")
    if args.timeout is None:
        args.timeout = max(300.0, args.n / 5)
    return args


def main() -> None:
    args = parse()
    run_bench("moves-bulk" if args.bulk else "moves", args, bench, table)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
