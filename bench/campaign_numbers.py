"""Campaign numbers at 100,000 recipients on PostgreSQL: query times and their plans.

    .venv/bin/python bench/campaign_numbers.py [--recipients 100000] [--runs 30] [--keep]

It creates a database of its own, bench_numbers_<random>, on 127.0.0.1:5432 (user
postgres; --server to change), migrates it, and writes a history in bulk with SQL (setup,
not measured; no workflow): company A with a campaign of N recipients (three touchpoints;
every recipient got the first, 60% the second, 15% the third; 1% unconfirmed, 1% failed;
35% opened by a person, 40% fetched by Apple's proxy; meetings, offers and hires, half of
them before the candidate's entry), a second campaign of N/2 sharing half its candidates,
ten drafts and test sends; company B, another tenant, with a campaign of N recipients
too. Then VACUUM ANALYZE, as autovacuum would leave it.

It measures, `--runs` times each, what the routes run, through store/numbers.py on the
service's own async engine (psycopg 3):
- one campaign: GET /campaigns/{id}/numbers (the campaign, its touchpoints, its numbers);
- the list: GET /campaigns (the company's campaigns, their touchpoints and numbers);
- all together: GET /numbers.
It prints median and p95 of each, then EXPLAIN (ANALYZE, BUFFERS) of every query they
ran, and the scans each plan uses (a sequential scan of a large table is flagged). A JSON
line goes last on stdout and to bench/results/numbers-<timestamp>-n<N>.json. The database
is dropped at the end (unless --keep), on error too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script (`python bench/campaign_numbers.py`), the repository's root is not on
# the path (and a script named numbers.py would hide the standard library's `numbers`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import sql
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from store import campaigns as campaign_store
from store import numbers
from store.companies import create_company, create_user
from store.migrate import upgrade
from store.models import Campaign, CampaignStatus, Company, Format, Role, Touchpoint
from store.session import async_url, create_engine, create_session_factory

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
RESULTS = Path(__file__).resolve().parent / "results"
# Tables a numbers query must never read whole.
LARGE = ("enrolments", "messages", "message_opens", "received_events", "candidates")
T0 = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)


def log(text: str) -> None:
    print(f"[numbers] {text}", file=sys.stderr, flush=True)


# -- the history --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    company_id: int
    campaigns: list[int]


async def _tenant(engine: AsyncEngine, name: str, campaigns: int) -> Tenant:
    """A company, its admin, and `campaigns` saved campaigns of three touchpoints."""
    async with create_session_factory(engine)() as session, session.begin():
        company = await create_company(session, name=name, time_zone="Europe/Paris")
        company.open_tracking = True
        admin = await create_user(
            session, company.id, role=Role.ADMIN, name="Ada", email=f"ada@{name.lower()}.example"
        )
        made = []
        for n in range(campaigns):
            campaign = Campaign(
                company_id=company.id, name=f"{name} {n}", status=CampaignStatus.ACTIVE,
                exit_options=["applied", "replied"], saved_at=T0,
            )  # fmt: skip
            session.add(campaign)
            await session.flush()
            for position in range(3):
                session.add(
                    Touchpoint(
                        company_id=company.id, campaign_id=campaign.id, position=position,
                        interval_days=0 if position == 0 else 7, send_hour=9, send_minute=0,
                        sender_user_id=admin.id, format=Format.BRANDED, subject="Hello",
                        body="Hello {{ first_name }}",
                    )
                )  # fmt: skip
            made.append(campaign.id)
        return Tenant(company.id, made)


_CANDIDATES = """
INSERT INTO candidates (company_id, first_name, last_name, email, custom_fields,
    consent_given_at, consent_method, consent_source, created_at, updated_at)
SELECT %(company)s, 'C' || i, 'Bench', 'c' || i || '-' || %(company)s || '@bench.example',
    '{}'::json, %(t0)s, 'bench', 'bench', %(t0)s, %(t0)s
