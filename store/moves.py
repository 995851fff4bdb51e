"""Applications and moves: a candidate entering a job's pipeline or moved within it, with
the actions the stage carries snapshotted as the move's own, each with its state.

A new move of the same application cancels what the previous ones still had pending, and
records each as cancelled with why; so does cancelling a move. Both are one statement
that only takes pending actions whose e-mail has not been handed to the SMTP peer, and
that statement is serialised with a send's last check (activities/sending.py), so what
they report as cancelled never goes out, whichever commits first.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from store.candidates import get_candidate
from store.models import (
    ActionKind,
    ActionState,
    Application,
    ApplicationSource,
    BulkMove,
    BulkMoveResult,
    Company,
    DisqualificationReason,
    Message,
    MessageState,
    Move,
    MoveAction,
    Stage,
    StageAction,
    StageRule,
)
from store.pipelines import due_at, get_job, get_reason, stages_of
from store.session import locking
from workflows.timing import after_days

# Applications from these sources trigger nothing (SPEC.md §2.2).
SILENT_SOURCES = frozenset(
    {ApplicationSource.IMPORT, ApplicationSource.FORWARDED_CV, ApplicationSource.ASSIGNED}
)

# Why a pending action was cancelled: the request's own cancel, or a later move.
CANCELLED_BY_REQUEST = "the move was cancelled"


REPLIED = "the candidate replied"


def moved_to(stage: Stage) -> str:
    return f"moved to {stage.name}"


def disqualified_for(reason: DisqualificationReason) -> str:
    return f"disqualified: {reason.name}"


# An e-mail past these states has reached (or may have reached) the peer: not cancelled.
_HANDED = (MessageState.SENDING, MessageState.SENT, MessageState.UNCONFIRMED)


@dataclass(frozen=True)
class Cancelled:
    """A pending action that a move or a cancel stopped: what it was and when it was due."""

    move_id: int
    action_id: int
    kind: ActionKind
    due_at: datetime


@dataclass(frozen=True)
class MoveDecision:
    """A move as the store decided it: its actions, and what it cancelled (with the moves
    whose workflows are to be told)."""

    move: Move
    stage: Stage
    actions: list[MoveAction]
    cancelled: list[Cancelled]
    superseded: list[Move]
    why: str = ""  # what the cancelled actions were cancelled for


async def _stage(session: AsyncSession, company_id: int, job_id: int, stage_id: int) -> Stage:
    stage = await session.scalar(
        select(Stage).where(
            Stage.company_id == company_id, Stage.job_id == job_id, Stage.id == stage_id
        )
    )
    if stage is None:
        raise NotFoundError(f"Stage {stage_id} is not a stage of job {job_id}.")
    return stage


async def _carried(
    session: AsyncSession, stage: Stage | None, reason: DisqualificationReason | None
) -> list[tuple[StageAction, StageRule | None]]:
    """What a move runs: the stage's actions then its rules' (or the reason's actions)."""
    if reason is not None:
        where = StageAction.reason_id == reason.id
        rules: dict[int, StageRule] = {}
    else:
        assert stage is not None
        where = StageAction.stage_id == stage.id
        rules = {
            rule.id: rule
            for rule in await session.scalars(
                select(StageRule).where(StageRule.stage_id == stage.id)
            )
        }
    actions = await session.scalars(select(StageAction).where(where))
    carried = [(action, rules.get(action.rule_id or 0)) for action in actions]
    return sorted(
        carried,
        key=lambda pair: (
            pair[1] is not None,
            pair[1].position if pair[1] else 0,
            pair[0].position,
        ),
    )


async def _snapshot(
    session: AsyncSession,
    company: Company,
    move: Move,
    holder: str,
    carried: list[tuple[StageAction, StageRule | None]],
    mover: int | None,
) -> list[MoveAction]:
    made = []
    for position, (action, rule) in enumerate(carried):
        settings = dict(action.settings)
        if action.kind is ActionKind.EMAIL:
            settings["sender_user_id"] = settings.get("sender_user_id") or mover
            if settings["sender_user_id"] is None:
                raise ValidationError(
                    f"An action of {holder} sends its e-mail from the user who moves the "
                    "candidate, and a service key is no user: make the move with a user's "
                    "key, or name a sender in the action."
                )
        due = (
            after_days(move.created_at, rule.after_days, company.time_zone)
            if rule is not None
            else due_at(
                move.created_at,
                company.time_zone,
                delay_hours=action.delay_hours,
                delay_days=action.delay_days,
                at_local=action.at_local,
            )
        )
        made.append(
            MoveAction(
                company_id=company.id,
                move_id=move.id,
                position=position,
                kind=action.kind,
                settings=settings,
                due_at=due,
                rule_after_days=rule.after_days if rule is not None else None,
                unless_replied=bool(rule and rule.unless_replied),
                state=ActionState.PENDING,
            )
        )
    session.add_all(made)
    await session.flush()
    return made


def stage_email_key(action_id: int) -> str:
    """The idempotency key of an e-mail action's message (one per action)."""
    return f"stage/{action_id}"


async def _cancel_pending(
    session: AsyncSession,
    moves: list[int],
    reason: str,
    now: datetime,
    *,
    replied_rules_only: bool = False,
) -> list[Cancelled]:
    """Every pending action of `moves` whose e-mail (if it has one) has not been handed to
    the peer becomes cancelled with `reason`. The e-mails' messages are locked first: a
    send's last check moves its message to `sending` and then reads the action, so either
    it committed first and its message is seen handed (not cancelled), or it waits and
    then reads the action cancelled (withdrawn). On SQLite the caller's transaction holds
    the write lock from its start (store.session.transaction). `replied_rules_only`:
    only the actions of rules that a reply ends."""
    if not moves:
        return []
    query = select(MoveAction.id).where(
        MoveAction.move_id.in_(moves), MoveAction.state == ActionState.PENDING
    )
    if replied_rules_only:
        query = query.where(MoveAction.unless_replied.is_(True))
    pending = list(await session.scalars(query))
    if not pending:
        return []
    keys = {stage_email_key(action_id): action_id for action_id in pending}
    messages = await session.execute(
        locking(
            select(Message.idempotency_key, Message.state).where(Message.idempotency_key.in_(keys))
        )
    )
    handed = {keys[key] for key, state in messages if state in _HANDED}
    rows = await session.execute(
        update(MoveAction)
        .where(
            MoveAction.id.in_([a for a in pending if a not in handed]),
            MoveAction.state == ActionState.PENDING,
        )
        .values(state=ActionState.CANCELLED, reason=reason, finished_at=now)
        .returning(MoveAction.move_id, MoveAction.id, MoveAction.kind, MoveAction.due_at)
        .execution_options(synchronize_session=False)
    )
    cancelled = [Cancelled(*row) for row in rows]
    return sorted(cancelled, key=lambda c: (c.due_at, c.action_id))


async def _open_moves(session: AsyncSession, application_id: int) -> list[Move]:
    """The application's moves that still have pending actions."""
    pending = exists().where(
        and_(MoveAction.move_id == Move.id, MoveAction.state == ActionState.PENDING)
    )
    return list(
        await session.scalars(select(Move).where(Move.application_id == application_id, pending))
    )


async def _enter(
    session: AsyncSession,
    company: Company,
    application: Application,
    stage: Stage,
    *,
    from_stage_id: int | None,
    run_actions: bool,
    mover: int | None,
    now: datetime,
    reason: DisqualificationReason | None = None,
) -> tuple[Move, list[MoveAction]]:
    """The move of `application` into `stage` (or its disqualification there, with
    `reason`), with its actions when they run."""
    move = Move(
        company_id=company.id,
        key=secrets.token_hex(8),
        application_id=application.id,
        job_id=application.job_id,
        candidate_id=application.candidate_id,
        from_stage_id=from_stage_id,
        to_stage_id=stage.id,
        moved_by_user_id=mover,
        disqualification_reason_id=reason.id if reason is not None else None,
        run_actions=run_actions,
        created_at=now,
    )
    session.add(move)
    await session.flush()
    actions = []
    if run_actions:
        holder = f"reason '{reason.name}'" if reason else f"stage '{stage.name}'"
        carried = await _carried(session, stage, reason)
        actions = await _snapshot(session, company, move, holder, carried, mover)
    if reason is None:
        application.stage_id, application.entered_stage_at = stage.id, now
        application.disqualified_at = application.disqualification_reason_id = None
    else:
        application.disqualified_at, application.disqualification_reason_id = now, reason.id
    await session.flush()
    return move, actions


async def _move(
    session: AsyncSession,
    company: Company,
    application: Application,
    stage: Stage,
    *,
    run_actions: bool,
    mover: int | None,
    now: datetime,
    reason: DisqualificationReason | None = None,
) -> MoveDecision:
    open_moves = await _open_moves(session, application.id)
    why = disqualified_for(reason) if reason is not None else moved_to(stage)
    cancelled = await _cancel_pending(session, [m.id for m in open_moves], why, now)
    move, actions = await _enter(
        session, company, application, stage, from_stage_id=application.stage_id,
        run_actions=run_actions, mover=mover, now=now, reason=reason,
    )  # fmt: skip
    told = {c.move_id for c in cancelled}
    superseded = [m for m in open_moves if m.id in told]
    return MoveDecision(move, stage, actions, cancelled, superseded, why)


async def apply(
    session: AsyncSession,
    company: Company,
    job_id: int,
    candidate_id: int,
    source: ApplicationSource,
    *,
    mover: int | None,
    now: datetime,
) -> MoveDecision:
    """A new application: the candidate enters the job's first stage, whose actions run
    unless the application came by import or by a CV forwarded to the job's mailbox."""
    await get_job(session, company.id, job_id)
    await get_candidate(session, company.id, candidate_id)
    found = await session.scalar(
        select(Application.id).where(
            Application.job_id == job_id, Application.candidate_id == candidate_id
        )
    )
    if found is not None:
        raise ConflictError(
            f"Candidate {candidate_id} has already applied to job {job_id} "
            f"(application {found}): move them instead."
        )
    first = (await stages_of(session, company.id, job_id))[0].stage
    application = Application(
        company_id=company.id,
        job_id=job_id,
        candidate_id=candidate_id,
        stage_id=first.id,
        source=source,
        entered_stage_at=now,
    )
    session.add(application)
    try:
        await session.flush()
    except IntegrityError:
        raise ConflictError(
            f"Candidate {candidate_id} has just applied to job {job_id} in another request: "
            "move them instead."
        ) from None
    move, actions = await _enter(
        session, company, application, first,
        from_stage_id=None, run_actions=source not in SILENT_SOURCES, mover=mover, now=now,
    )  # fmt: skip
    return MoveDecision(move, first, actions, [], [])


async def _application(
    session: AsyncSession, company: Company, job_id: int, candidate_id: int
) -> Application:
    await get_job(session, company.id, job_id)
    application = await session.scalar(
        locking(
            select(Application).where(
                Application.company_id == company.id,
                Application.job_id == job_id,
                Application.candidate_id == candidate_id,
            )
        )
    )
    if application is None:
        raise NotFoundError(f"Candidate {candidate_id} has not applied to job {job_id}.")
    await get_candidate(session, company.id, candidate_id)  # 404 for an erased one too
    return application


async def _ask_again(
    session: AsyncSession, application: Application, run_actions: bool | None, where: Any, what: str
) -> bool:
    """Whether the actions run: as the caller says, or by default when the candidate never
    went there before; back where they were before, the caller must say (409 asks)."""
    if run_actions is not None:
        return run_actions
    before = await session.scalar(
        select(Move.id).where(Move.application_id == application.id, where).limit(1)
    )
    if before is not None:
        raise ConflictError(
            f"Candidate {application.candidate_id} was {what} before: say whether to run its "
            "actions again (run_actions: true) or to go on without them (run_actions: false)."
        )
    return True


async def move_candidate(
    session: AsyncSession,
    company: Company,
    job_id: int,
    candidate_id: int,
    stage_id: int,
    *,
    run_actions: bool | None,
    mover: int | None,
    now: datetime,
) -> MoveDecision:
    """Move an application into `stage_id` (a disqualified one is requalified, and may
    stay in its stage). Back into a stage it went through before, the caller must say
    whether its actions run again (`run_actions`); else 409 asks."""
    application = await _application(session, company, job_id, candidate_id)
    stage = await _stage(session, company.id, job_id, stage_id)
    if application.stage_id == stage.id and application.disqualified_at is None:
        raise ConflictError(f"Candidate {candidate_id} is already in stage '{stage.name}'.")
    where = and_(Move.to_stage_id == stage.id, Move.disqualification_reason_id.is_(None))
    runs = await _ask_again(session, application, run_actions, where, f"in stage '{stage.name}'")
    return await _move(session, company, application, stage, run_actions=runs, mover=mover, now=now)


async def disqualify(
    session: AsyncSession,
    company: Company,
    job_id: int,
    candidate_id: int,
    reason_id: int,
    *,
    run_actions: bool | None,
    mover: int | None,
    now: datetime,
) -> MoveDecision:
    """Disqualify an application with one of the company's reasons: it stays in its stage,
    what its moves had pending is cancelled, and the reason's actions run. Disqualified
    with that reason before, the caller must say whether they run again."""
    application = await _application(session, company, job_id, candidate_id)
    reason = (await get_reason(session, company, reason_id)).reason
    if application.disqualified_at is not None:
        raise ConflictError(
            f"Candidate {candidate_id} is already disqualified from job {job_id}: move them "
            "into a stage to requalify them first."
        )
    stage = await _stage(session, company.id, job_id, application.stage_id)
    where = Move.disqualification_reason_id == reason.id
    runs = await _ask_again(
        session, application, run_actions, where, f"disqualified for '{reason.name}'"
    )
    return await _move(
        session, company, application, stage, run_actions=runs, mover=mover, now=now,
        reason=reason,
    )  # fmt: skip


async def cancel_on_reply(
    session: AsyncSession, company_id: int, candidate_id: int, replied_at: datetime, now: datetime
) -> tuple[list[Move], list[Cancelled]]:
    """A reply from the candidate ends every rule of theirs that waits for none, of the
    moves made before the reply: those actions are cancelled, and the answer names their
    moves to tell."""
    moves = list(
        await session.scalars(
            select(Move).where(
                Move.company_id == company_id,
                Move.candidate_id == candidate_id,
                Move.created_at <= replied_at,
                exists().where(
                    and_(
                        MoveAction.move_id == Move.id,
                        MoveAction.state == ActionState.PENDING,
                        MoveAction.unless_replied.is_(True),
                    )
                ),
            )
        )
    )
    cancelled = await _cancel_pending(
        session, [m.id for m in moves], REPLIED, now, replied_rules_only=True
    )
    told = {c.move_id for c in cancelled}
    return [m for m in moves if m.id in told], cancelled


async def get_move(session: AsyncSession, company_id: int, move_id: int) -> Move:
    move = await session.scalar(
        select(Move).where(Move.company_id == company_id, Move.id == move_id)
    )
    if move is None:
        raise NotFoundError(f"Move {move_id} does not exist.")
    return move


async def move_actions(session: AsyncSession, move_id: int) -> list[MoveAction]:
    return list(
        await session.scalars(
            select(MoveAction)
            .where(MoveAction.move_id == move_id)
            .order_by(MoveAction.due_at, MoveAction.position)
        )
    )


async def cancel_move(
    session: AsyncSession, company_id: int, move_id: int, now: datetime
) -> tuple[Move, list[Cancelled]]:
    """Cancel what the move still has pending; a move with nothing pending answers 409."""
    move = await get_move(session, company_id, move_id)
    cancelled = await _cancel_pending(session, [move.id], CANCELLED_BY_REQUEST, now)
    if not cancelled:
        raise ConflictError(f"Move {move_id} has no pending action left to cancel.")
    return move, cancelled


# -- bulk moves ---------------------------------------------------------------------------


async def create_bulk(
    session: AsyncSession,
    company: Company,
    job_id: int,
    candidate_ids: list[int],
    *,
    stage_id: int | None,
    reason_id: int | None,
    run_actions: bool,
    requester: int | None,
    now: datetime,
) -> BulkMove:
    """A bulk move (into `stage_id`) or disqualification (for `reason_id`) of many
    candidates, run in the background (activities/bulk_moves.py), one result each. The
    stage or reason is the body's: one that is not there is a ValidationError."""
    await get_job(session, company.id, job_id)
    try:
        if stage_id is not None:
            await _stage(session, company.id, job_id, stage_id)
        if reason_id is not None:
            await get_reason(session, company, reason_id)
    except NotFoundError as error:
        raise ValidationError(str(error)) from None
    bulk = BulkMove(
        company_id=company.id,
        key=secrets.token_hex(8),
        job_id=job_id,
        stage_id=stage_id,
        disqualification_reason_id=reason_id,
        run_actions=run_actions,
        requested_by_user_id=requester,
        candidate_ids=list(dict.fromkeys(candidate_ids)),
        created_at=now,
    )
    session.add(bulk)
    await session.flush()
    return bulk


async def bulk_one(
    session: AsyncSession, company: Company, bulk: BulkMove, candidate_id: int, now: datetime
) -> MoveDecision:
    """One candidate of a bulk move, as a move of their own would do it."""
    common: dict[str, Any] = {
        "run_actions": bulk.run_actions,
        "mover": bulk.requested_by_user_id,
        "now": now,
    }
    if bulk.stage_id is not None:
        return await move_candidate(
            session, company, bulk.job_id, candidate_id, bulk.stage_id, **common
        )
    assert bulk.disqualification_reason_id is not None
    return await disqualify(
        session, company, bulk.job_id, candidate_id, bulk.disqualification_reason_id, **common
    )


@dataclass(frozen=True)
class BulkProgress:
    bulk: BulkMove
    moved: int
    refused: int
    results: list[BulkMoveResult]


async def get_bulk(
    session: AsyncSession, company_id: int, bulk_id: int, *, limit: int, offset: int
) -> BulkProgress:
    """The bulk move, its counts (in SQL) and a page of its results, in candidate order
    of completion."""
    bulk = await session.scalar(
        select(BulkMove).where(BulkMove.company_id == company_id, BulkMove.id == bulk_id)
    )
    if bulk is None:
        raise NotFoundError(f"Bulk move {bulk_id} does not exist.")
    of_bulk = BulkMoveResult.bulk_move_id == bulk.id
    counts = await session.execute(
        select(BulkMoveResult.move_id.is_not(None), func.count())
        .where(of_bulk)
        .group_by(BulkMoveResult.move_id.is_not(None))
    )
    by_outcome = {bool(moved): n for moved, n in counts}
    results = await session.scalars(
        select(BulkMoveResult)
        .where(of_bulk)
        .order_by(BulkMoveResult.id)
        .limit(limit)
        .offset(offset)
    )
    return BulkProgress(bulk, by_outcome.get(True, 0), by_outcome.get(False, 0), list(results))
