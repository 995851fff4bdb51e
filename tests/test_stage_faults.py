"""A real fault during real stage moves: the worker process killed (SIGKILL) while the
moves' actions run, and a new one started, on a real dev server, API and mail sink
(bench/stack.py brings them up). Every action runs exactly once: one e-mail per move in
the sink, one note, its tags once, and every action ends done."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from sqlalchemy import select

from bench.stack import Running, Stack, start
from store.models import Candidate, CandidateTag, Message, MessageSource, MoveAction, Note
from store.session import sync_url
from tests.test_faults import _delivered
from workflows.stage_actions import ACTION_TIMEOUT

CANDIDATES = 40
# Killed once this many of the moves' e-mails are in the sink: some, never all.
KILL_AFTER = CANDIDATES // 5
MOVES_IN_FLIGHT = 8
# An action lost with the worker is tried again once its heartbeat (an e-mail) or its
# start-to-close timeout (the others: STEP_TIMEOUT) has passed; the moves settle well
# within the longest timeout and a margin.
SETTLE_SECONDS = ACTION_TIMEOUT.total_seconds() + 60
TAGS = ["screening", "fault-test"]
NOTE = "Screening started"


async def _job(http: httpx.AsyncClient, sender_user_id: int) -> tuple[int, int]:
    """A job whose second stage carries an e-mail, a note and tags, all immediate; answers
    the job's id and that stage's."""
    created = await http.post("/jobs", json={"title": "Fault engineer"})
    assert created.status_code == 201, created.text
    job = created.json()
    actions: list[dict[str, Any]] = [
        {
            "kind": "email",
            "email": {
                "subject": "Your screening, {{ first_name }}",
                "body": "Hello {{ first_name }},\n\nWe will call you this week.\n\n"
                "{{ sender_name }}",
                "sender_user_id": sender_user_id,
            },
        },
        {"kind": "note", "note": {"text": NOTE}},
        {"kind": "tags", "tags": {"tags": TAGS}},
    ]
    stages = [
        {"id": s["id"], "name": s["name"], "actions": actions if n == 1 else []}
        for n, s in enumerate(job["stages"])
    ]
    put = await http.put(f"/jobs/{job['id']}/pipeline", json={"stages": stages})
    assert put.status_code == 200, put.text
    return job["id"], put.json()["stages"][1]["id"]


async def _applied_and_moved(
    running: Running, http: httpx.AsyncClient, job: int, stage: int
) -> dict[int, dict[str, Any]]:
    """Every candidate applied (an import: nothing runs), then moved into `stage`, a few
    moves at a time; answers each move by its candidate."""
    for candidate in running.ids:
        applied = await http.post(
            f"/jobs/{job}/applications", json={"candidate_id": candidate, "source": "import"}
        )
        assert applied.status_code == 201, applied.text
        assert applied.json()["actions"] == [], applied.text
    gate = asyncio.Semaphore(MOVES_IN_FLIGHT)

    async def moved(candidate: int) -> dict[str, Any]:
        async with gate:
            answer = await http.post(
                f"/jobs/{job}/candidates/{candidate}/moves", json={"stage_id": stage}
            )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        assert [a["kind"] for a in body["actions"]] == ["email", "note", "tags"], body
        return body

    moves = await asyncio.gather(*(moved(c) for c in running.ids))
    return {m["candidate_id"]: m for m in moves}


def _arrived(mail_dir: Path) -> int:
    return sum(1 for _ in mail_dir.glob("*.eml"))


async def _first_e_mails(
    mail_dir: Path, moving: asyncio.Task[Any], count: int, seconds: float
) -> None:
    """Until `count` e-mails are in the sink, counted every 10 ms without parsing them (a
    burst brings dozens in a fraction of a second); a move refused meanwhile says so."""
    deadline = time.monotonic() + seconds
    while _arrived(mail_dir) < count:
        if moving.done() and moving.exception() is not None:
            moving.result()
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} e-mails after {seconds:.0f} s")
        await asyncio.sleep(0.01)


async def _settled(http: httpx.AsyncClient, move_ids: list[int], seconds: float) -> list[Any]:
    """Each move as GET /moves/{id} shows it once none of its actions is pending."""
    deadline = time.monotonic() + seconds
    while True:
        moves = [(await http.get(f"/moves/{m}")).json() for m in move_ids]
        pending = sum(a["state"] == "pending" for m in moves for a in m["actions"])
        if not pending:
            return moves
        if time.monotonic() > deadline:
            raise AssertionError(f"{pending} actions still pending after {seconds:.0f} s")
        await asyncio.sleep(0.5)


def _records(
    database_url: str, candidates: list[int], moves: list[int]
) -> dict[str, Sequence[Any]]:
    """What the store holds of the moves' actions and what they wrote, for these
    candidates only (on PostgreSQL the run's database may hold other tests' rows)."""
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            actions = connection.execute(
                select(MoveAction.id, MoveAction.kind).where(MoveAction.move_id.in_(moves))
            ).all()
            addresses = connection.execute(
                select(Candidate.id, Candidate.email).where(Candidate.id.in_(candidates))
            ).all()
            notes = connection.execute(
                select(
                    Note.candidate_id, Note.move_action_id, Note.text, Note.author_user_id
                ).where(Note.candidate_id.in_(candidates))
            ).all()
            tags = connection.execute(
                select(CandidateTag.candidate_id, CandidateTag.tag, CandidateTag.move_action_id)
                .where(CandidateTag.candidate_id.in_(candidates))
            ).all()  # fmt: skip
            messages = connection.execute(
                select(Message.candidate_id, Message.source_id, Message.state, Message.message_id)
                .where(
                    Message.candidate_id.in_(candidates),
                    Message.source_kind == MessageSource.STAGE_ACTION,
                )
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return {
        "actions": actions,
        "addresses": addresses,
        "notes": notes,
        "tags": tags,
        "messages": messages,
    }


async def test_a_worker_killed_mid_move_and_a_new_one_run_every_action_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    stack = Stack(tmp_path)
    try:
        running = await start(
            stack, n=CANDIDATES, source="stage fault test", database_url=database_url
        )
        async with running.http(60.0) as http:
            job, stage = await _job(http, running.admin_user_id)
            moving = asyncio.create_task(_applied_and_moved(running, http, job, stage))

            await _first_e_mails(running.mail_dir, moving, KILL_AFTER, 60)
            # Killed with a fifth in: its actions in flight are retried by the next one.
            stack.respawn("worker")
            at_kill = len(_delivered(running.mail_dir))
            moves = await moving
            try:
                final = await _settled(http, [m["id"] for m in moves.values()], SETTLE_SECONDS)
            except AssertionError as error:
                seen = f"{len(_delivered(running.mail_dir))} delivered"
                raise AssertionError(f"{error}: {seen}\n{stack.tails(40)}") from None
            for move in moves.values():
                handle = running.client.get_workflow_handle(move["workflow_id"])
                assert await handle.result() == "done"
        await asyncio.sleep(2)  # a late second delivery, if any, would land now
        mail = _delivered(running.mail_dir)
        records = _records(database_url, running.ids, [m["id"] for m in moves.values()])
    finally:
        stack.stop()

    # The kill fell mid-way: some e-mails were out, not all.
    assert KILL_AFTER <= at_kill < CANDIDATES, at_kill
    assert [a["state"] for m in final for a in m["actions"]] == ["done"] * 3 * CANDIDATES

    action_of = {a.id: a.kind.value for a in records["actions"]}
    by_candidate = {
        c: {a["kind"]: a["id"] for a in m["actions"]} for c, m in moves.items()
    }  # candidate -> kind -> action id
    address_of = dict(records["addresses"])

    # The e-mail: one message row per e-mail action, sent, and one delivery per candidate
    # (an unconfirmed one, killed between the final dot and the peer's reply, may have
    # arrived or not, never twice).
    messages = {m.candidate_id: m for m in records["messages"]}
    assert len(records["messages"]) == CANDIDATES == len(messages)
    assert {c: m.source_id for c, m in messages.items()} == {
        c: kinds["email"] for c, kinds in by_candidate.items()
    }
    states = Counter(m.state.value for m in messages.values())
    assert set(states) <= {"sent", "unconfirmed"}, states
    per_address = Counter(to for to, _ in mail)
    assert [a for a, n in per_address.items() if n > 1] == []  # none twice
    assert len({message_id for _, message_id in mail}) == len(mail)
    assert {message_id for _, message_id in mail} <= {m.message_id for m in messages.values()}
    missing = [
        c
        for c, m in messages.items()
        if per_address[address_of[c]] != 1 and m.state != "unconfirmed"
    ]
    assert missing == [], (missing, states)
    assert len(mail) >= CANDIDATES - states["unconfirmed"]

    # The note: one row per note action, on its candidate, automatic (no author).
    notes = Counter(
        (n.candidate_id, n.move_action_id, n.text, n.author_user_id) for n in records["notes"]
    )
    assert notes == Counter(
        {(c, kinds["note"], NOTE, None): 1 for c, kinds in by_candidate.items()}
    )

    # The tags: each once, written by the move's tags action.
    tags = Counter((t.candidate_id, t.tag, t.move_action_id) for t in records["tags"])
    assert tags == Counter(
        {(c, tag, kinds["tags"]): 1 for c, kinds in by_candidate.items() for tag in TAGS}
    )
    assert Counter(action_of.values()) == {
        "email": CANDIDATES,
        "note": CANDIDATES,
        "tags": CANDIDATES,
    }
