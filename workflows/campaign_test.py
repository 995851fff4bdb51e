"""CampaignTestWorkflow: every touchpoint of a campaign at once, to the test recipients."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import CampaignTestInput, SendOutcome


@workflow.defn(name="CampaignTestWorkflow")
class CampaignTestWorkflow:
    @workflow.run
    async def run(self, input: CampaignTestInput) -> list[SendOutcome]:
        workflow.set_current_details(
            f"sends {len(input.message_ids)} test e-mails of campaign {input.campaign_id}"
        )
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        "send_test_message",
                        message_id,
                        result_type=SendOutcome,
                        start_to_close_timeout=timedelta(minutes=1),
                        retry_policy=RetryPolicy(maximum_attempts=3),
                    )
                    for message_id in input.message_ids
                )
            )
        )
