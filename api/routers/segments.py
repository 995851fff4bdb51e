"""Segments: saved filters over the company's candidates, and who each holds now."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CampaignAdminDep, SessionDep
from api.errors import answers
from api.routers.candidates import candidate_out
from api.schemas import (
    CandidatePage,
    LastContactedIn,
    Limit,
    Offset,
    PathId,
    SegmentCreate,
    SegmentFilterIn,
    SegmentOut,
    SegmentPage,
    SegmentUpdate,
)
from store import segments as store
from store.models import Segment
from store.segments import LastContacted, SegmentFilter

# Segments choose whom campaigns reach: for the admins who manage campaigns.
router = APIRouter(prefix="/segments", tags=["segments"], responses=answers(401, 403, 422))


def segment_filter(body: SegmentFilterIn) -> SegmentFilter:
    last: LastContactedIn | None = body.last_contacted
    return SegmentFilter(
        categories=tuple(dict.fromkeys(body.categories or ())),
        tags=tuple(dict.fromkeys(body.tags or ())),
        any_tags=tuple(dict.fromkeys(body.any_tags or ())),
        custom_fields=body.custom_fields or {},
        consent=body.consent,
        last_contacted=None
        if last is None
        else LastContacted(
            never=last.never,
            before=last.before,
            after=last.after,
            include_never=last.include_never,
        ),
    )


def segment_out(segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        description=segment.description,
        filter=SegmentFilterIn.model_validate(segment.filter),
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


@router.post("", status_code=201, response_model=SegmentOut, responses=answers(409))
async def create_segment(
    body: SegmentCreate, company: CampaignAdminDep, session: SessionDep
) -> SegmentOut:
    """A custom field the company does not declare is refused (422); a name in use, 409."""
    async with session.begin():
        segment = await store.create_segment(
            session,
            company,
            name=body.name,
            description=body.description,
            segment_filter=segment_filter(body.filter),
        )
        return segment_out(segment)


@router.get("", response_model=SegmentPage)
async def list_segments(
    company: CampaignAdminDep, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> SegmentPage:
    async with session.begin():
        rows, total = await store.list_segments(session, company.id, limit=limit, offset=offset)
        return SegmentPage(total=total, items=[segment_out(s) for s in rows])


@router.get("/{segment_id}", response_model=SegmentOut, responses=answers(404))
async def get_segment(
    segment_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> SegmentOut:
    async with session.begin():
        return segment_out(await store.get_segment(session, company.id, segment_id))


@router.patch("/{segment_id}", response_model=SegmentOut, responses=answers(404, 409))
async def update_segment(
    segment_id: PathId, body: SegmentUpdate, company: CampaignAdminDep, session: SessionDep
) -> SegmentOut:
    """Only the fields sent change. A batch already taken from the segment keeps its
    candidates."""
    async with session.begin():
        segment = await store.update_segment(
            session,
            company,
            segment_id,
            name=body.name,
            description=body.description,
            segment_filter=segment_filter(body.filter) if body.filter is not None else None,
        )
        return segment_out(segment)


@router.delete("/{segment_id}", status_code=204, response_class=Response, responses=answers(404))
async def delete_segment(
    segment_id: PathId, company: CampaignAdminDep, session: SessionDep
) -> None:
    """Its batches stay readable, with their candidates and verdicts."""
    async with session.begin():
        await store.delete_segment(session, company.id, segment_id)


@router.get("/{segment_id}/candidates", response_model=CandidatePage, responses=answers(404))
async def list_segment_candidates(
    segment_id: PathId,
    company: CampaignAdminDep,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> CandidatePage:
    """Who the segment holds now, in id order: what adding it to a campaign would take."""
    async with session.begin():
        segment = await store.get_segment(session, company.id, segment_id)
        rows, total = await store.segment_candidates(
            session, company.id, segment, limit=limit, offset=offset
        )
        return CandidatePage(total=total, items=[candidate_out(c) for c in rows])
