"""CampaignTestWorkflow: every touchpoint of a campaign at once, to the test recipients."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.nurture import NurtureActivities
    from workflows.contracts import CampaignTestInput, SendOutcome
    from workflows.nurture import SEND_HEARTBEAT

TEST_SEND_ATTEMPTS = 3


@workflow.defn(name="CampaignTestWorkflow")
class CampaignTestWorkflow:
    @workflow.run
    async def run(self, input: CampaignTestInput) -> list[SendOutcome]:
        workflow.set_current_details(
            f"sends {len(input.message_ids)} test e-mails of campaign {input.campaign_id}"
        )
        return list(await asyncio.gather(*(self._send(m) for m in input.message_ids)))

    async def _send(self, message_id: int) -> SendOutcome:
        try:
            return await workflow.execute_activity_method(
                NurtureActivities.send_test_message,
                message_id,
                start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=SEND_HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=TEST_SEND_ATTEMPTS),
            )
        except ActivityError:
            # Before this patch a failed test send failed the workflow and left its message
            # `prepared` for good; now the store records how it ended.
            if not workflow.patched("record-test-failure"):
                raise
        return await workflow.execute_activity_method(
            NurtureActivities.record_test_failure,
            message_id,
            start_to_close_timeout=timedelta(seconds=30),
        )
