"""EnrolmentBatchWorkflow: starts the recipients' workflows of one bulk add, paced."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.enrolment import EnrolmentActivities
    from workflows.contracts import EnrolmentBatchInput


@workflow.defn(name="EnrolmentBatchWorkflow")
class EnrolmentBatchWorkflow:
    @workflow.run
    async def run(self, input: EnrolmentBatchInput) -> int:
        workflow.set_current_details(f"starts the workflows of enrolment batch {input.batch_id}")
        return await workflow.execute_activity_method(
            EnrolmentActivities.start_enrolments,
            input,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
            ),
        )
