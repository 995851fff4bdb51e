"""Pipelines and moves: the default pipeline, jobs and their own, disqualification reasons,
talent pools, applications entering a job, candidates moved between its stages (one at a
time, previewed, or in bulk) or disqualified, each move's actions as they run, and what
they left on the candidate's record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import (
    CallerDep,
    NowDep,
    SessionDep,
    SessionsDep,
    TemplatesDep,
    UserDep,
    WorkflowsDep,
)
from api.errors import answers
from api.idempotency import IdempotencyKey, fingerprint, once
from api.schemas import (
    ActionIn,
    ApplicationIn,
    BulkDisqualify,
    BulkDisqualifyMany,
    BulkMoveIn,
    BulkMoveOut,
    BulkMoveToStage,
    BulkPreviewIn,
    BulkPreviewOut,
    BulkResultOut,
    CancelledOut,
    DisqualifyIn,
    JobCreate,
    JobOut,
    Limit,
    MoveActionOut,
    MoveIn,
    MoveOut,
    Offset,
    PathId,
    PipelineIn,
    PipelineOut,
    PreviewOut,
    ReasonOut,
    ReasonsIn,
    ReasonsOut,
    RecordOut,
    RecordsOut,
    RuleIn,
    StageOut,
    TalentPoolIn,
    TalentPoolOut,
)
from errors import PermissionDeniedError, ValidationError
from store import moves as move_store
from store import pipelines as store
from store.companies import Caller, get_company
from store.models import (
    Company,
    Move,
    MoveAction,
    Role,
    StageAction,
    User,
)
from store.moves import BulkProgress, Cancelled, MoveDecision
from store.pipelines import ActionSpec, ReasonSpec, ReasonView, RuleSpec, StageSpec, StageView
from store.records import records_of
from store.session import dry_run, transaction
from workflows.contracts import bulk_move_workflow_id, stage_actions_workflow_id
from workflows.timing import local_label

router = APIRouter(tags=["pipelines"], responses=answers(401, 403, 422))


async def _configurer(session: AsyncSession, caller: Caller) -> None:
    """Admins configure automatic actions, and the users an admin allowed to."""
    if caller.role is Role.ADMIN:
        return
    if caller.user_id is not None:
        user = await session.get(User, caller.user_id)
        if user is not None and user.manages_automations:
            return
    raise PermissionDeniedError(
        "Only company admins and the users allowed to manage automatic actions can change "
        "pipelines, their actions and rules, disqualification reasons and talent pools."
    )


_ACTION = TypeAdapter(ActionIn)


def _action_in(action: StageAction) -> ActionIn:
    out: dict[str, Any] = {
        "kind": action.kind,
        "delay_hours": action.delay_hours,
        "delay_days": action.delay_days,
        "at": action.at_local,
        action.kind.value: action.settings,
    }
    return _ACTION.validate_python(out)


def _stage_out(view: StageView) -> StageOut:
    return StageOut(
        id=view.stage.id,
        name=view.stage.name,
        actions=[_action_in(a) for a in view.actions],
        rules=[
            RuleIn(
                after_days=rule.rule.after_days,
                unless_replied=rule.rule.unless_replied,
                actions=[_action_in(a) for a in rule.actions],
            )
            for rule in view.rules
        ],
    )


def _action_specs(actions: list[ActionIn]) -> list[ActionSpec]:
    return [
        ActionSpec(
            kind=action.kind,
            settings=action.settings(),
            delay_hours=action.delay_hours,
            delay_days=action.delay_days,
            at_local=action.at,
        )
        for action in actions
    ]


def _specs(body: PipelineIn) -> list[StageSpec]:
    return [
        StageSpec(
            id=stage.id,
            name=stage.name,
            actions=_action_specs(stage.actions),
            rules=[
                RuleSpec(
                    after_days=rule.after_days,
                    unless_replied=rule.unless_replied,
                    actions=_action_specs(rule.actions),
                )
                for rule in stage.rules
            ],
        )
        for stage in body.stages
    ]


async def _checked(
    session: SessionDep, caller: Caller, body: PipelineIn, templates: TemplatesDep
) -> tuple[Company, list[StageSpec]]:
    """The company and the stages asked for, checked with no transaction open: templates
    take seconds, and a transaction holds a connection of the pool from its first query."""
    async with session.begin():
        await _configurer(session, caller)
        company = await get_company(session, caller.company_id)
    specs = _specs(body)
    await store.check_stages(company, specs, templates)
    return company, specs


@router.get("/pipeline", response_model=PipelineOut)
async def get_default_pipeline(caller: UserDep, session: SessionDep) -> PipelineOut:
    """The company's default pipeline, which each new job copies."""
    async with session.begin():
        company = await get_company(session, caller.company_id)
        views = await store.default_pipeline(session, company)
        return PipelineOut(job_id=None, stages=[_stage_out(v) for v in views])


