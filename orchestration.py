"""The one place that drives workflows: starting, replacing, signalling and cancelling.

The API's routers and the activities call `Workflows`; nothing else calls the Temporal
client. It builds the ids, search attributes and summaries (so a workflow looks the same in
the Web UI however it was started), and it turns every Temporal error into one domain
error, `WorkflowsUnavailableError`, which the API answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from errors import UnavailableError
from store.campaign_status import Told

# Modules, not names: the enrolment batch's workflow imports the activity that imports us.
from workflows import (
    bulk_move,
    campaign_signals,
    campaign_test,
    enrolment_batch,
    nurture,
    stage_actions,
)
from workflows.contracts import (
    BulkMoveInput,
    CampaignSignalsInput,
    CampaignTestInput,
    CancelMoveSignal,
    EnrolmentBatchInput,
    ExitReason,
    ExitSignal,
    NurtureInput,
    PauseSignal,
    ResumeSignal,
    SendOutcome,
    SkipActionsSignal,
    StageActionsInput,
    bulk_move_workflow_id,
    campaign_signals_workflow_id,
    nurture_workflow_id,
    stage_actions_workflow_id,
)
from workflows.nurture import CAMPAIGN_ID, CANDIDATE_ID, STATE, NurtureWorkflow
from workflows.timing import first_send_at, local_label

if TYPE_CHECKING:
    from store.enrolments import Ended
    from store.models import Move
    from store.moves import MoveDecision

log = logging.getLogger(__name__)

# Every search attribute of every workflow: the dev server, the tests and `make run`
# register these.
SEARCH_ATTRIBUTES = nurture.SEARCH_ATTRIBUTES + stage_actions.SEARCH_ATTRIBUTES


class WorkflowsUnavailableError(UnavailableError):
    """Temporal did not do what was asked. `reason` says why, as a clause."""

    def __init__(self, consequence: str, reason: str = "Temporal did not answer") -> None:
        super().__init__(f"{consequence}: {reason}. Retrying is safe.")
        self.reason = reason


@contextlib.asynccontextmanager
async def _temporal(consequence: str) -> AsyncIterator[None]:
    """The one translation of what the Temporal client raises."""
    try:
        yield
    except RPCError as error:
        raise WorkflowsUnavailableError(
            consequence, f"Temporal did not answer ({error.message})"
        ) from error
    except WorkflowAlreadyStartedError as error:
        raise WorkflowsUnavailableError(
            consequence, f"its workflow is already running ({error.workflow_id})"
        ) from error
    except RuntimeError as error:
        if "client connect" not in str(error):
            raise
        raise WorkflowsUnavailableError(
            consequence, "Temporal did not answer (no connection)"
        ) from error


class Workflows:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    async def start_nurture(
        self,
        input: NurtureInput,
        *,
        campaign_name: str,
        replace_running: bool,
        consequence: str = "The candidate was not added",
    ) -> None:
        """Start one recipient's workflow. `replace_running` ends a running one with the
        same id: the store has just decided this enrolment, so a running workflow is stale
        (an ended run whose exit signal is still on its way). Otherwise a running one is
        kept, which makes a retried start harmless."""
        first = input.plan.touchpoints[0]
        due = first_send_at(input.entered_at, first.send_time, input.plan.time_zone)
        count = len(input.plan.touchpoints)
        async with _temporal(consequence):
            await self._client.start_workflow(
                NurtureWorkflow.run,
                input,
                id=nurture_workflow_id(input.campaign_id, input.candidate_id),
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.TERMINATE_EXISTING
                    if replace_running
                    else WorkflowIDConflictPolicy.USE_EXISTING
                ),
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(CAMPAIGN_ID, str(input.campaign_id)),
                        SearchAttributePair(CANDIDATE_ID, str(input.candidate_id)),
                        SearchAttributePair(STATE, "starting"),
                    ]
                ),
                static_summary=(
                    f"Campaign {input.campaign_id} “{campaign_name}”, candidate "
                    f"{input.candidate_id} (run {input.run}): {count} touchpoints, first due "
                    f"{local_label(due, input.plan.time_zone)}"
                ),
                run_timeout=None,
                task_timeout=timedelta(seconds=10),
            )

    async def start_enrolment_batch(
        self, batch_id: int, batch_key: str, *, added: int, campaign_id: int, campaign_name: str
    ) -> None:
        """The batch's id is its random key: a rolled-back batch's number can come again
        (SQLite), and must not collide with the workflow it left behind."""
        async with _temporal("No candidate was added"):
            await self._client.start_workflow(
                enrolment_batch.EnrolmentBatchWorkflow.run,
                EnrolmentBatchInput(batch_id, batch_key),
                id=f"enrolment-batch/{batch_key}",
                task_queue=self._task_queue,
                static_summary=(
                    f"Starts {added} recipients of campaign {campaign_id} “{campaign_name}”"
                ),
            )

    async def start_bulk_move(self, bulk_id: int, key: str, *, job_id: int, total: int) -> None:
        """Its id is the bulk move's random key, as a batch's is."""
        async with _temporal("No candidate was moved"):
            await self._client.start_workflow(
                bulk_move.BulkMoveWorkflow.run,
                BulkMoveInput(bulk_id, key),
                id=bulk_move_workflow_id(key),
                task_queue=self._task_queue,
                static_summary=f"Job {job_id}: bulk move {bulk_id} of {total} candidates",
            )

    async def run_campaign_test(
        self,
        workflow_id: str,
        input: CampaignTestInput,
        *,
        campaign_name: str,
        timeout_seconds: float,
    ) -> list[SendOutcome]:
        """Runs a test and waits for it, at most `timeout_seconds`."""
        async with _temporal("The test was not sent"):
            try:
                return await self._client.execute_workflow(
                    campaign_test.CampaignTestWorkflow.run,
                    input,
                    id=workflow_id,
                    task_queue=self._task_queue,
                    static_summary=f"Test of campaign {input.campaign_id} “{campaign_name}”",
                    execution_timeout=timedelta(seconds=timeout_seconds),
                )
            except WorkflowFailureError as error:
                raise WorkflowsUnavailableError(
                    "The test was not sent",
                    f"no worker sent it within {timeout_seconds:g} seconds (is a worker running?)",
                ) from error

    async def _signal(self, workflow_id: str, name: str, arg: object) -> bool:
        """Answers False when the workflow has already ended."""
        try:
            await self._client.get_workflow_handle(workflow_id).signal(name, arg)
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def exit_nurtures(
        self, ended: Iterable[Ended], reason: ExitReason, *, consequence: str
    ) -> None:
        """Tell each ended enrolment's workflow."""
        async with _temporal(consequence):
            await asyncio.gather(
                *(
                    self._signal(
                        nurture_workflow_id(e.campaign_id, e.candidate_id),
                        "exit",
                        ExitSignal(reason, e.run),
                    )
                    for e in ended
                )
            )

    async def pause_nurture(self, campaign_id: int, candidate_id: int, at: datetime) -> None:
        async with _temporal("The pause is saved, but its workflow was not told yet"):
            await self._signal(
                nurture_workflow_id(campaign_id, candidate_id), "pause", PauseSignal(at)
            )

    async def resume_nurture(self, campaign_id: int, candidate_id: int, at: datetime) -> None:
        async with _temporal("The resume is saved, but its workflow was not told yet"):
            await self._signal(
                nurture_workflow_id(campaign_id, candidate_id), "resume", ResumeSignal(at)
            )

    async def start_campaign_signals(self, campaign_id: int, told: Told, at: datetime) -> None:
        """Tell the campaign's workflows what its archive or resume at `at` decided, in the
        background. Its id names that decision: a retried request starts nothing twice."""
        workflow_id = campaign_signals_workflow_id(campaign_id, told.value, at)
        async with _temporal(f"The campaign is {told.value}, but its workflows were not told yet"):
            try:
                await self._client.start_workflow(
                    campaign_signals.CampaignSignalsWorkflow.run,
                    CampaignSignalsInput(campaign_id, told.value, at),
                    id=workflow_id,
                    task_queue=self._task_queue,
                    # A repeated request tells them again if the first telling failed.
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                    static_summary=f"Tells campaign {campaign_id}'s workflows: {told.value}",
                )
            except WorkflowAlreadyStartedError:
                pass  # told already, or being told

    async def tell_campaign(
        self, campaign_id: int, candidate_id: int, run: int, told: Told, at: datetime
    ) -> None:
        """One recipient's workflow, told of its campaign's archive (an exit) or resume."""
        workflow_id = nurture_workflow_id(campaign_id, candidate_id)
        if told is Told.ARCHIVED:
            await self._signal(workflow_id, "exit", ExitSignal(ExitReason.ARCHIVED, run))
        else:
            await self._signal(workflow_id, "campaign_resumed", ResumeSignal(at))

    async def start_stage_actions(
        self, input: StageActionsInput, *, stage_name: str, actions: int
    ) -> None:
        """Start a move's workflow. Its id is built from the move's random key: a
        rolled-back move's number can come again (SQLite)."""
        async with _temporal("The candidate was not moved"):
            await self._client.start_workflow(
                stage_actions.StageActionsWorkflow.run,
                input,
                id=stage_actions_workflow_id(input.job_id, input.candidate_id, input.move_key),
                task_queue=self._task_queue,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(stage_actions.JOB_ID, str(input.job_id)),
                        SearchAttributePair(stage_actions.CANDIDATE_ID, str(input.candidate_id)),
                        SearchAttributePair(stage_actions.STAGE_ID, str(input.stage_id)),
                        SearchAttributePair(stage_actions.STATE, "starting"),
                    ]
                ),
                static_summary=(
                    f"Job {input.job_id}, candidate {input.candidate_id}: moved to stage "
                    f"{input.stage_id} “{stage_name}” (move {input.move_id}), {actions} actions"
                ),
                task_timeout=timedelta(seconds=10),
            )

    async def start_move(self, decision: MoveDecision) -> None:
        """Start the workflow of a move the store has decided, before its commit: if the
        start fails, nothing is kept. A move without actions has none."""
        move = decision.move
        if decision.actions:
            await self.start_stage_actions(
                StageActionsInput(
                    company_id=move.company_id,
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

    async def tell_moves(
        self, moves: list[Move], reason: str, *, only: Mapping[int, list[int]] | None = None
    ) -> None:
        """After the commit, wake the workflows of moves whose pending actions the store
        cancelled (with `only`: those actions of each move). The store is the truth: a
        workflow not told now wakes at its next action's moment and finds it cancelled."""
        ids = {m.id: stage_actions_workflow_id(m.job_id, m.candidate_id, m.key) for m in moves}
        try:
            await self.cancel_stage_actions(
                ids.values(),
                reason,
                only={ids[move]: actions for move, actions in only.items()} if only else None,
            )
        except WorkflowsUnavailableError as error:
            log.warning("moves %s cancelled, their workflows not told yet: %s", list(ids), error)

    async def cancel_stage_actions(
        self,
        workflow_ids: Iterable[str],
        reason: str,
        *,
        only: Mapping[str, list[int]] | None = None,
    ) -> None:
        """Wake each move's workflow, whose pending actions the store has cancelled (with
        `only`, just those actions of each: the workflow goes on with the others)."""
        async with _temporal("The moves' actions are cancelled, but their workflows were not told"):
            await asyncio.gather(
                *(
                    self._signal(wid, "skip_actions", SkipActionsSignal(reason, only[wid]))
                    if only
                    else self._signal(wid, "cancel", CancelMoveSignal(reason))
                    for wid in workflow_ids
                )
            )
