"""CampaignSignalsWorkflow: tells every workflow of a campaign what its archive or resume
decided, a bounded number at a time, resuming where it stopped after a crash."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.campaign_signals import CampaignSignalActivities
    from workflows.contracts import CampaignSignalsInput


@workflow.defn(name="CampaignSignalsWorkflow")
class CampaignSignalsWorkflow:
    @workflow.run
    async def run(self, input: CampaignSignalsInput) -> int:
        workflow.set_current_details(
            f"tells campaign {input.campaign_id}'s workflows: {input.told}"
        )
        return await workflow.execute_activity_method(
            CampaignSignalActivities.tell_recipients,
            input,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
            ),
            summary=f"tell campaign {input.campaign_id}'s workflows: {input.told}",
        )
