"""BulkMoveWorkflow: moves (or disqualifies) the candidates of one bulk move, one result
each, resuming where it stopped after a crash."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.bulk_moves import BulkMoveActivities
    from workflows.contracts import BulkMoveInput


@workflow.defn(name="BulkMoveWorkflow")
class BulkMoveWorkflow:
    @workflow.run
    async def run(self, input: BulkMoveInput) -> int:
        workflow.set_current_details(f"moves the candidates of bulk move {input.bulk_id}")
        return await workflow.execute_activity_method(
            BulkMoveActivities.run_bulk_move,
            input,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
            ),
            summary=f"move the candidates of bulk move {input.bulk_id}",
        )