FROM generate_series(1, %(n)s) AS i
"""

# Recipients r = 1.. of the company's candidates from `first` on: 70% active, 5% paused,
# 15% completed, 10% exited (applied, replied, unsubscribed, removed); 2% on a second run.
_ENROLMENTS = """
INSERT INTO enrolments (company_id, campaign_id, candidate_id, run, status, exit_reason,
    entered_at, left_at, next_position, next_send_at, workflow_started_at)
SELECT company_id, %(campaign)s, id, CASE WHEN r %% 50 = 0 THEN 2 ELSE 1 END,
    CASE WHEN r %% 20 < 14 THEN 'active' WHEN r %% 20 = 14 THEN 'paused'
         WHEN r %% 20 < 18 THEN 'completed' ELSE 'exited' END,
    CASE WHEN r %% 20 >= 18 THEN (ARRAY['applied', 'replied', 'unsubscribed', 'removed'])[
        1 + (r / 20) %% 4] END,
    %(t0)s + (r %% 1440) * interval '1 minute',
    CASE WHEN r %% 20 >= 15 THEN %(t0)s + interval '20 days' END,
    CASE WHEN r %% 20 < 15 THEN 1 END,
    CASE WHEN r %% 20 < 14 THEN %(t0)s + interval '8 days' END,
    %(t0)s
FROM (SELECT id, company_id, row_number() OVER (ORDER BY id) AS r
      FROM candidates WHERE company_id = %(company)s) AS c
WHERE r > %(first)s AND r <= %(first)s + %(n)s
"""

# Every recipient got touchpoint 1, 60% the 2nd, 15% the 3rd; 1% unconfirmed, 1% failed.
_MESSAGES = """
INSERT INTO messages (company_id, idempotency_key, message_id, source_kind, source_id,
    campaign_id, position, candidate_id, enrolment_id, state, attempts, scheduled_at,
    created_at, sent_at)
SELECT e.company_id, 'bench/' || e.campaign_id || '/' || e.candidate_id || '/' || p,
    '<' || e.id || '.' || p || '@bench.example>', 'touchpoint', e.campaign_id, e.campaign_id,
    p, e.candidate_id, e.id,
    CASE WHEN e.id %% 100 = 7 THEN 'unconfirmed' WHEN e.id %% 100 = 13 THEN 'failed'
         ELSE 'sent' END,
    1, e.entered_at + p * interval '7 days', e.entered_at + p * interval '7 days',
    CASE WHEN e.id %% 100 NOT IN (7, 13) THEN e.entered_at + p * interval '7 days' END
FROM enrolments AS e CROSS JOIN generate_series(0, 2) AS p
WHERE e.campaign_id = %(campaign)s
  AND (p = 0 OR (p = 1 AND e.id %% 10 < 6) OR (p = 2 AND e.id %% 20 < 3))
"""

_TESTS = """
INSERT INTO messages (company_id, idempotency_key, message_id, source_kind, source_id,
    campaign_id, position, test_address, state, attempts, created_at, sent_at)
SELECT c.company_id, 'test/' || c.id || '/' || i, '<test.' || c.id || '.' || i || '@b>',
    'test', c.id, c.id, i %% 3, 'qa@bench.example', 'sent', 1, %(t0)s, %(t0)s
FROM campaigns AS c CROSS JOIN generate_series(1, 30) AS i WHERE c.id = %(campaign)s
"""

# 35% of sent e-mails opened by a person (10% twice), 40% fetched by Apple's proxy.
_OPENS = """
INSERT INTO message_opens (company_id, message_id, campaign_id, position, opened_at, machine,
    first_of_kind, why, user_agent)
SELECT company_id, id, campaign_id, position, sent_at + interval '3 hours', false, true, NULL,
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15'
FROM messages WHERE campaign_id = %(campaign)s AND source_kind = 'touchpoint'
    AND state = 'sent' AND id %% 100 < 35
UNION ALL
SELECT company_id, id, campaign_id, position, sent_at + interval '2 days', false, false, NULL,
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)'
FROM messages WHERE campaign_id = %(campaign)s AND source_kind = 'touchpoint'
    AND state = 'sent' AND id %% 100 < 10
