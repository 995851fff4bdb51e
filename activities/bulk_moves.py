"""The bulk-move activity: each candidate of a bulk move is moved as a move of their own
would be (its own transaction, its own workflow), and gets one result: moved, or refused
with the sentence a single move would have answered. A retry resumes after the candidates
that have a result."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.sending import now
from errors import ConflictError, NotFoundError, ValidationError
from store import moves as move_store
from store.models import BulkMove, BulkMoveResult, Company
from store.session import SessionFactory, transaction
from workflows.contracts import BulkMoveInput

if TYPE_CHECKING:
    # Only a type: the bulk move's workflow imports this module, and orchestration it.
    from orchestration import Workflows

_COMMIT_ATTEMPTS = 10
# Candidates moved at once: on SQLite their transactions take turns anyway; the workflow
# starts overlap.
_AT_ONCE = 8


class BulkMoveActivities:
    def __init__(self, sessions: SessionFactory, workflows: Workflows) -> None:
        self._sessions = sessions
        self._workflows = workflows

    @activity.defn(name="run_bulk_move")
    async def run_bulk_move(self, call: BulkMoveInput) -> int:
        """Every candidate without a result yet; answers how many were moved."""
        async with self._sessions() as session:
            bulk = await session.get(BulkMove, call.bulk_id)
            if bulk is not None and bulk.key != call.key:
                bulk = None  # the id came again after the API's rollback: not ours
            if bulk is None:
                # The API starts this before it commits: give its commit time to land, and
                # after that believe it rolled back.
                if activity.info().attempt > _COMMIT_ATTEMPTS:
                    return 0
                raise ApplicationError(f"Bulk move {call.bulk_id} is not committed yet.")
            done = set(
                await session.scalars(
                    select(BulkMoveResult.candidate_id).where(
                        BulkMoveResult.bulk_move_id == bulk.id
                    )
                )
            )
            company = await session.get_one(Company, bulk.company_id)
            session.expunge_all()
        left = [c for c in bulk.candidate_ids if c not in done]
        turns = asyncio.Semaphore(_AT_ONCE)

        async def one(candidate_id: int) -> None:
            async with turns:
                await self._one(company, bulk, candidate_id)

        for start in range(0, len(left), 100):
            await asyncio.gather(*(one(c) for c in left[start : start + 100]))
            activity.heartbeat(start + 100)
        async with transaction(self._sessions) as session:
            found = await session.get_one(BulkMove, bulk.id)
            found.finished_at = found.finished_at or now()
            moved = await session.scalars(
                select(BulkMoveResult.id).where(
                    BulkMoveResult.bulk_move_id == bulk.id, BulkMoveResult.move_id.is_not(None)
                )
            )
            return len(list(moved))

    async def _one(self, company: Company, bulk: BulkMove, candidate_id: int) -> None:
        """Move one candidate and record it, in one transaction; a refusal is recorded in
        its own. A Temporal outage fails the activity, which is retried."""
        result = BulkMoveResult(
            company_id=company.id, bulk_move_id=bulk.id, candidate_id=candidate_id
        )
        try:
            async with transaction(self._sessions) as session:
                decision = await move_store.bulk_one(session, company, bulk, candidate_id, now())
                await self._workflows.start_move(decision)
                result.move_id = decision.move.id
                session.add(result)
        except (NotFoundError, ConflictError, ValidationError) as refused:
            await self._refused(result, str(refused))
            return
        except IntegrityError as error:
            # Most often another attempt moved this one and recorded it; else (a stage or
            # reason removed meanwhile, say) the candidate is refused, never left without
            # a result.
            await self._refused(result, f"could not be moved: {error.orig}")
            return
        await self._workflows.tell_moves(decision.superseded, decision.why)

    async def _refused(self, result: BulkMoveResult, detail: str) -> None:
        """Record the refusal, unless a result is there already (another attempt's)."""
        async with transaction(self._sessions) as session:
            found = await session.scalar(
                select(BulkMoveResult.id).where(
                    BulkMoveResult.bulk_move_id == result.bulk_move_id,
                    BulkMoveResult.candidate_id == result.candidate_id,
                )
            )
            if found is None:
                session.add(
                    BulkMoveResult(
                        company_id=result.company_id,
                        bulk_move_id=result.bulk_move_id,
                        candidate_id=result.candidate_id,
                        detail=detail,
                    )
                )
