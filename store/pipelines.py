"""Pipelines: a company's default one and each job's own, their stages with the automatic
actions and time-based rules they carry, and the company's disqualification reasons with
theirs. A job copies the default when it is created; editing the default afterwards
changes only the jobs created later. A new company's default pipeline and reasons come
with ready examples it can edit (`EXAMPLES`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from mail.sandbox import TemplateSandbox
from store.campaigns import check_email
from store.models import (
    ActionKind,
    Application,
    Company,
    DisqualificationReason,
    Job,
    Move,
    Role,
    Stage,
    StageAction,
    StageRule,
    TalentPool,
    User,
)
from workflows import timing

DEFAULT_STAGES = ("Applied", "Screening", "Interview", "Offer", "Hired")
MAX_STAGES = 30
MAX_ACTIONS = 20
MAX_DELAY_HOURS = 24 * 30
MAX_DELAY_DAYS = 365
MAX_RULES = 5
MAX_REASONS = 30


@dataclass(frozen=True)
class ActionSpec:
    """An action as a request describes it (its shape already checked by the API)."""

    kind: ActionKind
    settings: dict[str, Any]
    delay_hours: int | None = None
    delay_days: int | None = None
    at_local: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    """A time-based rule: `after_days` days after the move into the stage, if the
    candidate is still there (and, with `unless_replied`, has not replied), the actions
    run. They carry no timing of their own."""

    after_days: int
    actions: Sequence[ActionSpec]
    unless_replied: bool = False


@dataclass(frozen=True)
class StageSpec:
    """A stage as a request describes it: `id` keeps an existing stage (its candidates and
    history stay with it); without one the stage is new."""

    name: str
    actions: Sequence[ActionSpec] = ()
    rules: Sequence[RuleSpec] = ()
    id: int | None = None


@dataclass(frozen=True)
class ReasonSpec:
    """A disqualification reason as a request describes it: `id` keeps an existing one."""

    name: str
    actions: Sequence[ActionSpec] = ()
    id: int | None = None


@dataclass
class RuleView:
    rule: StageRule
    actions: list[StageAction] = field(default_factory=list)


@dataclass
class StageView:
    stage: Stage
    actions: list[StageAction] = field(default_factory=list)
    rules: list[RuleView] = field(default_factory=list)


@dataclass
class ReasonView:
    reason: DisqualificationReason
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


def _timings(action: ActionSpec) -> list[object]:
    return [v for v in (action.delay_hours, action.delay_days, action.at_local) if v]


async def _check_actions(
    company: Company,
    actions: Sequence[ActionSpec],
    holder: str,
    templates: TemplateSandbox,
    *,
    timed: bool = True,
) -> None:
    """Each action's timing (at most one; none in a rule, which has its moment) and each
    e-mail's subject and body."""
    if len(actions) > MAX_ACTIONS:
        raise ValidationError(f"{holder.capitalize()}: at most {MAX_ACTIONS} actions.")
    for number, action in enumerate(actions, start=1):
        where = f"action {number} of {holder}"
        timings = _timings(action)
        if not timed and timings:
            raise ValidationError(
                f"{where.capitalize()} runs when its rule fires: give it no delay_hours, "
                "delay_days or at."
            )
        if len(timings) > 1:
            raise ValidationError(
                f"{where.capitalize()} has more than one of delay_hours, delay_days and at: "
                "give at most one."
            )
        if action.at_local:
            local_at(action.at_local)
        if action.kind is ActionKind.EMAIL:
            settings = action.settings
            await check_email(
                company, settings["subject"], settings["body"], where, templates,
                unsubscribe=False,
            )  # fmt: skip


def _unique_names(names: Sequence[str], what: str) -> None:
    folded = [name.strip().casefold() for name in names]
    for index, name in enumerate(folded):
        if name in folded[:index]:
            raise ValidationError(f"{what} {index + 1}: the name '{names[index]}' is taken.")


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
    _unique_names([spec.name for spec in specs], "Stage")
    first = specs[0]
    for number, action in enumerate(
        [*first.actions, *(a for rule in first.rules for a in rule.actions)], start=1
    ):
        if action.kind is ActionKind.EMAIL and action.settings.get("sender_user_id") is None:
            raise ValidationError(
                f"Action {number} of the first stage ('{first.name}') sends an e-mail: name "
                "its sender (sender_user_id), since applications come from backend services, "
                "not from a user who moves the candidate."
            )
    for spec in specs:
        await _check_actions(company, spec.actions, f"stage '{spec.name}'", templates)
        if len(spec.rules) > MAX_RULES:
            raise ValidationError(f"Stage '{spec.name}': at most {MAX_RULES} rules.")
        for number, rule in enumerate(spec.rules, start=1):
            holder = f"rule {number} of stage '{spec.name}'"
            if not rule.actions:
                raise ValidationError(f"{holder.capitalize()} has no action.")
            await _check_actions(company, rule.actions, holder, templates, timed=False)


