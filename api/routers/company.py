"""The company's settings: its users read them, its admins change them."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, UserDep
from api.errors import answers
from api.schemas import CompanyOut, CompanyUpdate
from errors import PermissionDeniedError
from store import companies as store
from store.models import Company, Role

router = APIRouter(prefix="/company", tags=["company"], responses=answers(401, 403))


def _out(company: Company) -> CompanyOut:
    return CompanyOut(
        id=company.id,
        name=company.name,
        time_zone=company.time_zone,
        campaigns_enabled=company.campaigns_enabled,
        open_tracking=company.open_tracking,
    )


@router.get("", response_model=CompanyOut)
async def get_company(caller: UserDep, session: SessionDep) -> CompanyOut:
    async with session.begin():
        return _out(await store.get_company(session, caller.company_id))


@router.patch("", response_model=CompanyOut, responses=answers(422))
async def update_company(body: CompanyUpdate, caller: UserDep, session: SessionDep) -> CompanyOut:
    """Open tracking is off until an admin turns it on: the pixel needs the candidates'
    consent (ePrivacy). On, each branded campaign e-mail rendered from then on carries a
    pixel signed for its message; off, none does and no fetch counts any more."""
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("Only company admins can change the company's settings.")
    async with session.begin():
        return _out(await store.set_open_tracking(session, caller.company_id, body.open_tracking))