UNION ALL
SELECT company_id, id, campaign_id, position, sent_at + interval '1 second', true, true,
    'Apple Mail Privacy Protection''s proxy (user agent ''Mozilla/5.0'')', 'Mozilla/5.0'
FROM messages WHERE campaign_id = %(campaign)s AND source_kind = 'touchpoint'
    AND state = 'sent' AND id %% 100 BETWEEN 35 AND 74
"""

# Per 1,000 candidates: 30 meetings, 6 offers, 2 hires (half before their entry), and
# 100 applied and 150 replied events that numbers do not count.
_EVENTS = """
INSERT INTO received_events (company_id, event_id, type, candidate_id, occurred_at,
    received_at, ended)
SELECT company_id, t || '-' || id, t, id,
    %(t0)s + CASE WHEN id %% 2 = 0 THEN interval '30 days' ELSE interval '-10 days' END,
    %(t0)s + interval '30 days', '{"ended": []}'::json
FROM candidates CROSS JOIN (VALUES ('meeting_scheduled', 30), ('offer_made', 6),
    ('hired', 2), ('applied', 100), ('replied', 150)) AS kinds (t, per_mille)
WHERE company_id = %(company)s AND id %% 1000 < per_mille
"""


def _run(connection: psycopg.Connection[Any], statement: str, **values: Any) -> int:
    cursor = connection.execute(statement, {"t0": T0, **values})
    return cursor.rowcount


def write_history(url: str, a: Tenant, b: Tenant, n: int) -> dict[str, int]:
    """The bulk rows, in SQL; answers how many of each were written."""
    rows: dict[str, int] = {}

    def add(name: str, count: int) -> None:
        rows[name] = rows.get(name, 0) + count

    plain = url.replace("+psycopg", "")
    with psycopg.connect(plain) as connection:
        big, shared = a.campaigns[0], a.campaigns[1]
        add("candidates", _run(connection, _CANDIDATES, company=a.company_id, n=n + n // 4))
        add("candidates", _run(connection, _CANDIDATES, company=b.company_id, n=n))
        add("enrolments", _run(connection, _ENROLMENTS, company=a.company_id, campaign=big,
                               first=0, n=n))  # fmt: skip
        # Half its candidates are also in the big campaign.
        add("enrolments", _run(connection, _ENROLMENTS, company=a.company_id, campaign=shared,
                               first=n - n // 4, n=n // 2))  # fmt: skip
        add("enrolments", _run(connection, _ENROLMENTS, company=b.company_id,
                               campaign=b.campaigns[0], first=0, n=n))  # fmt: skip
        for campaign in (big, shared, b.campaigns[0]):
            add("messages", _run(connection, _MESSAGES, campaign=campaign))
            add("messages (tests)", _run(connection, _TESTS, campaign=campaign))
            add("message_opens", _run(connection, _OPENS, campaign=campaign))
        for company in (a.company_id, b.company_id):
            add("received_events", _run(connection, _EVENTS, company=company))
        connection.commit()
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return rows


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Captured:
    """The statements the measured code sends, with their parameters, while `on`."""

    on: bool = False
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def listen(self, engine: AsyncEngine) -> None:
        def before(
            conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
            executemany: bool,
        ) -> None:  # fmt: skip
            if self.on:
                self.statements.append((statement, parameters))

        event.listen(engine.sync_engine, "before_cursor_execute", before)


async def one_campaign(engine: AsyncEngine, a: Tenant) -> numbers.CampaignNumbers:
    """What GET /campaigns/{id}/numbers runs."""
    async with create_session_factory(engine)() as session, session.begin():
        campaign = await campaign_store.get_campaign(session, a.company_id, a.campaigns[0])
        touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
        return await numbers.campaign_numbers(
            session, a.company_id, campaign, [t.position for t in touchpoints]
        )


async def the_list(engine: AsyncEngine, a: Tenant) -> dict[int, numbers.Numbers]:
    """What GET /campaigns runs."""
    async with create_session_factory(engine)() as session, session.begin():
        campaigns = await campaign_store.list_campaigns(session, a.company_id)
        ids = [c.id for c in campaigns]
        await campaign_store.count_touchpoints(session, ids)
        return await numbers.numbers_by_campaign(session, a.company_id, ids)


async def all_together(engine: AsyncEngine, a: Tenant) -> numbers.Numbers:
    """What GET /numbers runs."""
    async with create_session_factory(engine)() as session, session.begin():
        campaigns = await campaign_store.list_campaigns(session, a.company_id)
        return await numbers.overall_numbers(session, a.company_id, [c.id for c in campaigns])


Measured = Callable[[AsyncEngine, Tenant], Awaitable[Any]]


@dataclass
class Timing:
    name: str
    queries: int
    milliseconds: list[float]
    answer: Any = None
    # CPU per call, the database's backend and this process together, with serial plans:
    # what a call costs on an idle core, whatever else the machine runs.
    cpu_ms: float | None = None

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.milliseconds)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return {
            "route": self.name,
            "queries": self.queries,
            "runs": len(ordered),
            "min_ms": round(ordered[0], 2),
            "median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(p95, 2),
            "max_ms": round(ordered[-1], 2),
            "cpu_ms": None if self.cpu_ms is None else round(self.cpu_ms, 1),
        }


async def measure(
    engine: AsyncEngine, a: Tenant, name: str, run: Measured, runs: int, captured: Captured
) -> Timing:
    await run(engine, a)  # warm: the pool's connection, the statement caches
    captured.statements.clear()
    captured.on = True
    answer = await run(engine, a)
    captured.on = False
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await run(engine, a)
        times.append((time.perf_counter() - started) * 1000)
    return Timing(name, len(captured.statements), times, answer)


def _backend_cpu_seconds(pid: int) -> float:
    """utime + stime of a local PostgreSQL backend (proc(5)): fields 14 and 15."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_call(url: str, a: Tenant, run: Measured, runs: int) -> float | None:
    """CPU milliseconds a call costs, on one connection whose backend runs serial plans
    (parallel workers would be other processes): None when the server is not local."""
    engine = create_async_engine(async_url(url), pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _serial(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.close()

    try:
        async with engine.connect() as connection:
            pid = int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)
        if not await asyncio.to_thread(os.path.exists, f"/proc/{pid}/stat"):
            return None
        await run(engine, a)
        server, client = _backend_cpu_seconds(pid), time.process_time()
        for _ in range(runs):
            await run(engine, a)
        used = _backend_cpu_seconds(pid) - server + time.process_time() - client
        return used * 1000 / runs
    finally:
        await engine.dispose()


_SCAN = re.compile(
    r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: Backward)?"
    r"(?: using (\w+))?(?: on (\w+))?"
)


