"""Companies, their settings, their users and API keys (stored as SHA-256 digests, shown
once)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from errors import NotFoundError
from store.models import ApiKey, Company, Role, User


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: a company and a role, from an API key."""

    company_id: int
    role: Role
    user_id: int | None


async def create_company(
    session: AsyncSession,
    *,
    name: str,
    time_zone: str,
    campaigns_enabled: bool = True,
    custom_fields: list[str] | None = None,
    brand_logo_url: str | None = None,
) -> Company:
    company = Company(
        name=name,
        time_zone=time_zone,
        campaigns_enabled=campaigns_enabled,
        brand_name=name,
        brand_logo_url=brand_logo_url,
        custom_fields=custom_fields or [],
    )
    session.add(company)
    await session.flush()
    return company


async def create_user(
    session: AsyncSession, company_id: int, *, role: Role, name: str, email: str, title: str = ""
) -> User:
    user = User(company_id=company_id, role=role, name=name, email=email, title=title)
    session.add(user)
    await session.flush()
    return user


async def issue_api_key(
    session: AsyncSession, company_id: int, *, role: Role, user_id: int | None, label: str = ""
) -> str:
    """Create a key and answer it in clear: the only time it is ever seen."""
    raw = f"nk_{role.value[:3]}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(
            company_id=company_id, role=role, user_id=user_id, label=label, key_hash=hash_key(raw)
        )
    )
    await session.flush()
    return raw


async def caller_for_key(session: AsyncSession, raw: str) -> Caller | None:
    key = await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(raw), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        return None
    return Caller(company_id=key.company_id, role=key.role, user_id=key.user_id)


async def get_company(session: AsyncSession, company_id: int) -> Company:
    company = await session.get(Company, company_id)
    if company is None:
        raise NotFoundError(f"Company {company_id} does not exist.")
    return company


async def set_open_tracking(session: AsyncSession, company_id: int, on: bool) -> Company:
    """Turn open tracking on or off: from the next e-mail rendered, campaign e-mails carry
    the pixel (or no longer do), and fetches of pixels already sent count (or no longer)."""
    company = await get_company(session, company_id)
    company.open_tracking = on
    await session.flush()
    return company
