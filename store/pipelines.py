"""Pipelines: a company's default one and each job's own, their stages and the automatic
actions the stages carry. A job copies the default when it is created; editing the
default afterwards changes only the jobs created later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from mail.sandbox import TemplateSandbox
from store.campaigns import check_email
from store.models import (
    ActionKind,
    Application,
    Company,
    Job,
    Move,
    Stage,
    StageAction,
    User,
)
from workflows import timing

DEFAULT_STAGES = ("Applied", "Screening", "Interview", "Offer", "Hired")
MAX_STAGES = 30
MAX_ACTIONS = 20
MAX_DELAY_HOURS = 24 * 30
MAX_DELAY_DAYS = 365


@dataclass(frozen=True)
class ActionSpec:
    """An action as a request describes it (its shape already checked by the API)."""

    kind: ActionKind
    settings: dict[str, Any]
    delay_hours: int | None = None
    delay_days: int | None = None
    at_local: str | None = None


@dataclass(frozen=True)
class StageSpec:
    """A stage as a request describes it: `id` keeps an existing stage (its candidates and
    history stay with it); without one the stage is new."""

    name: str
    actions: Sequence[ActionSpec] = ()
    id: int | None = None


@dataclass
class StageView:
    stage: Stage
    actions: list[StageAction] = field(default_factory=list)


def local_at(text: str) -> tuple[date, time]:
    """`YYYY-MM-DDTHH:MM`, a local date and time, or a sentence saying what is wrong."""
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M")
    except ValueError:
        raise ValidationError(
            f"'{text}' is not a local date and time: write YYYY-MM-DDTHH:MM, e.g. "
            "2027-01-15T09:00 (the company's time zone)"
        ) from None
    return moment.date(), moment.time()


def due_at(
    moved_at: datetime,
    tz: str,
    *,
    delay_hours: int | None,
    delay_days: int | None,
    at_local: str | None,
) -> datetime:
    """When an action of a move made at `moved_at` runs: at once, hours later, days later
    at the same local time (09:00 stays 09:00 across DST), or at a local date and time."""
    if delay_hours:
        return timing.after_hours(moved_at, delay_hours)
    if delay_days:
        return timing.after_days(moved_at, delay_days, tz)
    if at_local:
        day, at = local_at(at_local)
        return max(moved_at, timing.local_moment(day, at, tz))
    return moved_at


async def check_stages(
    company: Company, specs: Sequence[StageSpec], templates: TemplateSandbox
) -> None:
    """Every rule of a pipeline that needs no store: counts, names, timings, and each
    e-mail's subject and body. Templates take seconds, in `templates`' processes: call
    this with no transaction open (store/campaigns.py does the same for touchpoints)."""
    if not specs:
        raise ValidationError("A pipeline has at least one stage.")
    if len(specs) > MAX_STAGES:
        raise ValidationError(f"A pipeline has at most {MAX_STAGES} stages.")
    names = [spec.name.strip().casefold() for spec in specs]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValidationError(f"Stage {index + 1}: the name '{specs[index].name}' is taken.")
    for number, action in enumerate(specs[0].actions, start=1):
        if action.kind is ActionKind.EMAIL and action.settings.get("sender_user_id") is None:
            raise ValidationError(
                f"Action {number} of the first stage ('{specs[0].name}') sends an e-mail: name "
                "its sender (sender_user_id), since applications come from backend services, "
                "not from a user who moves the candidate."
            )
    for index, spec in enumerate(specs):
        if len(spec.actions) > MAX_ACTIONS:
            raise ValidationError(f"Stage {index + 1}: at most {MAX_ACTIONS} actions.")
        for number, action in enumerate(spec.actions, start=1):
            where = f"action {number} of stage '{spec.name}'"
            timings = [v for v in (action.delay_hours, action.delay_days, action.at_local) if v]
            if len(timings) > 1:
                raise ValidationError(
                    f"{where} has more than one of delay_hours, delay_days and at: give at "
                    "most one."
                )
            if action.at_local:
                local_at(action.at_local)
            if action.kind is ActionKind.EMAIL:
                settings = action.settings
                await check_email(
                    company, settings["subject"], settings["body"], where, templates,
                    unsubscribe=False,
                )  # fmt: skip


async def stages_of(session: AsyncSession, company_id: int, job_id: int | None) -> list[StageView]:
    """A pipeline's stages in order, each with its actions in order."""
    stages = (
        await session.scalars(
            select(Stage)
            .where(Stage.company_id == company_id, _of_job(job_id))
            .order_by(Stage.position)
        )
    ).all()
    views = {stage.id: StageView(stage) for stage in stages}
    if views:
        actions = await session.scalars(
            select(StageAction)
            .where(StageAction.stage_id.in_(views))
            .order_by(StageAction.stage_id, StageAction.position)
        )
        for action in actions:
            views[action.stage_id].actions.append(action)
    return list(views.values())