def scans(plan: list[str]) -> list[str]:
    found = []
    for line in plan:
        match = _SCAN.search(line)
        if match:
            kind, index, table = match.groups()
            found.append(f"{kind} {index or ''} {('on ' + table) if table else ''}".strip())
    return found


async def explain(engine: AsyncEngine, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    plans = []
    async with engine.connect() as connection:
        for statement, parameters in statements:
            result = await connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters
            )
            plan = [row[0] for row in result]
            flagged = [s for s in scans(plan) if s.startswith("Seq Scan") and s.endswith(LARGE)]
            plans.append(
                {
                    "statement": " ".join(statement.split()),
                    "plan": plan,
                    "scans": scans(plan),
                    "sequential_scans_of_large_tables": flagged,
                }
            )
    return plans


# -- the run ------------------------------------------------------------------------------


def admin(server: str) -> str:
    return f"{server.replace('+psycopg', '')}/postgres"


async def _written(engine: AsyncEngine) -> Tenant:
    """Company A of a database this bench wrote and kept (--database)."""
    async with create_session_factory(engine)() as session:
        company = await session.scalar(select(func.min(Company.id)))
        assert company is not None, "no company: not a database this bench wrote"
        campaigns = await campaign_store.list_campaigns(session, company)
    return Tenant(company, [c.id for c in campaigns])


