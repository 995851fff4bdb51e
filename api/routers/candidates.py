"""Candidates: written by backend services and admins, read by the company's users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import (
    CallerDep,
    NowDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    UserDep,
    WorkflowsDep,
    WriterDep,
)
from api.errors import answers
from api.idempotency import IdempotencyKey, fingerprint, once
from api.routers.pipelines import cancelled_out
from api.routers.recipients import cancelled_touchpoints
from api.schemas import (
    CandidateCreate,
    CandidateOut,
    CandidatePage,
    CandidateUpdate,
    Consent,
    ErasureOut,
    Limit,
    Offset,
    PathId,
)
from errors import PermissionDeniedError
from store import candidates as store
from store import erasure as erasure_store
from store.companies import get_company
from store.erasure import ERASED, Erasure
from store.messages import wait_for_sends
from store.models import Candidate, Role
from store.session import transaction
from workflows.contracts import ExitReason

router = APIRouter(prefix="/candidates", tags=["candidates"], responses=answers(401, 403, 422))


def candidate_out(candidate: Candidate) -> CandidateOut:
    consent = None
    if candidate.consent_given_at and candidate.consent_method and candidate.consent_source:
        consent = Consent(
            given_at=candidate.consent_given_at,
            method=candidate.consent_method,
            source=candidate.consent_source,
        )
    return CandidateOut(
        id=candidate.id,
        first_name=candidate.first_name,
        last_name=candidate.last_name,
        email=candidate.email,
        custom_fields=candidate.custom_fields,
        consent=consent,
        unsubscribed_at=candidate.unsubscribed_at,
        category=candidate.category,
        created_at=candidate.created_at,
    )


def _values(body: CandidateCreate | CandidateUpdate) -> dict[str, Any]:
    values = body.model_dump(exclude_unset=True, exclude={"consent"})
    if body.consent is not None:
        values["consent_given_at"] = body.consent.given_at
        values["consent_method"] = body.consent.method
        values["consent_source"] = body.consent.source
    return values


# 409: a request with the same Idempotency-Key is still being processed.
@router.post("", status_code=201, response_model=CandidateOut, responses=answers(409))
async def create_candidate(
    body: CandidateCreate,
    request: Request,
    caller: WriterDep,
    sessions: SessionsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def produce(session: AsyncSession) -> CandidateOut:
        company = await get_company(session, caller.company_id)
        return candidate_out(await store.create_candidate(session, company, _values(body)))

    print_ = fingerprint("POST", request.url.path, body)
    return await once(sessions, caller.company_id, idempotency_key, print_, 201, produce)


@router.patch("/{candidate_id}", response_model=CandidateOut, responses=answers(404, 409))
async def update_candidate(
    candidate_id: PathId,
    body: CandidateUpdate,
    request: Request,
    caller: WriterDep,
    sessions: SessionsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def produce(session: AsyncSession) -> CandidateOut:
        company = await get_company(session, caller.company_id)
        candidate = await store.update_candidate(session, company, candidate_id, _values(body))
        return candidate_out(candidate)

    print_ = fingerprint("PATCH", request.url.path, body)
    return await once(sessions, caller.company_id, idempotency_key, print_, 200, produce)


@router.get("", response_model=CandidatePage)
async def list_candidates(
    caller: UserDep,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> CandidatePage:
    rows, total = await store.list_candidates(
        session, caller.company_id, limit=limit, offset=offset
    )
    return CandidatePage(total=total, items=[candidate_out(c) for c in rows])


@router.get("/{candidate_id}", response_model=CandidateOut, responses=answers(404))
async def get_candidate(candidate_id: PathId, caller: UserDep, session: SessionDep) -> CandidateOut:
    return candidate_out(await store.get_candidate(session, caller.company_id, candidate_id))


def _erasure_out(erasure: Erasure) -> ErasureOut:
    return ErasureOut(
        candidate_id=erasure.candidate_id,
        erased_at=erasure.erased_at,
        already_erased=erasure.repeated,
        ended_campaigns=[e.campaign_id for e in erasure.ended],
        cancelled_touchpoints=cancelled_touchpoints(erasure.ended),
        cancelled_actions=cancelled_out(erasure.cancelled),
    )


# DELETE, not POST /erase: to the API the candidate is gone (every later request naming
# them answers 404), and DELETE is the method HTTP says may be repeated, as this may.
@router.delete("/{candidate_id}", response_model=ErasureOut, responses=answers(404, 503))
async def erase_candidate(
    candidate_id: PathId,
    caller: CallerDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    workflows: WorkflowsDep,
    now: NowDep,
) -> ErasureOut:
    """Erases the candidate (GDPR): their personal data goes from every table, their
    campaigns end (`erased`) and the pending actions of their moves are cancelled; the
    numbers keep them, anonymous. Answers what it cancelled, once no e-mail to them is
    still on its way. A repeat changes nothing, tells their workflows again and answers
    what the erasure cancelled (`already_erased`)."""
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("Only company admins can erase a candidate.")
    async with transaction(sessions) as session:
        erasure = await erasure_store.erase_candidate(session, caller.company_id, candidate_id, now)
    # The store is the truth from the commit on: nothing cancelled goes out, told or not.
    try:
        await workflows.tell_moves(erasure.moves, ERASED)
        await workflows.exit_nurtures(
            erasure.ended, ExitReason.ERASED,
            consequence="The candidate is erased and nothing more will go out to them, but "
            "their workflows were not told yet; erase them again",
        )  # fmt: skip
    finally:
        await wait_for_sends(
            sessions, caller.company_id, candidate_id, seconds=settings.exit_wait_seconds
        )
        if erasure.traces is not None:
            # A send that was past its last check may have written its peer's reply since.
            async with transaction(sessions) as session:
                await erasure_store.forget(session, caller.company_id, candidate_id, erasure.traces)
    return _erasure_out(erasure)
