"""The activity that tells a campaign's workflows, in bulk, what its archive or resume
decided: pages through the store's list, a bounded number of signals in flight."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity

from config import Settings
from store import campaign_status
from store.campaign_status import Told
from store.session import SessionFactory
from workflows.contracts import CampaignSignalsInput

if TYPE_CHECKING:
    # Only a type: the workflow imports this module, and orchestration imports it.
    from orchestration import Workflows

_PAGE = 1000
# Progress is reported this often, well within the heartbeat timeout on a busy server.
_BEAT = 100


class CampaignSignalActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings, workflows: Workflows) -> None:
        self._sessions = sessions
        self._workflows = workflows
        # One bound for the whole worker, however many campaigns are told at once.
        self._signals = asyncio.Semaphore(settings.signal_concurrency)

    @activity.defn(name="tell_recipients")
    async def tell_recipients(self, call: CampaignSignalsInput) -> int:
        """Every workflow the archive or resume names, once at least; a retry goes on after
        the last page it finished (its heartbeat). A signal is harmless twice."""
        told = Told(call.told)
        details = activity.info().heartbeat_details
        after, count = (int(details[0]), int(details[1])) if details else (0, 0)

        told_in_page = 0

        async def tell(candidate_id: int, run: int) -> None:
            nonlocal told_in_page
            async with self._signals:
                await self._workflows.tell_campaign(
                    call.campaign_id, candidate_id, run, told, call.at
                )
            told_in_page += 1
            if told_in_page % _BEAT == 0:
                activity.heartbeat(after, count)  # alive; the page is not done yet

        while True:
            async with self._sessions() as session:
                page = await campaign_status.to_tell(
                    session, call.campaign_id, told, call.at, after=after, limit=_PAGE
                )
            if not page:
                return count
            await asyncio.gather(*(tell(candidate, run) for _, candidate, run in page))
            after, count = page[-1][0], count + len(page)
            activity.heartbeat(after, count)
