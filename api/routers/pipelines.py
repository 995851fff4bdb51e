"""Pipelines and moves: the default pipeline, jobs and their own, applications entering a
job, candidates moved between its stages, and each move's actions as they run."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import TypeAdapter

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
from api.schemas import (
    ActionIn,
    ApplicationIn,
    CancelledOut,
    JobCreate,
    JobOut,
    MoveActionOut,
    MoveIn,
    MoveOut,
    PathId,
    PipelineIn,
    PipelineOut,
    StageOut,
)
from errors import PermissionDeniedError
from orchestration import Workflows, WorkflowsUnavailableError
from store import moves as move_store
from store import pipelines as store
from store.companies import Caller, get_company
from store.models import Company, Move, MoveAction, Role
from store.moves import Cancelled, MoveDecision
from store.pipelines import ActionSpec, StageSpec, StageView
from store.session import transaction
from workflows.contracts import StageActionsInput, stage_actions_workflow_id
from workflows.timing import local_label

log = logging.getLogger(__name__)

router = APIRouter(tags=["pipelines"], responses=answers(401, 403, 422))


def _admin(caller: Caller) -> None:
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("Only company admins can change pipelines and their actions.")


_ACTION = TypeAdapter(ActionIn)


def _stage_out(view: StageView) -> StageOut:
    actions = []
    for action in view.actions:
        out: dict[str, Any] = {
            "kind": action.kind,
            "delay_hours": action.delay_hours,
            "delay_days": action.delay_days,
            "at": action.at_local,
            action.kind.value: action.settings,
        }
        actions.append(_ACTION.validate_python(out))
    return StageOut(id=view.stage.id, name=view.stage.name, actions=actions)


def _specs(body: PipelineIn) -> list[StageSpec]:
    return [
        StageSpec(
            id=stage.id,
            name=stage.name,
            actions=[
                ActionSpec(
                    kind=action.kind,
                    settings=action.settings(),
                    delay_hours=action.delay_hours,
                    delay_days=action.delay_days,
                    at_local=action.at,
                )
                for action in stage.actions
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
    _admin(caller)
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
    _admin(caller)
    async with session.begin():
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
    _admin(caller)
    async with session.begin():
        await store.get_job(session, caller.company_id, job_id)  # 404 before the templates
    company, specs = await _checked(session, caller, body, templates)
    async with session.begin():
        views = await store.replace_stages(session, company, job_id, specs)
        return PipelineOut(job_id=job_id, stages=[_stage_out(v) for v in views])


def _action_out(action: MoveAction, tz: str) -> MoveActionOut:
    return MoveActionOut(
        id=action.id,
        kind=action.kind,
        state=action.state,
        due_at=action.due_at,
        due_at_local=local_label(action.due_at, tz),
        reason=action.reason,
        finished_at=action.finished_at,
    )


def _move_out(
    move: Move, actions: list[MoveAction], tz: str, cancelled: list[Cancelled] | None = None
) -> MoveOut:
    return MoveOut(
        id=move.id,
        job_id=move.job_id,
        candidate_id=move.candidate_id,
        from_stage_id=move.from_stage_id,
        to_stage_id=move.to_stage_id,
        run_actions=move.run_actions,
        created_at=move.created_at,
        workflow_id=(
            stage_actions_workflow_id(move.job_id, move.candidate_id, move.key) if actions else None
        ),
        actions=[_action_out(a, tz) for a in actions],
        cancelled=[
            CancelledOut(move_id=c.move_id, action_id=c.action_id, kind=c.kind, due_at=c.due_at)
            for c in cancelled or []
        ],
    )


def _mover(caller: Caller) -> int | None:
    return caller.user_id if caller.role is not Role.SERVICE else None


async def _started(decision: MoveDecision, company: Company, workflows: Workflows) -> None:
    """Start the move's workflow before the commit: if it fails, nothing is kept."""
    move = decision.move
    if not decision.actions:
        return
    await workflows.start_stage_actions(
        StageActionsInput(
            company_id=company.id,
            job_id=move.job_id,
            candidate_id=move.candidate_id,
            stage_id=move.to_stage_id,
            move_id=move.id,
            move_key=move.key,
            moved_at=move.created_at,
        ),
        stage_name=decision.stage.name,
        actions=len(decision.actions),
    )


async def _tell(workflows: Workflows, moves: list[Move], reason: str) -> None:
    """After the commit: the store has cancelled their actions already, so a workflow not
    told now only wakes at its next action's moment and finds it cancelled."""
    try:
        await workflows.cancel_stage_actions(
            [stage_actions_workflow_id(m.job_id, m.candidate_id, m.key) for m in moves], reason
        )
    except WorkflowsUnavailableError as error:
        log.warning("moves %s cancelled, their workflows not told yet: %s", moves, error)


@router.post(
    "/jobs/{job_id}/applications",
    response_model=MoveOut,
    status_code=201,
    responses=answers(404, 409, 503),
)
async def apply(
    job_id: PathId,
    body: ApplicationIn,
    caller: CallerDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> MoveOut:
    """A new application enters the job's first stage and runs its actions, unless it came
    by import or by a CV forwarded to the job's mailbox."""
    async with transaction(sessions) as session:
        company = await get_company(session, caller.company_id)
        decision = await move_store.apply(
            session, company, job_id, body.candidate_id, body.source,
            mover=_mover(caller), now=now,
        )  # fmt: skip
        await _started(decision, company, workflows)
        return _move_out(decision.move, decision.actions, company.time_zone)


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
    caller: CallerDep,
    sessions: SessionsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> MoveOut:
    """Move the candidate into a stage: its immediate actions run at once, the delayed ones
    wait; what the previous move still had pending is cancelled, and listed. Back into a
    stage they went through before, say `run_actions`, or 409 asks. (A transaction that
    holds SQLite's write lock from its start: two moves of one candidate serialise.)"""
    async with transaction(sessions) as session:
        company = await get_company(session, caller.company_id)
        decision = await move_store.move_candidate(
            session, company, job_id, candidate_id, body.stage_id,
            run_actions=body.run_actions, mover=_mover(caller), now=now,
        )  # fmt: skip
        await _started(decision, company, workflows)
        out = _move_out(decision.move, decision.actions, company.time_zone, decision.cancelled)
    await _tell(workflows, decision.superseded, move_store.moved_to(decision.stage))
    return out


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
    await _tell(workflows, [found], move_store.CANCELLED_BY_REQUEST)
    return out
