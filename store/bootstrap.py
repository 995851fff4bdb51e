"""Creating a company with its first admin and keys: the demo of `make run`, and a CLI.

    python -m store.bootstrap --name "Acme" --time-zone Europe/Paris \\
        --admin-name "Ada Admin" --admin-email ada@acme.example
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select

from config import Settings
from store.companies import create_company, create_user, issue_api_key
from store.migrate import upgrade
from store.models import Company, Role
from store.session import create_engine, create_session_factory


@dataclass(frozen=True)
class NewCompany:
    company_id: int
    admin_user_id: int
    admin_key: str
    service_key: str


async def bootstrap_company(
    database_url: str,
    *,
    name: str,
    time_zone: str,
    admin_name: str,
    admin_email: str,
    admin_title: str = "",
    custom_fields: list[str] | None = None,
    only_if_empty: bool = False,
) -> NewCompany | None:
    """Create a company, its admin, an admin key and a service key (shown once only)."""
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(f"'{time_zone}' is not an IANA time zone (e.g. Europe/Paris).") from None
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            if only_if_empty and await session.scalar(select(func.count()).select_from(Company)):
                return None
            company = await create_company(
                session, name=name, time_zone=time_zone, custom_fields=custom_fields
            )
            admin = await create_user(
                session,
                company.id,
                role=Role.ADMIN,
                name=admin_name,
                email=admin_email,
                title=admin_title,
            )
            admin_key = await issue_api_key(
                session, company.id, role=Role.ADMIN, user_id=admin.id, label=admin_name
            )
            service_key = await issue_api_key(
                session, company.id, role=Role.SERVICE, user_id=None, label="backend services"
            )
            return NewCompany(company.id, admin.id, admin_key, service_key)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Create a company with its first admin.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--time-zone", required=True)
    parser.add_argument("--admin-name", required=True)
    parser.add_argument("--admin-email", required=True)
    parser.add_argument("--admin-title", default="")
    parser.add_argument("--custom-field", action="append", default=[])
    args = parser.parse_args()
    settings = Settings()
    upgrade(settings.database_url)
    created = asyncio.run(
        bootstrap_company(
            settings.database_url,
            name=args.name,
            time_zone=args.time_zone,
            admin_name=args.admin_name,
            admin_email=args.admin_email,
            admin_title=args.admin_title,
            custom_fields=args.custom_field,
        )
    )
    assert created is not None
    print(f"company {created.company_id}, admin user {created.admin_user_id}")
    print(f"NURTURE_ADMIN_KEY={created.admin_key}")
    print(f"NURTURE_SERVICE_KEY={created.service_key}")


if __name__ == "__main__":
    main()
