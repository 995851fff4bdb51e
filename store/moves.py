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

from sqlalchemy import and_, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from store.candidates import get_candidate
from store.models import (
    ActionKind,
    ActionState,
    Application,
    ApplicationSource,
    Company,
    Message,
    MessageState,
    Move,
    MoveAction,
    Stage,
    StageAction,
)
from store.pipelines import due_at, get_job, stages_of
from store.session import locking

# Applications from these sources trigger nothing (SPEC.md §2.2).
SILENT_SOURCES = frozenset({ApplicationSource.IMPORT, ApplicationSource.FORWARDED_CV})

# Why a pending action was cancelled: the request's own cancel, or a later move.
CANCELLED_BY_REQUEST = "the move was cancelled"


def moved_to(stage: Stage) -> str:
    return f"moved to {stage.name}"


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


async def _stage(session: AsyncSession, company_id: int, job_id: int, stage_id: int) -> Stage:
    stage = await session.scalar(
        select(Stage).where(
            Stage.company_id == company_id, Stage.job_id == job_id, Stage.id == stage_id
        )
    )
    if stage is None:
        raise NotFoundError(f"Stage {stage_id} is not a stage of job {job_id}.")
    return stage


async def _snapshot(
    session: AsyncSession, company: Company, move: Move, stage: Stage, mover: int | None
) -> list[MoveAction]:
    actions = (
        await session.scalars(
            select(StageAction)
            .where(StageAction.stage_id == stage.id)
            .order_by(StageAction.position)
        )
    ).all()
    made = []
    for action in actions:
        settings = dict(action.settings)
        if action.kind is ActionKind.EMAIL:
            settings["sender_user_id"] = settings.get("sender_user_id") or mover
            if settings["sender_user_id"] is None:
                raise ValidationError(
                    f"Action {action.position + 1} of stage '{stage.name}' sends its e-mail "
                    "from the user who moves the candidate, and a service key is no user: "
                    "make the move with a user's key, or name a sender in the action."
                )
        made.append(
            MoveAction(
                company_id=company.id,
                move_id=move.id,
                position=action.position,
                kind=action.kind,
                settings=settings,
                due_at=due_at(
                    move.created_at,
                    company.time_zone,
                    delay_hours=action.delay_hours,
                    delay_days=action.delay_days,
                    at_local=action.at_local,
                ),
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
    session: AsyncSession, moves: list[int], reason: str, now: datetime
) -> list[Cancelled]:
    """Every pending action of `moves` whose e-mail (if it has one) has not been handed to
    the peer becomes cancelled with `reason`. The e-mails' messages are locked first: a
    send's last check moves its message to `sending` and then reads the action, so either
    it committed first and its message is seen handed (not cancelled), or it waits and
    then reads the action cancelled (withdrawn). On SQLite the caller's transaction holds
    the write lock from its start (store.session.transaction)."""
    if not moves:
        return []
    pending = list(
        await session.scalars(
            select(MoveAction.id).where(
                MoveAction.move_id.in_(moves), MoveAction.state == ActionState.PENDING
            )
        )
    )
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
) -> tuple[Move, list[MoveAction]]:
    """The move of `application` into `stage`, with its actions when they run."""
    move = Move(
        company_id=company.id,
        key=secrets.token_hex(8),
        application_id=application.id,
        job_id=application.job_id,
        candidate_id=application.candidate_id,
        from_stage_id=from_stage_id,
        to_stage_id=stage.id,
        moved_by_user_id=mover,
        run_actions=run_actions,
        created_at=now,
    )
    session.add(move)
    await session.flush()
    actions = await _snapshot(session, company, move, stage, mover) if run_actions else []
    application.stage_id, application.entered_stage_at = stage.id, now
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
) -> MoveDecision:
    open_moves = await _open_moves(session, application.id)
    cancelled = await _cancel_pending(session, [m.id for m in open_moves], moved_to(stage), now)
    move, actions = await _enter(
        session, company, application, stage,
        from_stage_id=application.stage_id, run_actions=run_actions, mover=mover, now=now,
    )  # fmt: skip
    told = {c.move_id for c in cancelled}
    return MoveDecision(move, stage, actions, cancelled, [m for m in open_moves if m.id in told])


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
    """Move an application into `stage_id`. Back into a stage it went through before, the
    caller must say whether its actions run again (`run_actions`); else 409 asks."""
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
    stage = await _stage(session, company.id, job_id, stage_id)
    if application.stage_id == stage.id:
        raise ConflictError(f"Candidate {candidate_id} is already in stage '{stage.name}'.")
    if run_actions is None:
        before = await session.scalar(
            select(Move.id).where(
                Move.application_id == application.id, Move.to_stage_id == stage.id
            )
        )
        if before is not None:
            raise ConflictError(
                f"Candidate {candidate_id} was in stage '{stage.name}' before: say whether "
                "to run its actions again (run_actions: true) or to move without them "
                "(run_actions: false)."
            )
    return await _move(
        session,
        company,
        application,
        stage,
        run_actions=True if run_actions is None else run_actions,
        mover=mover,
        now=now,
    )


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
