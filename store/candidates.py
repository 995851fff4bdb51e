"""Candidates and their consent record, always read within one company."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from errors import NotFoundError, ValidationError
from store.models import Candidate, Company
from store.session import locking


def check_custom_fields(company: Company, fields: dict[str, Any]) -> None:
    unknown = sorted(set(fields) - set(company.custom_fields))
    if unknown:
        declared = ", ".join(company.custom_fields) or "none"
        raise ValidationError(
            f"Unknown custom field '{unknown[0]}': this company declares {declared}."
        )


async def create_candidate(
    session: AsyncSession, company: Company, values: dict[str, Any]
) -> Candidate:
    check_custom_fields(company, values.get("custom_fields") or {})
    candidate = Candidate(company_id=company.id, **values)
    session.add(candidate)
    await session.flush()
    return candidate


async def update_candidate(
    session: AsyncSession, company: Company, candidate_id: int, values: dict[str, Any]
) -> Candidate:
    candidate = await get_candidate(session, company.id, candidate_id)
    if "custom_fields" in values:
        check_custom_fields(company, values["custom_fields"] or {})
    for name, value in values.items():
        setattr(candidate, name, value)
    await session.flush()
    return candidate


async def get_candidate(
    session: AsyncSession, company_id: int, candidate_id: int, *, lock: bool = False
) -> Candidate:
    query = select(Candidate).where(
        Candidate.company_id == company_id, Candidate.id == candidate_id
    )
    candidate = await session.scalar(locking(query) if lock else query)
    if candidate is None:
        raise NotFoundError(f"Candidate {candidate_id} does not exist.")
    if candidate.erased_at is not None:
        # A tombstone (store/erasure.py): every request that names them answers this.
        raise NotFoundError(
            f"Candidate {candidate_id} was erased on {candidate.erased_at:%Y-%m-%d}: "
            "their data is gone."
        )
    return candidate


async def list_candidates(
    session: AsyncSession, company_id: int, *, limit: int, offset: int
) -> tuple[Sequence[Candidate], int]:
    scope = select(Candidate).where(
        Candidate.company_id == company_id, Candidate.erased_at.is_(None)
    )
    total = await session.scalar(select(func.count()).select_from(scope.subquery()))
    rows = await session.scalars(scope.order_by(Candidate.id).limit(limit).offset(offset))
    return rows.all(), total or 0
