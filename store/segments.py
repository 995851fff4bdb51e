"""Segments: saved filters over a company's candidates, who they hold now, and the
candidates a segment's enrolment batch takes from one and the verdicts it records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, NotFoundError, ValidationError
from store.candidates import check_custom_fields
from store.enrolments import AddResult, AddVerdict
from store.models import (
    Candidate,
    CandidateCategory,
    CandidateTag,
    Company,
    EnrolmentBatch,
    EnrolmentBatchResult,
    Message,
    MessageSource,
    MessageState,
    Segment,
    table,
)


@dataclass(frozen=True)
class LastContacted:
    """When the candidate was last sent an e-mail (a campaign's touchpoint or a stage's
    e-mail, `sent`; tests never reach a candidate): never (`never`), or ever (`never`
    false); before a moment (with `include_never`, those never contacted too: "not
    contacted since"), at or after one, or between the two."""

    never: bool | None = None
    before: datetime | None = None
    after: datetime | None = None
    include_never: bool = False


@dataclass(frozen=True)
class SegmentFilter:
    """Every condition given must hold; none given selects every candidate. Categories:
    any of them; `tags`: every one; `any_tags`: at least one; custom fields: each equal
    to its value; consent: recorded or not."""

    categories: tuple[CandidateCategory, ...] = ()
    tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    consent: bool | None = None
    last_contacted: LastContacted | None = None

    def as_json(self) -> dict[str, Any]:
        """The conditions given, as the API writes them."""
        out: dict[str, Any] = {}
        if self.categories:
            out["categories"] = [c.value for c in self.categories]
        if self.tags:
            out["tags"] = list(self.tags)
        if self.any_tags:
            out["any_tags"] = list(self.any_tags)
        if self.custom_fields:
            out["custom_fields"] = dict(self.custom_fields)
        if self.consent is not None:
            out["consent"] = self.consent
        if (last := self.last_contacted) is not None:
            contacted: dict[str, Any] = {}
            if last.never is not None:
                contacted["never"] = last.never
            if last.before is not None:
                contacted["before"] = last.before.astimezone(UTC).isoformat()
            if last.after is not None:
                contacted["after"] = last.after.astimezone(UTC).isoformat()
            if last.include_never:
                contacted["include_never"] = True
            out["last_contacted"] = contacted
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SegmentFilter:
        last = data.get("last_contacted")
        return cls(
            categories=tuple(CandidateCategory(c) for c in data.get("categories", ())),
            tags=tuple(data.get("tags", ())),
            any_tags=tuple(data.get("any_tags", ())),
            custom_fields=dict(data.get("custom_fields", {})),
            consent=data.get("consent"),
            last_contacted=None
            if last is None
            else LastContacted(
                never=last.get("never"),
                before=_moment(last.get("before")),
                after=_moment(last.get("after")),
                include_never=bool(last.get("include_never", False)),
            ),
        )


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def check_filter(company: Company, segment_filter: SegmentFilter) -> None:
    """What the request's schema cannot know: the custom fields this company declares."""
    try:
        check_custom_fields(company, dict(segment_filter.custom_fields))
    except ValidationError as error:
        raise ValidationError(f"filter.custom_fields: {error}") from None


def _sent_to_candidate() -> ColumnElement[bool]:
    return (
        (Message.candidate_id == Candidate.id)
        & (Message.state == MessageState.SENT)
        & (Message.source_kind != MessageSource.TEST)
    )


def _last_contacted(last: LastContacted) -> list[ColumnElement[bool]]:
    ever = exists().where(_sent_to_candidate())
    latest = select(func.max(Message.sent_at)).where(_sent_to_candidate()).scalar_subquery()
    where: list[ColumnElement[bool]] = []
    if last.never is not None:
        where.append(~ever if last.never else ever)
    if last.before is not None:
        before = latest < last.before
        where.append(or_(~ever, before) if last.include_never else before)
    if last.after is not None:
        where.append(latest >= last.after)
    return where


def conditions(company_id: int, segment_filter: SegmentFilter) -> list[ColumnElement[bool]]:
    """The filter as conditions on `candidates`, within the company; erased candidates
    (anonymous tombstones) are in no segment."""
    f = segment_filter
    where: list[ColumnElement[bool]] = [
        Candidate.company_id == company_id,
        Candidate.erased_at.is_(None),
    ]
    if f.categories:
        where.append(Candidate.category.in_(f.categories))

    def tagged(*tags: str) -> ColumnElement[bool]:
        return exists().where(
            CandidateTag.company_id == company_id,
            CandidateTag.candidate_id == Candidate.id,
            CandidateTag.tag.in_(tags),
        )

    where += [tagged(tag) for tag in f.tags]
    if f.any_tags:
        where.append(tagged(*f.any_tags))
    for name, value in f.custom_fields.items():
        where.append(Candidate.custom_fields[name].as_string() == value)
    if f.consent is not None:
        consented = Candidate.consent_given_at.is_not(None)
        where.append(consented if f.consent else ~consented)
    if f.last_contacted is not None:
        where += _last_contacted(f.last_contacted)
    return where


# -- the segments -------------------------------------------------------------------------


def _name_taken(name: str) -> ConflictError:
    return ConflictError(f"A segment named '{name}' exists already: choose another name.")


async def _check_name(
    session: AsyncSession, company_id: int, name: str, but: int | None = None
) -> None:
    query = select(Segment.id).where(Segment.company_id == company_id, Segment.name == name)
    if but is not None:
        query = query.where(Segment.id != but)
    if await session.scalar(query) is not None:
        raise _name_taken(name)


async def _flush(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise _name_taken(name) from None  # another request took it meanwhile


async def create_segment(
    session: AsyncSession,
    company: Company,
    *,
    name: str,
    description: str,
    segment_filter: SegmentFilter,
) -> Segment:
    check_filter(company, segment_filter)
    await _check_name(session, company.id, name)
    segment = Segment(
        company_id=company.id,
        name=name,
        description=description,
        filter=segment_filter.as_json(),
    )
    session.add(segment)
    await _flush(session, name)
    return segment


async def get_segment(session: AsyncSession, company_id: int, segment_id: int) -> Segment:
    segment = await session.scalar(
        select(Segment).where(Segment.company_id == company_id, Segment.id == segment_id)
    )
    if segment is None:
        raise NotFoundError(f"Segment {segment_id} does not exist.")
    return segment


async def list_segments(
    session: AsyncSession, company_id: int, *, limit: int, offset: int
) -> tuple[Sequence[Segment], int]:
    scope = Segment.company_id == company_id
    total = await session.scalar(select(func.count()).select_from(Segment).where(scope))
    rows = await session.scalars(
        select(Segment).where(scope).order_by(Segment.id).limit(limit).offset(offset)
    )
    return rows.all(), total or 0


async def update_segment(
    session: AsyncSession,
    company: Company,
    segment_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    segment_filter: SegmentFilter | None = None,
) -> Segment:
    """Only what is given changes. A batch already taken from the segment keeps its
    candidates."""
    segment = await get_segment(session, company.id, segment_id)
    if segment_filter is not None:
        check_filter(company, segment_filter)
        segment.filter = segment_filter.as_json()
    if name is not None and name != segment.name:
        await _check_name(session, company.id, name, but=segment.id)
        segment.name = name
    if description is not None:
        segment.description = description
    await _flush(session, segment.name)
    return segment


async def delete_segment(session: AsyncSession, company_id: int, segment_id: int) -> None:
    """Its batches stay, with their candidates and verdicts."""
    await session.delete(await get_segment(session, company_id, segment_id))
    await session.flush()


async def segment_candidates(
    session: AsyncSession, company_id: int, segment: Segment, *, limit: int, offset: int
) -> tuple[Sequence[Candidate], int]:
    """Who the segment holds now, in id order, and how many."""
    where = conditions(company_id, SegmentFilter.from_json(segment.filter))
    total = await session.scalar(select(func.count()).select_from(Candidate).where(*where))
    rows = await session.scalars(
        select(Candidate).where(*where).order_by(Candidate.id).limit(limit).offset(offset)
    )
    return rows.all(), total or 0


# -- a segment's batch --------------------------------------------------------------------

_RESULTS = table(EnrolmentBatchResult)


async def take_candidates(
    session: AsyncSession, company_id: int, segment: Segment, batch: EnrolmentBatch
) -> int:
    """The candidates the segment holds now become the batch's, in one INSERT … SELECT (a
    100,000 of them in a second or two); answers how many."""
    where = conditions(company_id, SegmentFilter.from_json(segment.filter))
    chosen = select(literal(company_id), literal(batch.id), Candidate.id).where(*where)
    connection = await session.connection()
    await connection.execute(
        insert(_RESULTS).from_select(["company_id", "batch_id", "candidate_id"], chosen)
    )
    total = await session.scalar(
        select(func.count()).select_from(_RESULTS).where(_RESULTS.c.batch_id == batch.id)
    )
    return total or 0


async def undecided(session: AsyncSession, batch_id: int, *, after: int, limit: int) -> list[int]:
    """The next candidates of the batch without a verdict, in id order, after `after`."""
    rows = await session.scalars(
        select(_RESULTS.c.candidate_id)
        .where(
            _RESULTS.c.batch_id == batch_id,
            _RESULTS.c.candidate_id > after,
            _RESULTS.c.result.is_(None),
        )
        .order_by(_RESULTS.c.candidate_id)
        .limit(limit)
    )
    return list(rows)


_DECIDE = (
    update(_RESULTS)
    .where(
        _RESULTS.c.batch_id == bindparam("batch"),
        _RESULTS.c.candidate_id == bindparam("candidate"),
        _RESULTS.c.result.is_(None),
    )
    .values(result=bindparam("result"), reason=bindparam("reason"), detail=bindparam("detail"))
)


async def record_verdicts(
    session: AsyncSession, batch: EnrolmentBatch, verdicts: Sequence[AddVerdict]
) -> None:
    """The verdicts on the batch's candidates and in its counts, in the caller's
    transaction (the one that enrolled the added)."""
    if not verdicts:
        return
    connection = await session.connection()
    await connection.execute(
        _DECIDE,
        [
            {
                "batch": batch.id,
                "candidate": v.candidate_id,
                "result": v.result.value,
                "reason": v.reason.value if v.reason else None,
                "detail": v.detail,
            }
            for v in verdicts
        ],
    )
    counts = {result: 0 for result in AddResult}
    for verdict in verdicts:
        counts[verdict.result] += 1
    batch.added += counts[AddResult.ADDED]
    batch.already_active += counts[AddResult.ALREADY_ACTIVE]
    batch.refused += counts[AddResult.REFUSED]
    await session.flush()


@dataclass(frozen=True)
class ResultRow:
    candidate_id: int
    result: AddResult
    reason: str | None
    detail: str | None


async def batch_results(
    session: AsyncSession,
    batch_id: int,
    *,
    result: AddResult | None,
    limit: int,
    offset: int,
) -> tuple[list[ResultRow], int]:
    """The verdicts so far, in candidate order (with `result`, those only)."""
    where = [
        _RESULTS.c.batch_id == batch_id,
        _RESULTS.c.result.is_not(None) if result is None else _RESULTS.c.result == result.value,
    ]
    total = await session.scalar(select(func.count()).select_from(_RESULTS).where(*where))
    rows = await session.execute(
        select(_RESULTS.c.candidate_id, _RESULTS.c.result, _RESULTS.c.reason, _RESULTS.c.detail)
        .where(*where)
        .order_by(_RESULTS.c.candidate_id)
        .limit(limit)
        .offset(offset)
    )
    return [
        ResultRow(candidate_id, AddResult(verdict), reason, detail)
        for candidate_id, verdict, reason, detail in rows
    ], total or 0
