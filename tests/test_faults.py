"""Real faults during a real dispatch: the worker process killed (SIGKILL) and frozen
(SIGSTOP), on a real dev server, API and mail sink (bench/stack.py brings them up). No
e-mail is delivered twice, none is lost without the store saying it may be, and no
message is left on its way."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.stack import TIME_ZONE, Running, Stack, create_campaign, start
from store.models import Candidate, Message
from store.session import sync_url

RECIPIENTS = 120
FREEZE_SECONDS = 15.0


def _delivered(mail_dir: Path) -> list[tuple[str, str]]:
    """(To, Message-ID) of each message in the sink."""
    parser = BytesHeaderParser()
    found = []
    for path in mail_dir.glob("*.eml"):
        headers = parser.parsebytes(path.read_bytes())
        found.append((parseaddr(str(headers["To"]))[1], str(headers["Message-ID"])))
    return found


def _rows(database_url: str) -> tuple[dict[str, int], set[str]]:
    """Messages per state, and every candidate's address."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Message.state, func.count()).group_by(Message.state))
            states = {str(state): n for state, n in rows}
            addresses = set(connection.execute(select(Candidate.email)).scalars())
    finally:
        engine.dispose()
    return states, {a for a in addresses if a}


async def _until(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _enrol_due_next_minute(running: Running) -> float:
    """All recipients enrolled into a campaign due at the next whole minute that leaves
    time to start them; answers that moment (epoch seconds)."""
    zone = ZoneInfo(TIME_ZONE)
    due = (datetime.now(zone) + timedelta(seconds=30)).replace(second=0, microsecond=0)
    due += timedelta(minutes=1)
    async with running.http(120.0) as http:
        campaign = await create_campaign(
            http, running.admin_user_id, "Faults", due.strftime("%H:%M"), 1
        )
        added = await http.post(
            f"/campaigns/{campaign}/recipients/bulk", json={"candidate_ids": running.ids}
        )
        assert added.status_code == 202, added.text
        batch = added.json()["batch_id"]
        while True:
            progress = await http.get(f"/campaigns/{campaign}/recipients/batches/{batch}")
            if progress.json()["finished_at"]:
                break
            assert time.time() < due.timestamp() - 5, (
                "enrolment did not finish before the due minute"
            )
            await asyncio.sleep(0.5)
    return due.timestamp()


async def test_a_dispatch_with_its_worker_killed_then_frozen_delivers_every_e_mail_once(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """`engine` empties the store first (PostgreSQL's database is the run's): the counts
    below are of this test's rows alone."""
    stack = Stack(tmp_path)
    try:
        running = await start(stack, n=RECIPIENTS, source="fault test", database_url=database_url)
        due = await _enrol_due_next_minute(running)
        await asyncio.sleep(max(0.0, due - time.time()))

        def delivered_at_least(count: int) -> Callable[[], bool]:
            return lambda: len(_delivered(running.mail_dir)) >= count

        # Killed with a quarter in: its sends in flight are retried by the next worker.
        await _until("a quarter delivered", delivered_at_least(RECIPIENTS // 4), 120)
        stack.respawn("worker")
        # Frozen with half in, past its workflow task timeout: on thawing, its old attempts
        # and their retries run side by side in one process.
        await _until("half delivered", delivered_at_least(RECIPIENTS // 2), 120)
        frozen = stack.child("worker").process.pid
        os.kill(frozen, signal.SIGSTOP)
        try:
            await asyncio.sleep(FREEZE_SECONDS)
        finally:
            os.kill(frozen, signal.SIGCONT)

        def settled() -> bool:
            states, _ = _rows(database_url)
            ended = sum(n for s, n in states.items() if s not in ("prepared", "sending"))
            return ended == RECIPIENTS

        try:
            await _until("every message settled", settled, 180)
        except AssertionError as error:
            seen = f"{_rows(database_url)[0]}, {len(_delivered(running.mail_dir))} delivered"
            raise AssertionError(f"{error}: {seen}\n{stack.tails(40)}") from None
        await asyncio.sleep(2)  # a zombie's late delivery, if any, would land now
        mail = _delivered(running.mail_dir)
        states, addresses = _rows(database_url)
    finally:
        stack.stop()
    per_address = Counter(to for to, _ in mail)
    assert [a for a, n in per_address.items() if n > 1] == []  # none twice
    assert len({message_id for _, message_id in mail}) == len(mail)
    # Sent, or unconfirmed where a kill fell between a last check and the peer's reply;
    # never left prepared or sending.
    assert set(states) <= {"sent", "unconfirmed"}, states
    # None lost silently: a recipient the sink never saw is one the store counts as
    # unconfirmed (a kill between the last check's commit and the dot; issue 7 keeps
    # that window open). Most unconfirmed ones did arrive.
    not_arrived = addresses - set(per_address)
    assert len(not_arrived) <= states.get("unconfirmed", 0), (not_arrived, states)
    assert len(per_address) >= RECIPIENTS - states.get("unconfirmed", 0)
