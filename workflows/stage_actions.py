"""StageActionsWorkflow: one stage move's actions, each at its moment, until the move is
cancelled or superseded.

It carries ids only. The store holds each action's state and is the truth: a cancel (or a
new move) is written there first, then told to this workflow, which stops waiting; an
action that runs finds in the store whether it still may (activities/stage_actions.py).
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.stage_actions import NEVER_COMMITTED_TYPE, StageActionActivities
    from workflows.contracts import (
        ActionFailure,
        CancelMoveSignal,
        PlannedAction,
        SkipActionsSignal,
        StageActionsInput,
    )

JOB_ID = SearchAttributeKey.for_keyword("StageJobId")
CANDIDATE_ID = SearchAttributeKey.for_keyword("StageCandidateId")
STAGE_ID = SearchAttributeKey.for_keyword("StageId")
STATE = SearchAttributeKey.for_keyword("StageState")
SEARCH_ATTRIBUTES = (JOB_ID, CANDIDATE_ID, STAGE_ID, STATE)

# An action that keeps failing (the SMTP relay down, say) is tried for about a quarter of
# an hour, then recorded failed with its last error; the move's other actions go on.
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=10,
)
# The move is committed right after its workflow starts: until it is, the plan finds no
# move and asks again, as it does through a store outage. A move still missing well after
# it was made was rolled back: the plan says so (non-retryable), and the workflow ends.
PLAN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
ACTION_TIMEOUT = timedelta(minutes=2)
# The plan, an action other than an e-mail and the record of a failure are one short
# transaction each, with no heartbeat: a worker killed under one is found out after this,
# not after the e-mail's two minutes (the e-mail heartbeats).
STEP_TIMEOUT = timedelta(seconds=30)
ACTION_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name="StageActionsWorkflow")
class StageActionsWorkflow:
    @workflow.init
    def __init__(self, input: StageActionsInput) -> None:
        self._input = input
        self._cancelled: str | None = None
        self._skipped: set[int] = set()

    @workflow.run
    async def run(self, input: StageActionsInput) -> str:
        try:
            planned: list[PlannedAction] = await workflow.execute_activity_method(
                StageActionActivities.plan_stage_actions,
                input,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=PLAN_RETRY,
                summary="read the move's pending actions",
            )
        except ActivityError as error:
            cause = error.cause
            if not isinstance(cause, ApplicationError) or cause.type != NEVER_COMMITTED_TYPE:
                raise
            self._state("gone")
            return "gone: the move was never committed"
        for number, action in enumerate(planned, start=1):
            if action.id in self._skipped:
                continue
            wait = action.due_at - workflow.now()
            left = len(planned) - number + 1
            self._state("waiting" if wait > timedelta(0) else "running", action, left)
            if wait > timedelta(0):
                try:
                    await workflow.wait_condition(
                        partial(self._stopped, action.id),
                        timeout=wait,
                        timeout_summary=f"action {number} ({action.kind})",
                    )
                except TimeoutError:
                    pass
            if self._cancelled is not None:
                break
            if action.id not in self._skipped:
                await self._run(action, number)
        self._state("cancelled" if self._cancelled is not None else "done")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._cancelled or "done"

    async def _run(self, action: PlannedAction, number: int) -> None:
        try:
            await workflow.execute_activity_method(
                StageActionActivities.run_stage_action,
                action,
                start_to_close_timeout=ACTION_TIMEOUT if action.kind == "email" else STEP_TIMEOUT,
                # Only an e-mail heartbeats (activities/sending.py): the others are one
                # short transaction each.
                heartbeat_timeout=ACTION_HEARTBEAT if action.kind == "email" else None,
                retry_policy=ACTION_RETRY,
                summary=f"action {number}: {action.kind}",
            )
        except ActivityError as error:
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or error)
            await workflow.execute_activity_method(
                StageActionActivities.record_stage_action_failure,
                ActionFailure(action, message),
                start_to_close_timeout=STEP_TIMEOUT,
                summary=f"record action {number} as failed",
            )

    def _state(self, state: str, action: PlannedAction | None = None, left: int = 0) -> None:
        workflow.upsert_search_attributes([STATE.value_set(state)])
        stage = self._input.stage_id
        if action is not None:
            workflow.set_current_details(
                f"stage {stage}: {left} action(s) left, next {action.kind} due "
                f"{action.due_at:%Y-%m-%d %H:%M} UTC"
            )
        else:
            workflow.set_current_details(f"stage {stage}: {state}")

    def _stopped(self, action_id: int) -> bool:
        """The move cancelled, or this action alone (a reply ended its rule)."""
        return self._cancelled is not None or action_id in self._skipped

    @workflow.signal(name="cancel")
    def cancel(self, signal: CancelMoveSignal) -> None:
        if self._cancelled is None:
            self._cancelled = signal.reason

    @workflow.signal(name="skip_actions")
    def skip_actions(self, signal: SkipActionsSignal) -> None:
        self._skipped.update(signal.action_ids)