async def check_reasons(
    company: Company, specs: Sequence[ReasonSpec], templates: TemplateSandbox
) -> None:
    """The disqualification reasons' rules that need no store (as `check_stages`)."""
    if len(specs) > MAX_REASONS:
        raise ValidationError(f"A company has at most {MAX_REASONS} disqualification reasons.")
    _unique_names([spec.name for spec in specs], "Reason")
    for spec in specs:
        await _check_actions(company, spec.actions, f"reason '{spec.name}'", templates)


# Where an action's settings name a teammate, a job or a talent pool.
_USER_SETTINGS = ("sender_user_id", "assignee_user_id", "evaluator_user_id")


def _users_named(action: ActionSpec) -> list[int]:
    named = [action.settings.get(key) for key in _USER_SETTINGS]
    named += action.settings.get("user_ids") or []
    return [user for user in named if user is not None]


async def _check_references(
    session: AsyncSession, company_id: int, held: Iterable[tuple[str, Sequence[ActionSpec]]]
) -> None:
    """Every teammate, job and talent pool the actions name is the company's."""
    users = set(await session.scalars(select(User.id).where(User.company_id == company_id)))
    jobs = set(await session.scalars(select(Job.id).where(Job.company_id == company_id)))
    pools = set(
        await session.scalars(select(TalentPool.id).where(TalentPool.company_id == company_id))
    )
    for holder, actions in held:
        for number, action in enumerate(actions, start=1):
            where = f"action {number} of {holder}"
            for user in _users_named(action):
                if user not in users:
                    raise ValidationError(
                        f"The {action.kind.value} {where} names user {user}, who is not a "
                        "user of this company."
                    )
            job, pool = action.settings.get("job_id"), action.settings.get("talent_pool_id")
            if job is not None and job not in jobs:
                raise ValidationError(f"The assignment {where} names job {job}: no such job.")
            if pool is not None and pool not in pools:
                raise ValidationError(
                    f"The assignment {where} names talent pool {pool}: no such pool."
                )


def _held(specs: Sequence[StageSpec]) -> list[tuple[str, Sequence[ActionSpec]]]:
    held: list[tuple[str, Sequence[ActionSpec]]] = []
    for spec in specs:
        held.append((f"stage '{spec.name}'", spec.actions))
        for number, rule in enumerate(spec.rules, start=1):
            held.append((f"rule {number} of stage '{spec.name}'", rule.actions))
    return held


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
    if not views:
        return []
    rules: dict[int, RuleView] = {}
    for rule in await session.scalars(
        select(StageRule)
        .where(StageRule.stage_id.in_(views))
        .order_by(StageRule.stage_id, StageRule.position)
    ):
        rules[rule.id] = RuleView(rule)
        views[rule.stage_id].rules.append(rules[rule.id])
    actions = await session.scalars(
        select(StageAction)
        .where(StageAction.stage_id.in_(views))
        .order_by(StageAction.stage_id, StageAction.position)
    )
    for action in actions:
        assert action.stage_id is not None
        if action.rule_id is None:
            views[action.stage_id].actions.append(action)
        else:
            rules[action.rule_id].actions.append(action)
    return list(views.values())


def _of_job(job_id: int | None) -> Any:
    return Stage.job_id.is_(None) if job_id is None else Stage.job_id == job_id


# The ready examples a new company gets, and can edit (SPEC.md §2, §3): an acknowledgement
# on the first stage, a follow-up 7 days after the interview if the candidate has not
# replied, and a considerate rejection sent two days after a disqualification, never
# minutes after the application.
ACKNOWLEDGEMENT = ActionSpec(
    ActionKind.EMAIL,
    {
        "subject": "We received your application, {{ first_name }}",
        "body": (
            "Hello {{ first_name }},\n\n"
            "Thank you for applying to {{ company_name }}. We have your application and "
            "read every one ourselves: expect an answer within two weeks.\n\n"
            "What comes next: if your profile matches the role, we will invite you to a "
            "first conversation; either way, we will let you know.\n\n"
            "{{ sender_name }}"
        ),
        "format": "plain",
    },
)
INTERVIEW_FOLLOW_UP = RuleSpec(
    after_days=7,
    unless_replied=True,
    actions=(
        ActionSpec(
            ActionKind.EMAIL,
            {
                "subject": "Following up on your interview, {{ first_name }}",
                "body": (
                    "Hello {{ first_name }},\n\n"
                    "Thank you again for your time with us last week. Do you have any "
                    "question about the role or the next steps? Simply reply to this "
                    "e-mail.\n\n{{ sender_name }}"
                ),
                "format": "plain",
                "sender_user_id": None,
            },
        ),
    ),
)
REJECTION = ActionSpec(
    ActionKind.EMAIL,
    {
        "subject": "Your application to {{ company_name }}",
        "body": (
            "Hello {{ first_name }},\n\n"
            "Thank you for the time you gave your application. We have decided not to "
            "take it further for this role: this is no judgement on your worth, only on "
            "the fit with what the team needs today.\n\n"
            "We would like to keep you in our talent pool and think of you for the roles "
            "to come; if you would rather we did not, reply and tell us.\n\n"
            "{{ sender_name }}"
        ),
        "format": "plain",
        "sender_user_id": None,
    },
    delay_days=2,
)
DEFAULT_REASONS = ("Not the right fit for this role", "Withdrew", "Position filled")


