"""The bulk-enrolment activity: decide the candidates of a segment's batch, and start the
recipients' workflows of any batch, paced."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import now
from config import Settings
from errors import ConflictError
from store import campaigns as campaign_store
from store import enrolments as enrolment_store
from store import segments as segment_store
from store.enrolments import AddResult, AddVerdict, RefusalReason
from store.models import Campaign, Company, Enrolment, EnrolmentBatch
from store.session import SessionFactory, transaction
from workflows.contracts import EnrolmentBatchInput

if TYPE_CHECKING:
    # Only a type: the batch's workflow imports this module, and orchestration imports it.
    from orchestration import Workflows

log = logging.getLogger(__name__)

_BATCH_COMMIT_ATTEMPTS = 10
# Candidates decided in one transaction, then started before the next are decided: the
# verdicts show as they come, and an added candidate's workflow starts soon after its entry.
_CHUNK = 500


class EnrolmentActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings, workflows: Workflows) -> None:
        self._sessions = sessions
        self._workflows = workflows
        # One bound for the whole worker, however many bulk adds run at once.
        self._starts = asyncio.Semaphore(settings.enrol_concurrency)

    @activity.defn(name="start_enrolments")
    async def start_enrolments(self, call: EnrolmentBatchInput) -> int:
        """Decide a segment's candidates a chunk at a time (a list's were decided by its
        request) and start the workflows of those added, a bounded number at a time so the
        Temporal server keeps serving workflow tasks; resumes where a previous attempt
        stopped, since verdicts and starts are recorded as they are made."""
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

        deciding = asyncio.ensure_future(self._decide(call.batch_id, 0))
        while True:
            decided, after = await deciding
            async with self._sessions() as session:
                rows = await enrolment_store.unstarted(session, call.batch_id, limit=_CHUNK)
            if not rows and not decided:
                break
            # The next chunk is decided while this one's workflows start.
            deciding = asyncio.ensure_future(self._decide(call.batch_id, after))
            try:
                done = await asyncio.gather(*(start(e) for e in rows))
            except BaseException:
                # What it decides is kept either way: let it end, so a retry finds it.
                await asyncio.wait([deciding])
                if not deciding.cancelled() and (failed := deciding.exception()) is not None:
                    log.warning("batch %s: the next chunk failed too: %r", call.batch_id, failed)
                raise
            if done:
                async with self._sessions() as session, session.begin():
                    await enrolment_store.mark_started(session, done, now())
            started += len(done)
            activity.heartbeat(started)
        async with self._sessions() as session, session.begin():
            batch = await session.get_one(EnrolmentBatch, call.batch_id)
            batch.finished_at = now()
        return started

    async def _decide(self, batch_id: int, after: int) -> tuple[int, int]:
        """The verdicts on the next chunk of the batch's undecided candidates after `after`,
        enrolling the added, in one transaction; answers how many and the last one."""
        async with transaction(self._sessions) as session:
            ids = await segment_store.undecided(session, batch_id, after=after, limit=_CHUNK)
            if not ids:
                return 0, after
            batch = await session.get_one(EnrolmentBatch, batch_id)
            campaign = await session.get_one(Campaign, batch.campaign_id)
            company = await session.get_one(Company, batch.company_id)
            try:
                enrolment_store.check_campaign_open(campaign)
            except ConflictError as closed:
                # Archived since the request: no one more can enter, and each says why.
                verdicts = [
                    AddVerdict(c, AddResult.REFUSED, RefusalReason.CAMPAIGN_CLOSED, str(closed))
                    for c in ids
                ]
            else:
                touchpoints = await campaign_store.list_touchpoints(session, campaign.id)
                verdicts = await enrolment_store.add_recipients(
                    session, company, campaign, touchpoints[0], ids,
                    re_enrol=batch.re_enrol, now=now(), batch=batch,
                )  # fmt: skip
            await segment_store.record_verdicts(session, batch, verdicts)
        return len(ids), ids[-1]