def _of_job(job_id: int | None) -> Any:
    return Stage.job_id.is_(None) if job_id is None else Stage.job_id == job_id


async def default_pipeline(session: AsyncSession, company: Company) -> list[StageView]:
    """The company's default pipeline, made on first use from DEFAULT_STAGES."""
    views = await stages_of(session, company.id, None)
    if views:
        return views
    for position, name in enumerate(DEFAULT_STAGES):
        session.add(Stage(company_id=company.id, job_id=None, position=position, name=name))
    await session.flush()
    return await stages_of(session, company.id, None)


async def get_job(session: AsyncSession, company_id: int, job_id: int) -> Job:
    job = await session.scalar(select(Job).where(Job.company_id == company_id, Job.id == job_id))
    if job is None:
        raise NotFoundError(f"Job {job_id} does not exist.")
    return job


async def create_job(session: AsyncSession, company: Company, title: str) -> Job:
    """A job with a copy of the default pipeline as it is now."""
    default = await default_pipeline(session, company)
    job = Job(company_id=company.id, title=title)
    session.add(job)
    await session.flush()
    for view in default:
        stage = Stage(
            company_id=company.id, job_id=job.id, position=view.stage.position, name=view.stage.name
        )
        session.add(stage)
        await session.flush()
        for action in view.actions:
            session.add(_stored(action, stage, action.position))
    await session.flush()
    return job


def _stored(action: ActionSpec | StageAction, stage: Stage, position: int) -> StageAction:
    """An action of `stage`, at `position`: one a request describes, or a copy of another
    stage's (a new job's copy of the default)."""
    return StageAction(
        company_id=stage.company_id,
        stage_id=stage.id,
        position=position,
        kind=action.kind,
        delay_hours=action.delay_hours or None,
        delay_days=action.delay_days or None,
        at_local=action.at_local or None,
        settings=dict(action.settings),
    )


async def replace_stages(
    session: AsyncSession,
    company: Company,
    job_id: int | None,
    specs: Sequence[StageSpec],
) -> list[StageView]:
    """The pipeline becomes `specs` (which `check_stages` has passed), in that order. The
    first stage, where applications enter, stays first (it may be renamed); a stage that
    holds candidates or history cannot be removed. Everything is checked before anything
    is written."""
    current = (
        await default_pipeline(session, company)
        if job_id is None
        else await stages_of(session, company.id, job_id)
    )
    by_id = {view.stage.id: view.stage for view in current}
    users = set(await session.scalars(select(User.id).where(User.company_id == company.id)))
    for index, spec in enumerate(specs):
        if spec.id is not None and spec.id not in by_id:
            raise ValidationError(f"Stage {index + 1}: stage {spec.id} is not in this pipeline.")
        for number, action in enumerate(spec.actions, start=1):
            sender = action.settings.get("sender_user_id")
            if action.kind is ActionKind.EMAIL and sender is not None and sender not in users:
                raise ValidationError(
                    f"The sender of action {number} of stage '{spec.name}' is not a user of "
                    "this company."
                )
    first = current[0].stage
    if specs[0].id != first.id:
        raise ValidationError(
            f"The first stage is where applications enter: keep stage {first.id} "
            f"('{first.name}') first (it may be renamed)."
        )
    kept = {spec.id for spec in specs if spec.id is not None}
    for stage in by_id.values():
        if stage.id not in kept and await _in_use(session, stage.id):
            raise ConflictError(
                f"Stage {stage.id} ('{stage.name}') has candidates or moves: it cannot be "
                "removed (rename it instead)."
            )
    removed = [stage_id for stage_id in by_id if stage_id not in kept]
    if removed:
        await session.execute(delete(StageAction).where(StageAction.stage_id.in_(removed)))
        await session.execute(delete(Stage).where(Stage.id.in_(removed)))
    for position, spec in enumerate(specs):
        if spec.id is None:
            stage = Stage(company_id=company.id, job_id=job_id, position=position, name=spec.name)
            session.add(stage)
        else:
            stage = by_id[spec.id]
            stage.position, stage.name = position, spec.name.strip()
        await session.flush()
        await session.execute(delete(StageAction).where(StageAction.stage_id == stage.id))
        for number, action in enumerate(spec.actions):
            session.add(_stored(action, stage, number))
    await session.flush()
    return await stages_of(session, company.id, job_id)


async def _in_use(session: AsyncSession, stage_id: int) -> bool:
    held = exists().where(Application.stage_id == stage_id)
    moved = exists().where((Move.to_stage_id == stage_id) | (Move.from_stage_id == stage_id))
    return bool(await session.scalar(select(held | moved)))