async def _example_sender(session: AsyncSession, company_id: int) -> int | None:
    """Who a first-stage example e-mail comes from: the company's first admin."""
    return await session.scalar(
        select(User.id)
        .where(User.company_id == company_id, User.role == Role.ADMIN)
        .order_by(User.id)
        .limit(1)
    )


async def _claim(session: AsyncSession, company: Company, flag: Any) -> bool:
    """Whether this transaction is the one to make the company's examples of `flag`: one
    statement, so two first requests at once make them once (the other waits for the
    row, then finds it claimed)."""
    claimed = await session.execute(
        update(Company)
        .where(Company.id == company.id, flag.is_(False))
        .values({flag: True})
        .returning(Company.id)
        .execution_options(synchronize_session=False)
    )
    return claimed.first() is not None


async def default_pipeline(session: AsyncSession, company: Company) -> list[StageView]:
    """The company's default pipeline, made on first use from DEFAULT_STAGES with the
    ready examples (the acknowledgement only once the company has an admin to send it)."""
    views = await stages_of(session, company.id, None)
    if views or not await _claim(session, company, Company.default_pipeline_made):
        return views or await stages_of(session, company.id, None)
    sender = await _example_sender(session, company.id)
    for position, name in enumerate(DEFAULT_STAGES):
        stage = Stage(company_id=company.id, job_id=None, position=position, name=name)
        session.add(stage)
        await session.flush()
        if position == 0 and sender is not None:
            ack = ActionSpec(
                ACKNOWLEDGEMENT.kind, {**ACKNOWLEDGEMENT.settings, "sender_user_id": sender}
            )
            session.add(_stored(ack, stage, 0))
        if name == "Interview":
            await _add_rule(session, stage, INTERVIEW_FOLLOW_UP, 0)
    await session.flush()
    return await stages_of(session, company.id, None)


async def _add_rule(
    session: AsyncSession, stage: Stage, spec: RuleSpec | RuleView, position: int
) -> None:
    """A rule of `stage`: one a request describes, or a copy of another stage's."""
    rule = StageRule(
        company_id=stage.company_id,
        stage_id=stage.id,
        position=position,
        after_days=spec.rule.after_days if isinstance(spec, RuleView) else spec.after_days,
        unless_replied=(
            spec.rule.unless_replied if isinstance(spec, RuleView) else spec.unless_replied
        ),
    )
    session.add(rule)
    await session.flush()
    actions: Sequence[ActionSpec | StageAction] = spec.actions
    for number, action in enumerate(actions):
        session.add(_stored(action, stage, number, rule_id=rule.id))


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
        for rule in view.rules:
            await _add_rule(session, stage, rule, rule.rule.position)
    await session.flush()
    return job