async def bench(args: argparse.Namespace, url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        if args.database:
            a, rows = await _written(engine), {}
        else:
            log("migrating")
            await asyncio.to_thread(upgrade, url)
            a = await _tenant(engine, "Acme", 12)
            b = await _tenant(engine, "Globex", 1)
            log(f"writing the history: {args.recipients:,} recipients in the measured campaign")
            started = time.monotonic()
            rows = await asyncio.to_thread(write_history, url, a, b, args.recipients)
            log(f"history written in {time.monotonic() - started:.1f} s: {rows}")
        captured = Captured()
        captured.listen(engine)
        timings, plans = [], {}
        load_before = os.getloadavg()[0]
        for name, run in (
            ("GET /campaigns/{id}/numbers", one_campaign),
            ("GET /campaigns", the_list),
            ("GET /numbers", all_together),
        ):
            timing = await measure(engine, a, name, run, args.runs, captured)
            timing.cpu_ms = await cpu_per_call(url, a, run, args.runs)
            timings.append(timing)
            plans[name] = await explain(engine, list(captured.statements))
        # Other processes on the machine slow every query alike: say how busy it was.
        load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)"
    finally:
        await engine.dispose()
    return {
        "recipients": args.recipients,
        "runs": args.runs,
        "load_average": load,
        "rows": rows,
        "timings": [t.figures() for t in timings],
        "answers": {t.name: _plain(t.answer) for t in timings},
        "plans": plans,
    }


def _plain(answer: Any) -> Any:
    if isinstance(answer, dict):
        return {str(k): _plain(v) for k, v in answer.items()}
    if hasattr(answer, "__dataclass_fields__"):
        return {k: _plain(getattr(answer, k)) for k in answer.__dataclass_fields__}
    if isinstance(answer, list):
        return [_plain(v) for v in answer]
    return answer


def report(result: dict[str, Any]) -> None:
    print(f"\nCampaign numbers at {result['recipients']:,} recipients, PostgreSQL, "
          f"{result['runs']} runs each")  # fmt: skip
    print(f"(load average while measuring: {result['load_average']})")
    heads = ("queries", 7), ("min ms", 8), ("median ms", 10), ("p95 ms", 8), ("max ms", 8)
    print(f"{'route':32} " + " ".join(f"{h:>{w}}" for h, w in heads) + "  CPU ms/call")
    for t in result["timings"]:
        cpu = "n/a" if t["cpu_ms"] is None else f"{t['cpu_ms']:.1f}"
        print(f"{t['route']:32} {t['queries']:>7} {t['min_ms']:>8.2f} {t['median_ms']:>10.2f} "
              f"{t['p95_ms']:>8.2f} {t['max_ms']:>8.2f}  {cpu:>11}")  # fmt: skip
    for route, plans in result["plans"].items():
        print(f"\n== {route}: EXPLAIN (ANALYZE, BUFFERS) of its {len(plans)} queries")
        for n, explained in enumerate(plans, start=1):
            print(f"\n-- query {n}: {explained['statement'][:300]}")
            for line in explained["plan"]:
                print(f"   {line}")
    print("\nScans used:")
    flagged = []
    for route, plans in result["plans"].items():
        for n, explained in enumerate(plans, start=1):
            print(f"  {route} q{n}: {'; '.join(explained['scans']) or 'no scan'}")
            flagged += explained["sequential_scans_of_large_tables"]
    print(f"Sequential scans of large tables: {flagged or 'none'}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30, help="measured calls of each route")
    parser.add_argument("--server", default=SERVER, help="a PostgreSQL server's URL, no database")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--database", help="measure again a database a --keep run left (written, not dropped)"
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    name = args.database or f"bench_numbers_{uuid.uuid4().hex[:10]}"
    if not args.database:
        with psycopg.connect(admin(args.server), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        log(f"created database {name}")
    try:
        result = asyncio.run(bench(args, f"{args.server}/{name}"))
    finally:
        if not (args.keep or args.database):
            with psycopg.connect(admin(args.server), autocommit=True) as connection:
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            log(f"dropped database {name}")
    report(result)
    line = json.dumps(result, default=str)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"numbers-{stamp}-n{args.recipients}.json"
        path.write_text(line + "\n")
        log(f"wrote {path}")
    print(json.dumps({k: v for k, v in result.items() if k != "plans"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