@router.put("/pipeline", response_model=PipelineOut, responses=answers(409))
async def put_default_pipeline(
    body: PipelineIn, caller: CallerDep, session: SessionDep, templates: TemplatesDep
) -> PipelineOut:
    """Replace the default pipeline: jobs created from now on copy it; existing jobs keep
    theirs."""
    company, specs = await _checked(session, caller, body, templates)
    async with session.begin():
        views = await store.replace_stages(session, company, None, specs)
        return PipelineOut(job_id=None, stages=[_stage_out(v) for v in views])


async def _job_out(session: SessionDep, company_id: int, job_id: int) -> JobOut:
    job = await store.get_job(session, company_id, job_id)
    views = await store.stages_of(session, company_id, job.id)
    return JobOut(
        id=job.id,
        title=job.title,
        created_at=job.created_at,
        stages=[_stage_out(v) for v in views],
    )


@router.post("/jobs", response_model=JobOut, status_code=201)
async def create_job(body: JobCreate, caller: CallerDep, session: SessionDep) -> JobOut:
    """A job, with a copy of the default pipeline as it is now."""
    async with session.begin():
        await _configurer(session, caller)
        company = await get_company(session, caller.company_id)
        job = await store.create_job(session, company, body.title)
        return await _job_out(session, company.id, job.id)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=answers(404))
async def get_job(job_id: PathId, caller: UserDep, session: SessionDep) -> JobOut:
    return await _job_out(session, caller.company_id, job_id)


@router.put("/jobs/{job_id}/pipeline", response_model=PipelineOut, responses=answers(404, 409))
async def put_job_pipeline(
    job_id: PathId,
    body: PipelineIn,
    caller: CallerDep,
    session: SessionDep,
    templates: TemplatesDep,
) -> PipelineOut:
    """Replace this job's pipeline, for this job alone."""
    async with session.begin():
        await _configurer(session, caller)
        await store.get_job(session, caller.company_id, job_id)  # 404 before the templates
    company, specs = await _checked(session, caller, body, templates)
    async with session.begin():
        views = await store.replace_stages(session, company, job_id, specs)
        return PipelineOut(job_id=job_id, stages=[_stage_out(v) for v in views])


def _action_out(action: MoveAction, tz: str, *, kept: bool = True) -> MoveActionOut:
    return MoveActionOut(
        id=action.id if kept else None,
        kind=action.kind,
        state=action.state,
        due_at=action.due_at,
        due_at_local=local_label(action.due_at, tz),
        rule_after_days=action.rule_after_days,
        unless_replied=action.unless_replied,
        reason=action.reason,
        finished_at=action.finished_at,
    )


def cancelled_out(cancelled: list[Cancelled]) -> list[CancelledOut]:
    return [
        CancelledOut(move_id=c.move_id, action_id=c.action_id, kind=c.kind, due_at=c.due_at)
        for c in cancelled
    ]


def _move_out(
    move: Move, actions: list[MoveAction], tz: str, cancelled: list[Cancelled] | None = None
) -> MoveOut:
    return MoveOut(
        id=move.id,
        job_id=move.job_id,
        candidate_id=move.candidate_id,
        from_stage_id=move.from_stage_id,
        to_stage_id=move.to_stage_id,
        disqualification_reason_id=move.disqualification_reason_id,
        run_actions=move.run_actions,
        created_at=move.created_at,
        workflow_id=(
            stage_actions_workflow_id(move.job_id, move.candidate_id, move.key) if actions else None
        ),
        actions=[_action_out(a, tz) for a in actions],
        cancelled=cancelled_out(cancelled or []),
    )


def _mover(caller: Caller) -> int | None:
    return caller.user_id if caller.role is not Role.SERVICE else None


