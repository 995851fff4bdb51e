"""The bulk-enrolment activity: start the recipients' workflows of one bulk add, paced."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import now
from config import Settings
from store import campaigns as campaign_store
from store import enrolments as enrolment_store
from store.models import Campaign, Company, Enrolment, EnrolmentBatch
from store.session import SessionFactory
from workflows.contracts import EnrolmentBatchInput

if TYPE_CHECKING:
    # Only a type: the batch's workflow imports this module, and orchestration imports it.
    from orchestration import Workflows

_BATCH_COMMIT_ATTEMPTS = 10


class EnrolmentActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings, workflows: Workflows) -> None:
        self._sessions = sessions
        self._workflows = workflows
        # One bound for the whole worker, however many bulk adds run at once.
        self._starts = asyncio.Semaphore(settings.enrol_concurrency)

    @activity.defn(name="start_enrolments")
    async def start_enrolments(self, call: EnrolmentBatchInput) -> int:
        """Start the workflows of a bulk add, a bounded number at a time so the Temporal
        server keeps serving workflow tasks; resumes where a previous attempt stopped."""
        async with self._sessions() as session:
            batch = await session.get(EnrolmentBatch, call.batch_id)
            if batch is not None and call.key is not None and batch.key != call.key:
                batch = None  # the id came again after the API's rollback: not ours
            if batch is None:
                # The API starts this before it commits: give its commit time to land, and
                # after that believe it rolled back.
                if activity.info().attempt > _BATCH_COMMIT_ATTEMPTS:
                    return 0
                raise ApplicationError(f"Enrolment batch {call.batch_id} is not committed yet.")
            campaign = await session.get_one(Campaign, batch.campaign_id)
            company = await session.get_one(Company, batch.company_id)
            plan = campaign_store.plan_of(
                company, campaign, await campaign_store.list_touchpoints(session, campaign.id)
            )
        started = 0

        async def start(enrolment: Enrolment) -> int:
            async with self._starts:
                await self._workflows.start_nurture(
                    enrolment_store.nurture_input(enrolment, plan),
                    campaign_name=campaign.name,
                    replace_running=enrolment.run > 1,
                )
            # Every start proves progress (the SDK throttles), not only a whole wave.
            activity.heartbeat(started)
            return enrolment.id

        while True:
            async with self._sessions() as session:
                rows = await enrolment_store.unstarted(session, call.batch_id, limit=500)
            if not rows:
                break
            done = await asyncio.gather(*(start(e) for e in rows))
            async with self._sessions() as session, session.begin():
                await enrolment_store.mark_started(session, done, now())
            started += len(done)
            activity.heartbeat(started)
        async with self._sessions() as session, session.begin():
            batch = await session.get_one(EnrolmentBatch, call.batch_id)
            batch.finished_at = now()
        return started
