"""How the service starts and signals workflows: ids, search attributes and summaries.

Shared by the API (single adds, exits, pause and resume) and by the bulk-enrolment
activity, so a workflow started either way looks the same in the Web UI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from store.models import Enrolment
from workflows.contracts import (
    ExitReason,
    ExitSignal,
    NurtureInput,
    NurturePlan,
    PauseSignal,
    ResumeSignal,
    nurture_workflow_id,
)
from workflows.nurture import CAMPAIGN_ID, CANDIDATE_ID, STATE, NurtureWorkflow
from workflows.timing import first_send_at, local_label


def nurture_input(enrolment: Enrolment, plan: NurturePlan) -> NurtureInput:
    return NurtureInput(
        company_id=enrolment.company_id,
        campaign_id=enrolment.campaign_id,
        candidate_id=enrolment.candidate_id,
        enrolment_id=enrolment.id,
        run=enrolment.run,
        entered_at=enrolment.entered_at,
        plan=plan,
    )


async def start_nurture(
    client: Client,
    task_queue: str,
    input: NurtureInput,
    *,
    campaign_name: str,
    replace_running: bool,
) -> WorkflowHandle[NurtureWorkflow, object]:
    """Start one recipient's workflow. `replace_running` ends a running one with the
    same id: the store has just decided this enrolment, so a running workflow is stale (an
    ended run whose exit signal is still on its way). Otherwise a running one is kept, which
    makes a retried start harmless."""
    first = input.plan.touchpoints[0]
    due = first_send_at(input.entered_at, first.send_time, input.plan.time_zone)
    count = len(input.plan.touchpoints)
    return await client.start_workflow(
        NurtureWorkflow.run,
        input,
        id=nurture_workflow_id(input.campaign_id, input.candidate_id),
        task_queue=task_queue,
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
            f"Campaign {input.campaign_id} “{campaign_name}”, candidate {input.candidate_id} "
            f"(run {input.run}): {count} touchpoints, first due "
            f"{local_label(due, input.plan.time_zone)}"
        ),
        run_timeout=None,
        task_timeout=timedelta(seconds=10),
    )


async def _signal(client: Client, workflow_id: str, name: str, arg: object) -> bool:
    """Signal a recipient's workflow; answers False when it has already ended."""
    try:
        await client.get_workflow_handle(workflow_id).signal(name, arg)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def signal_exit(
    client: Client, ended: Iterable[tuple[int, int]], candidate_id: int, reason: ExitReason
) -> None:
    """Tell each ended enrolment's workflow, given as (campaign id, run)."""
    await asyncio.gather(
        *(
            _signal(
                client, nurture_workflow_id(campaign, candidate_id), "exit", ExitSignal(reason, run)
            )
            for campaign, run in ended
        )
    )


async def signal_pause(client: Client, campaign_id: int, candidate_id: int, at: datetime) -> None:
    await _signal(client, nurture_workflow_id(campaign_id, candidate_id), "pause", PauseSignal(at))


async def signal_resume(client: Client, campaign_id: int, candidate_id: int, at: datetime) -> None:
    await _signal(
        client, nurture_workflow_id(campaign_id, candidate_id), "resume", ResumeSignal(at)
    )