@router.post(
    "/jobs/{job_id}/applications",
    response_model=MoveOut,
    status_code=201,
    responses=answers(404, 409, 503),
)
async def apply(
    job_id: PathId,
    body: ApplicationIn,
    request: Request,
    caller: CallerDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """A new application enters the job's first stage and runs its actions, unless it came
    by import or by a CV forwarded to the job's mailbox."""

    async def produce(session: AsyncSession) -> MoveOut:
        company = await get_company(session, caller.company_id)
        decision = await move_store.apply(
            session, company, job_id, body.candidate_id, body.source,
            mover=_mover(caller), now=now,
        )  # fmt: skip
        await workflows.start_move(decision)
        return _move_out(decision.move, decision.actions, company.time_zone)

    print_ = fingerprint("POST", request.url.path, body)
    return await once(sessions, caller.company_id, idempotency_key, print_, 201, produce)


Decide = Callable[[AsyncSession, Company], Awaitable[MoveDecision]]


async def _decided(
    request: Request,
    body: BaseModel,
    caller: Caller,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    idempotency_key: str | None,
    decide: Decide,
) -> JSONResponse:
    """A move or a disqualification: decided and its workflow started in one transaction
    that holds SQLite's write lock from its start (two moves of one candidate serialise),
    then the superseded moves' workflows told. A repeat of its Idempotency-Key answers the
    first answer."""
    decided: list[MoveDecision] = []

    async def produce(session: AsyncSession) -> MoveOut:
        company = await get_company(session, caller.company_id)
        decision = await decide(session, company)
        await workflows.start_move(decision)
        decided.append(decision)
        move = decision.move
        return _move_out(move, decision.actions, company.time_zone, decision.cancelled)

    print_ = fingerprint("POST", request.url.path, body)
    answer = await once(sessions, caller.company_id, idempotency_key, print_, 201, produce)
    for decision in decided:
        await workflows.tell_moves(decision.superseded, decision.why)
    return answer


async def _preview(sessions: SessionsDep, caller: Caller, decide: Decide) -> PreviewOut:
    """What `decide` would do now, decided by the same code in a transaction rolled back."""
    async with dry_run(sessions) as session:
        company = await get_company(session, caller.company_id)
        decision = await decide(session, company)
        return PreviewOut(
            actions=[_action_out(a, company.time_zone, kept=False) for a in decision.actions],
            cancelled=cancelled_out(decision.cancelled),
        )


def _moving(job_id: int, candidate_id: int, body: MoveIn, caller: Caller, now: NowDep) -> Decide:
    async def decide(session: AsyncSession, company: Company) -> MoveDecision:
        return await move_store.move_candidate(
            session, company, job_id, candidate_id, body.stage_id,
            run_actions=body.run_actions, mover=_mover(caller), now=now,
        )  # fmt: skip

    return decide


def _disqualifying(
    job_id: int, candidate_id: int, body: DisqualifyIn, caller: Caller, now: NowDep
) -> Decide:
    async def decide(session: AsyncSession, company: Company) -> MoveDecision:
        return await move_store.disqualify(
            session, company, job_id, candidate_id, body.reason_id,
            run_actions=body.run_actions, mover=_mover(caller), now=now,
        )  # fmt: skip

    return decide


@router.post(
    "/jobs/{job_id}/candidates/{candidate_id}/moves",
    response_model=MoveOut,
    status_code=201,
    responses=answers(404, 409, 503),
)
async def move(
    job_id: PathId,
    candidate_id: PathId,
    body: MoveIn,
    request: Request,
    caller: CallerDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Move the candidate into a stage (a disqualified one is requalified): its immediate
    actions run at once, the delayed ones and its rules wait; what the previous move still
    had pending is cancelled, and listed. Back into a stage they went through before, say
    `run_actions`, or 409 asks."""
    decide = _moving(job_id, candidate_id, body, caller, now)
    return await _decided(request, body, caller, sessions, workflows, idempotency_key, decide)


@router.post(
    "/jobs/{job_id}/candidates/{candidate_id}/moves/preview",
    response_model=PreviewOut,
    responses=answers(404, 409),
)
async def preview_move(
    job_id: PathId,
    candidate_id: PathId,
    body: MoveIn,
    caller: CallerDep,
    sessions: SessionsDep,
    now: NowDep,
) -> PreviewOut:
    """What this move would run and cancel if made now; nothing moves."""
    return await _preview(sessions, caller, _moving(job_id, candidate_id, body, caller, now))


@router.post(
    "/jobs/{job_id}/candidates/{candidate_id}/disqualifications",
    response_model=MoveOut,
    status_code=201,
    responses=answers(404, 409, 503),
)
async def disqualify(
    job_id: PathId,
    candidate_id: PathId,
    body: DisqualifyIn,
    request: Request,
    caller: CallerDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Disqualify the candidate with one of the company's reasons: they stay in their
    stage, what their moves had pending is cancelled, and the reason's actions run."""
    decide = _disqualifying(job_id, candidate_id, body, caller, now)
    return await _decided(request, body, caller, sessions, workflows, idempotency_key, decide)


@router.post(
    "/jobs/{job_id}/candidates/{candidate_id}/disqualifications/preview",
    response_model=PreviewOut,
    responses=answers(404, 409),
)
async def preview_disqualification(
    job_id: PathId,
    candidate_id: PathId,
    body: DisqualifyIn,
    caller: CallerDep,
    sessions: SessionsDep,
    now: NowDep,
) -> PreviewOut:
    """What this disqualification would run and cancel if made now; nothing changes."""
    decide = _disqualifying(job_id, candidate_id, body, caller, now)
    return await _preview(sessions, caller, decide)


@router.get("/moves/{move_id}", response_model=MoveOut, responses=answers(404))
async def get_move(move_id: PathId, caller: UserDep, session: SessionDep) -> MoveOut:
    """The move and the state of each of its actions."""
    company = await get_company(session, caller.company_id)
    found = await move_store.get_move(session, company.id, move_id)
    return _move_out(found, await move_store.move_actions(session, found.id), company.time_zone)


@router.post("/moves/{move_id}/cancel", response_model=MoveOut, responses=answers(404, 409, 503))
async def cancel_move(
    move_id: PathId, caller: UserDep, sessions: SessionsDep, workflows: WorkflowsDep, now: NowDep
) -> MoveOut:
    """Cancel the move's pending actions; the answer lists them."""
    async with transaction(sessions) as session:
        company = await get_company(session, caller.company_id)
        found, cancelled = await move_store.cancel_move(session, company.id, move_id, now)
        actions = await move_store.move_actions(session, found.id)
        out = _move_out(found, actions, company.time_zone, cancelled)
    await workflows.tell_moves([found], move_store.CANCELLED_BY_REQUEST)
    return out


# -- bulk moves ---------------------------------------------------------------------------


@router.post(
    "/jobs/{job_id}/bulk-moves/preview", response_model=BulkPreviewOut, responses=answers(404)
)
async def preview_bulk_move(
    job_id: PathId, body: BulkPreviewIn, caller: UserDep, session: SessionDep
) -> BulkPreviewOut:
    """The actions (and rules) a bulk move into the stage, or disqualification for the
    reason, runs for each candidate when asked to. (A stage or reason that is not there
    is a fault of the body: 422.)"""
    async with session.begin():
        company = await get_company(session, caller.company_id)
        await store.get_job(session, company.id, job_id)
        if isinstance(body, BulkDisqualify):
            for reason in await store.reasons_of(session, company):
                if reason.reason.id == body.reason_id:
                    return BulkPreviewOut(actions=[_action_in(a) for a in reason.actions], rules=[])
            raise ValidationError(f"Disqualification reason {body.reason_id} does not exist.")
        for view in await store.stages_of(session, company.id, job_id):
            if view.stage.id == body.stage_id:
                out = _stage_out(view)
                return BulkPreviewOut(actions=out.actions, rules=out.rules)
        raise ValidationError(f"Stage {body.stage_id} is not a stage of job {job_id}.")


@router.post(
    "/jobs/{job_id}/bulk-moves",
    response_model=BulkMoveOut,
    status_code=202,
    responses=answers(404, 503),
)
async def bulk_move(
    job_id: PathId,
    body: BulkMoveIn,
    caller: UserDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> BulkMoveOut:
    """Move (or disqualify) up to 10,000 candidates in the background; read progress and
    one result per candidate at GET /bulk-moves/{id}. A bulk move cannot be undone."""
    stage_id = body.stage_id if isinstance(body, BulkMoveToStage) else None
    reason_id = body.reason_id if isinstance(body, BulkDisqualifyMany) else None
    async with transaction(sessions) as session:
        company = await get_company(session, caller.company_id)
        bulk = await move_store.create_bulk(
            session, company, job_id, body.candidate_ids,
            stage_id=stage_id, reason_id=reason_id, run_actions=body.run_actions,
            requester=caller.user_id, now=now,
        )  # fmt: skip
        await workflows.start_bulk_move(
            bulk.id, bulk.key, job_id=job_id, total=len(bulk.candidate_ids)
        )
        return _bulk_out(BulkProgress(bulk, 0, 0, []))


def _bulk_out(progress: BulkProgress) -> BulkMoveOut:
    bulk, results = progress.bulk, progress.results
    return BulkMoveOut(
        id=bulk.id,
        job_id=bulk.job_id,
        stage_id=bulk.stage_id,
        reason_id=bulk.disqualification_reason_id,
        run_actions=bulk.run_actions,
        total=len(bulk.candidate_ids),
        moved=progress.moved,
        refused=progress.refused,
        created_at=bulk.created_at,
        finished_at=bulk.finished_at,
        workflow_id=bulk_move_workflow_id(bulk.key),
        results=[
            BulkResultOut(
                candidate_id=r.candidate_id,
                result="moved" if r.move_id is not None else "refused",
                move_id=r.move_id,
                detail=r.detail,
            )
            for r in results
        ],
    )


@router.get("/bulk-moves/{bulk_id}", response_model=BulkMoveOut, responses=answers(404))
async def get_bulk_move(
    bulk_id: PathId, caller: UserDep, session: SessionDep, limit: Limit = 1000, offset: Offset = 0
) -> BulkMoveOut:
    """Progress so far (counts), and a page of the results of the candidates done, in
    the order they were done (`limit`, `offset`)."""
    progress = await move_store.get_bulk(
        session, caller.company_id, bulk_id, limit=limit, offset=offset
    )
    return _bulk_out(progress)


# -- disqualification reasons, talent pools, records --------------------------------------


def _reasons_out(views: list[ReasonView]) -> ReasonsOut:
    return ReasonsOut(
        reasons=[
            ReasonOut(
                id=v.reason.id, name=v.reason.name, actions=[_action_in(a) for a in v.actions]
            )
            for v in views
        ]
    )


@router.get("/disqualification-reasons", response_model=ReasonsOut)
async def get_reasons(caller: UserDep, session: SessionDep) -> ReasonsOut:
    """The company's disqualification reasons, each with its actions."""
    async with session.begin():
        company = await get_company(session, caller.company_id)
        return _reasons_out(await store.reasons_of(session, company))


@router.put("/disqualification-reasons", response_model=ReasonsOut, responses=answers(409))
async def put_reasons(
    body: ReasonsIn, caller: CallerDep, session: SessionDep, templates: TemplatesDep
) -> ReasonsOut:
    """Replace the company's reasons; one that disqualified candidates stays (409)."""
    async with session.begin():
        await _configurer(session, caller)
        company = await get_company(session, caller.company_id)
    specs = [
        ReasonSpec(id=r.id, name=r.name, actions=_action_specs(r.actions)) for r in body.reasons
    ]
    await store.check_reasons(company, specs, templates)
    async with session.begin():
        return _reasons_out(await store.replace_reasons(session, company, specs))


@router.post("/talent-pools", response_model=TalentPoolOut, status_code=201, responses=answers(409))
async def create_pool(body: TalentPoolIn, caller: CallerDep, session: SessionDep) -> TalentPoolOut:
    """A talent pool, which an action can assign candidates to."""
    async with session.begin():
        await _configurer(session, caller)
        pool = await store.create_pool(session, caller.company_id, body.name)
        return TalentPoolOut(id=pool.id, name=pool.name)


@router.get("/talent-pools", response_model=list[TalentPoolOut])
async def list_pools(caller: UserDep, session: SessionDep) -> list[TalentPoolOut]:
    pools = await store.pools_of(session, caller.company_id)
    return [TalentPoolOut(id=p.id, name=p.name) for p in pools]


@router.get("/candidates/{candidate_id}/records", response_model=RecordsOut, responses=answers(404))
async def candidate_records(
    candidate_id: PathId, caller: UserDep, session: SessionDep
) -> RecordsOut:
    """Everything on the candidate's record, oldest first; `automatic` marks what an
    action made."""
    records = await records_of(session, caller.company_id, candidate_id)
    return RecordsOut(
        candidate_id=candidate_id,
        records=[
            RecordOut(
                id=r.id,
                kind=r.kind,
                job_id=r.job_id,
                summary=r.summary,
                automatic=r.move_action_id is not None,
                move_action_id=r.move_action_id,
                created_at=r.created_at,
            )
            for r in records
        ],
    )
