"""The actions of a stage move, one activity for all kinds, each idempotent under retry.

An action runs only while the store says it is pending: a cancelled or superseded move's
actions do nothing. A note or tags are written with the action's id in the transaction
that marks it done, so a retry finds them written. The e-mail goes through the one send
path (activities/sending.py): it is about the candidate's own application, so an
unsubscribe from nurture campaigns does not stop it, and it carries no List-Unsubscribe;
a cancelled move or an erased candidate does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import RowMapping, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import COMPOSED, Content, Delivery, compose, now
from config import Settings
from errors import ConflictError, NotFoundError
from mail.message import message_id_for
from mail.sandbox import TemplateSandbox
from mail.smtp import Mailer
from store.erasure import ERASED
from store.messages import MESSAGES, MessageRow
from store.models import (
    ActionKind,
    ActionState,
    Application,
    ApplicationSource,
    Base,
    Candidate,
    CandidateTag,
    Company,
    EvaluationRequest,
    Follower,
    Format,
    MessageSource,
    MessageState,
    Move,
    MoveAction,
    Note,
    PoolMember,
    ReceivedEvent,
    Task,
    User,
    table,
)
from store.moves import REPLIED, apply, stage_email_key
from store.session import SessionFactory, locking, transaction
from workflows.contracts import (
    ActionFailure,
    ExitReason,
    PlannedAction,
    SendOutcome,
    SendResult,
    StageActionsInput,
)

_ACTIONS, _MOVES, _CANDIDATES = table(MoveAction), table(Move), table(Candidate)
_COMPANIES, _USERS, _EVENTS = table(Company), table(User), table(ReceivedEvent)

# The action with its move and (outer-joined: one whose row is gone counts as erased) its
# candidate, locked (PostgreSQL): a cancel updates the action, so it waits for this
# transaction or this one for it (store/moves.py).
_ACTION = locking(
    select(
        _ACTIONS.c.id,
        _ACTIONS.c.company_id,
        _ACTIONS.c.kind,
        _ACTIONS.c.settings,
        _ACTIONS.c.state,
        _ACTIONS.c.reason,
        _ACTIONS.c.unless_replied,
        _MOVES.c.job_id,
        _MOVES.c.candidate_id,
        _MOVES.c.created_at.label("moved_at"),
        _COMPANIES.c.time_zone,
        _CANDIDATES.c.id.label("candidate_present"),
        _CANDIDATES.c.erased_at,
    )
    .select_from(
        _ACTIONS.join(_MOVES, _MOVES.c.id == _ACTIONS.c.move_id)
        .join(_COMPANIES, _COMPANIES.c.id == _ACTIONS.c.company_id)
        .outerjoin(_CANDIDATES, _CANDIDATES.c.id == _MOVES.c.candidate_id)
    )
    .where(_ACTIONS.c.id == bindparam("action_id")),
    of=_ACTIONS,
)

_FINISH = (
    update(_ACTIONS)
    .where(_ACTIONS.c.id == bindparam("action_id"), _ACTIONS.c.state == ActionState.PENDING)
    .values(state=bindparam("new_state"), reason=bindparam("why"), finished_at=bindparam("at"))
)

# The API starts a move's workflow right before it commits the move: one not in the store
# this long after it was made was rolled back.
NEVER_COMMITTED = timedelta(minutes=10)
NEVER_COMMITTED_TYPE = "MoveNeverCommitted"

# An e-mail action's content: the company, the sender and the candidate, in one query.
_CONTENT = select(*COMPOSED).where(
    _COMPANIES.c.id == bindparam("company_id"),
    _USERS.c.id == bindparam("sender_id"),
    _USERS.c.company_id == _COMPANIES.c.id,
    _CANDIDATES.c.id == bindparam("candidate_id"),
    _CANDIDATES.c.company_id == _COMPANIES.c.id,
)


# A reply of the candidate since the move, which ends a rule that waits for none (the
# event's route cancels such rules too; this sees a reply recorded with an earlier time).
_REPLIED = (
    select(_EVENTS.c.id)
    .where(
        _EVENTS.c.candidate_id == bindparam("candidate_id"),
        _EVENTS.c.type == ExitReason.REPLIED.value,
        _EVENTS.c.occurred_at >= bindparam("since"),
    )
    .limit(1)
)


async def _pending(session: AsyncSession, action_id: int) -> tuple[RowMapping | None, str | None]:
    """The action (locked) if it may still run, else why not: no longer pending, or its
    candidate erased, or (a rule's that waits for no reply) the candidate replied; then
    it is cancelled for that."""
    connection = await session.connection()
    found = (await connection.execute(_ACTION, {"action_id": action_id})).first()
    if found is None:
        return None, "its move is gone"
    row = found._mapping
    if row["state"] is not ActionState.PENDING:
        return None, row["reason"] or row["state"].value
    why = None
    if row["candidate_present"] is None or row["erased_at"] is not None:
        why = ERASED
    elif row["unless_replied"]:
        since = {"candidate_id": row["candidate_id"], "since": row["moved_at"]}
        if (await connection.execute(_REPLIED, since)).first() is not None:
            why = REPLIED
    if why is not None:
        await _finish(session, action_id, ActionState.CANCELLED, why)
        return None, why
    return row, None


async def _finish(
    session: AsyncSession, action_id: int, state: ActionState, why: str | None
) -> None:
    await (await session.connection()).execute(
        _FINISH, {"action_id": action_id, "new_state": state, "why": why, "at": now()}
    )


@dataclass
class _EmailSource:
    """A move's e-mail action, to the candidate's own address, from its sender."""

    action: PlannedAction
    settings: Settings
    _row: RowMapping | None = field(default=None, init=False)

    @property
    def key(self) -> str:
        return stage_email_key(self.action.id)

    @property
    def due(self) -> datetime | None:
        return self.action.due_at

    async def stop(self, session: AsyncSession) -> SendResult | None:
        row, why = await _pending(session, self.action.id)
        if row is None:
            return SendResult(SendOutcome.WITHDRAWN, why=why)
        self._row = row
        return None

    async def new_message(self, session: AsyncSession) -> dict[str, Any] | None:
        row = self._row
        assert row is not None, "written once `stop` has let the send go"
        return {
            "company_id": row["company_id"],
            "idempotency_key": self.key,
            "message_id": message_id_for(self.key, self.settings.mail_domain),
            "source_kind": MessageSource.STAGE_ACTION,
            "source_id": self.action.id,
            "candidate_id": row["candidate_id"],
            "state": MessageState.PREPARED,
            "scheduled_at": self.action.due_at,
        }

    async def content(self, session: AsyncSession, message: MessageRow) -> Content:
        row = self._row
        if row is None:
            # A retry that found its message written reads the action afresh.
            await self.stop(session)
            row = self._row
        assert row is not None
        settings = row["settings"]
        found = (
            await (await session.connection()).execute(
                _CONTENT,
                {
                    "company_id": row["company_id"],
                    "sender_id": settings["sender_user_id"],
                    "candidate_id": row["candidate_id"],
                },
            )
        ).first()
        if found is None:
            raise ApplicationError(
                f"The sender or the candidate of action {self.action.id} is gone.",
                non_retryable=True,
            )
        return compose(
            found._mapping,
            self.settings,
            message,
            subject=settings["subject"],
            body=settings["body"],
            branded=settings.get("format") == Format.BRANDED.value,
            unsubscribe=False,
        )

    async def settled(self, session: AsyncSession) -> None:
        connection = await session.connection()
        found = (
            await connection.execute(
                select(MESSAGES.c.state, MESSAGES.c.error).where(
                    MESSAGES.c.idempotency_key == self.key
                )
            )
        ).first()
        if found is None:
            return
        state, error = found
        if state in (MessageState.SENT, MessageState.UNCONFIRMED):
            await _finish(session, self.action.id, ActionState.DONE, error)
        elif state is MessageState.FAILED:
            await _finish(session, self.action.id, ActionState.FAILED, error)


class StageActionActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        mailer: Mailer,
        settings: Settings,
        templates: TemplateSandbox,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._delivery = Delivery(sessions, mailer, templates)

    @activity.defn(name="plan_stage_actions")
    async def plan_stage_actions(self, input: StageActionsInput) -> list[PlannedAction]:
        """The move's pending actions, in the order they come. The workflow starts before
        the move commits: until it has, this asks to be tried again."""
        async with self._sessions() as session:
            move = await session.scalar(
                select(Move.id).where(Move.id == input.move_id, Move.key == input.move_key)
            )
            if move is None:
                if input.moved_at is not None and now() - input.moved_at > NEVER_COMMITTED:
                    raise ApplicationError(
                        f"Move {input.move_id} was never committed.",
                        type=NEVER_COMMITTED_TYPE,
                        non_retryable=True,
                    )
                raise ApplicationError(f"Move {input.move_id} is not committed yet.")
            rows = await session.execute(
                select(MoveAction.id, MoveAction.kind, MoveAction.due_at)
                .where(MoveAction.move_id == move, MoveAction.state == ActionState.PENDING)
                .order_by(MoveAction.due_at, MoveAction.position)
            )
            return [PlannedAction(id, kind.value, due_at) for id, kind, due_at in rows]

    @activity.defn(name="run_stage_action")
    async def run_stage_action(self, action: PlannedAction) -> str:
        """Runs the action if it is still pending; answers its state afterwards."""
        if action.kind == ActionKind.EMAIL.value:
            result = await self._delivery.send(_EmailSource(action, self._settings))
            return result.outcome.value
        async with transaction(self._sessions) as session:
            row, why = await _pending(session, action.id)
            if row is None:
                return f"not run: {why}"
            await _effect(session, row)
            await _finish(session, action.id, ActionState.DONE, None)
            return ActionState.DONE.value

    @activity.defn(name="record_stage_action_failure")
    async def record_stage_action_failure(self, failure: ActionFailure) -> None:
        """After the last retry: the action is failed with the last error (an e-mail's
        message ends too: failed, or unconfirmed if it had been handed to the peer)."""
        if failure.action.kind == ActionKind.EMAIL.value:
            await self._delivery.give_up(_EmailSource(failure.action, self._settings))
        async with transaction(self._sessions) as session:
            await _finish(session, failure.action.id, ActionState.FAILED, failure.error)


async def _effect(session: AsyncSession, row: RowMapping) -> None:
    """What an action other than an e-mail writes, marked with the action's id (so it
    reads as automatic, and a retry finds it written). Notes and evaluation requests it
    makes have no author; a follower, tag, pool or job the candidate already has is kept
    as it is."""
    connection = await session.connection()
    settings = row["settings"]
    kind = row["kind"]
    made = {
        "company_id": row["company_id"],
        "candidate_id": row["candidate_id"],
        "created_at": now(),
    }
    automatic = {**made, "move_action_id": row["id"]}
    if kind is ActionKind.NOTE:
        await connection.execute(
            insert(table(Note)).values(
                **automatic, job_id=row["job_id"], text=settings["text"], author_user_id=None
            )
        )
    elif kind is ActionKind.TASK:
        await connection.execute(
            insert(table(Task)).values(
                **automatic,
                job_id=row["job_id"],
                assignee_user_id=settings["assignee_user_id"],
                title=settings["title"],
                due_on=_due_on(settings, row),
            )
        )
    elif kind is ActionKind.EVALUATION:
        await connection.execute(
            insert(table(EvaluationRequest)).values(
                **automatic,
                job_id=row["job_id"],
                evaluator_user_id=settings["evaluator_user_id"],
                requested_by_user_id=None,
            )
        )
    elif kind is ActionKind.TAGS:
        await _add_new(connection, CandidateTag, CandidateTag.tag, settings["tags"], automatic)
    elif kind is ActionKind.FOLLOWERS:
        await _add_new(connection, Follower, Follower.user_id, settings["user_ids"], automatic)
    elif kind is ActionKind.ASSIGN and settings.get("talent_pool_id") is not None:
        pool = settings["talent_pool_id"]
        await _add_new(
            connection, PoolMember, PoolMember.candidate_id, [row["candidate_id"]],
            {**automatic, "pool_id": pool}, PoolMember.pool_id == pool,
        )  # fmt: skip
    elif kind is ActionKind.ASSIGN:
        await _assign_to_job(session, row, settings["job_id"])
    else:
        raise ApplicationError(f"Unknown action kind {kind}.", non_retryable=True)


def _due_on(settings: dict[str, Any], row: RowMapping) -> date:
    """A task's day: the one given, or N days after the day the action runs (the
    company's calendar)."""
    if settings.get("due_on"):
        return date.fromisoformat(settings["due_on"])
    today = now().astimezone(ZoneInfo(row["time_zone"])).date()
    return today + timedelta(days=int(settings["due_in_days"]))


async def _add_new(
    connection: AsyncConnection,
    model: type[Base],
    column: Any,
    values: list[Any],
    fields: dict[str, Any],
    *where: Any,
) -> None:
    """One row per value the candidate does not have yet (a tag, a follower, a pool)."""
    owner = getattr(model, "candidate_id") == fields["candidate_id"]  # noqa: B009
    have = set(await connection.scalars(select(column).where(owner, *where)))
    for value in values:
        if value not in have:
            have.add(value)
            await connection.execute(insert(table(model)).values({**fields, column.key: value}))


async def _assign_to_job(session: AsyncSession, row: RowMapping, job_id: int) -> None:
    """The candidate applies to `job_id` as assigned: its first stage's actions do not
    run (no chain of automatic moves), and a candidate already there stays as they are."""
    company = await session.get_one(Company, row["company_id"])
    try:
        decision = await apply(
            session, company, job_id, row["candidate_id"], ApplicationSource.ASSIGNED,
            mover=None, now=now(),
        )  # fmt: skip
    except ConflictError:
        return
    except NotFoundError as error:
        raise ApplicationError(str(error), non_retryable=True) from None
    application = await session.get_one(Application, decision.move.application_id)
    application.move_action_id = row["id"]
    await session.flush()