def _stored(
    action: ActionSpec | StageAction,
    holder: Stage | DisqualificationReason,
    position: int,
    *,
    rule_id: int | None = None,
) -> StageAction:
    """An action of a stage (of its rule `rule_id`) or of a disqualification reason, at
    `position`: one a request describes, or a copy of another stage's."""
    return StageAction(
        company_id=holder.company_id,
        stage_id=holder.id if isinstance(holder, Stage) else None,
        reason_id=holder.id if isinstance(holder, DisqualificationReason) else None,
        rule_id=rule_id,
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
    for index, spec in enumerate(specs):
        if spec.id is not None and spec.id not in by_id:
            raise ValidationError(f"Stage {index + 1}: stage {spec.id} is not in this pipeline.")
    await _check_references(session, company.id, _held(specs))
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
        await session.execute(delete(StageRule).where(StageRule.stage_id.in_(removed)))
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
        await session.execute(delete(StageRule).where(StageRule.stage_id == stage.id))
        for number, action in enumerate(spec.actions):
            session.add(_stored(action, stage, number))
        for number, rule in enumerate(spec.rules):
            await _add_rule(session, stage, rule, number)
    await session.flush()
    return await stages_of(session, company.id, job_id)


async def _in_use(session: AsyncSession, stage_id: int) -> bool:
    held = exists().where(Application.stage_id == stage_id)
    moved = exists().where((Move.to_stage_id == stage_id) | (Move.from_stage_id == stage_id))
    return bool(await session.scalar(select(held | moved)))


# -- disqualification reasons -------------------------------------------------------------


async def reasons_of(session: AsyncSession, company: Company) -> list[ReasonView]:
    """The company's disqualification reasons in order, each with its actions; made on
    first use from DEFAULT_REASONS, the first with the considerate rejection."""
    reasons = list(
        await session.scalars(
            select(DisqualificationReason)
            .where(DisqualificationReason.company_id == company.id)
            .order_by(DisqualificationReason.position)
        )
    )
    if not reasons and await _claim(session, company, Company.reasons_made):
        for position, name in enumerate(DEFAULT_REASONS):
            reason = DisqualificationReason(company_id=company.id, position=position, name=name)
            session.add(reason)
            await session.flush()
            if position == 0:
                session.add(_stored(REJECTION, reason, 0))
            reasons.append(reason)
        await session.flush()
    views = {reason.id: ReasonView(reason) for reason in reasons}
    for action in await session.scalars(
        select(StageAction)
        .where(StageAction.reason_id.in_(views))
        .order_by(StageAction.reason_id, StageAction.position)
    ):
        assert action.reason_id is not None
        views[action.reason_id].actions.append(action)
    return list(views.values())


async def get_reason(session: AsyncSession, company: Company, reason_id: int) -> ReasonView:
    for view in await reasons_of(session, company):
        if view.reason.id == reason_id:
            return view
    raise NotFoundError(f"Disqualification reason {reason_id} does not exist.")


async def replace_reasons(
    session: AsyncSession, company: Company, specs: Sequence[ReasonSpec]
) -> list[ReasonView]:
    """The company's reasons become `specs` (which `check_reasons` has passed); one that
    disqualified someone cannot be removed."""
    current = {view.reason.id: view.reason for view in await reasons_of(session, company)}
    for index, spec in enumerate(specs):
        if spec.id is not None and spec.id not in current:
            raise ValidationError(f"Reason {index + 1}: reason {spec.id} is not this company's.")
    await _check_references(
        session, company.id, [(f"reason '{spec.name}'", spec.actions) for spec in specs]
    )
    kept = {spec.id for spec in specs if spec.id is not None}
    for reason in current.values():
        used = exists().where(Move.disqualification_reason_id == reason.id)
        if reason.id not in kept and await session.scalar(select(used)):
            raise ConflictError(
                f"Reason {reason.id} ('{reason.name}') disqualified candidates: it cannot be "
                "removed (rename it instead)."
            )
    removed = [reason_id for reason_id in current if reason_id not in kept]
    if removed:
        await session.execute(delete(StageAction).where(StageAction.reason_id.in_(removed)))
        await session.execute(
            delete(DisqualificationReason).where(DisqualificationReason.id.in_(removed))
        )
    for position, spec in enumerate(specs):
        if spec.id is None:
            reason = DisqualificationReason(
                company_id=company.id, position=position, name=spec.name.strip()
            )
            session.add(reason)
        else:
            reason = current[spec.id]
            reason.position, reason.name = position, spec.name.strip()
        await session.flush()
        await session.execute(delete(StageAction).where(StageAction.reason_id == reason.id))
        for number, action in enumerate(spec.actions):
            session.add(_stored(action, reason, number))
    await session.flush()
    return await reasons_of(session, company)


# -- talent pools -------------------------------------------------------------------------


async def create_pool(session: AsyncSession, company_id: int, name: str) -> TalentPool:
    taken = await session.scalar(
        select(TalentPool.id).where(
            TalentPool.company_id == company_id, TalentPool.name == name.strip()
        )
    )
    if taken is not None:
        raise ConflictError(f"The talent pool '{name.strip()}' exists already (pool {taken}).")
    pool = TalentPool(company_id=company_id, name=name.strip())
    session.add(pool)
    await session.flush()
    return pool


async def pools_of(session: AsyncSession, company_id: int) -> list[TalentPool]:
    return list(
        await session.scalars(
            select(TalentPool).where(TalentPool.company_id == company_id).order_by(TalentPool.id)
        )
    )
