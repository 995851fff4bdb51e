"""What a route depends on: a session, the caller (from an API key), Temporal, the clock,
the template processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from errors import AddOnDisabledError, AuthenticationError, PermissionDeniedError
from mail.sandbox import TemplateSandbox
from orchestration import Workflows
from store.companies import Caller, caller_for_key, get_company
from store.models import Company, Role
from store.session import SessionFactory

Clock = Callable[[], Awaitable[datetime]]

_bearer = HTTPBearer(auto_error=False, description="An API key: a user's or a service's.")


def _sessions(request: Request) -> SessionFactory:
    sessions: SessionFactory = request.app.state.sessions
    return sessions


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _sessions(request)() as session:
        yield session


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _workflows(request: Request) -> Workflows:
    workflows: Workflows = request.app.state.workflows
    return workflows


async def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return await clock()


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        raise AuthenticationError(
            "This route needs an API key: send 'Authorization: Bearer <key>'."
        )
    async with _sessions(request)() as session:
        caller = await caller_for_key(session, credentials.credentials)
    if caller is None:
        raise AuthenticationError("This API key is not known (or was revoked).")
    return caller


def _user(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if caller.role is Role.SERVICE:
        raise PermissionDeniedError("This route is for the company's users, not service keys.")
    return caller


def _writer(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if caller.role not in (Role.SERVICE, Role.ADMIN):
        raise PermissionDeniedError("Only backend services and admins may write candidates.")
    return caller


def _service(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if caller.role is not Role.SERVICE:
        raise PermissionDeniedError("Events come from backend services: use a service key.")
    return caller


async def _campaign_admin(request: Request, caller: Annotated[Caller, Depends(_caller)]) -> Company:
    """Campaigns are for admins of a company with the add-on; this answers that company."""
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("Only company admins can see or manage campaigns.")
    async with _sessions(request)() as session:
        company = await get_company(session, caller.company_id)
    if not company.campaigns_enabled:
        raise AddOnDisabledError(
            "The campaigns add-on is off for this company: enable it to use campaigns."
        )
    return company


SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
WorkflowsDep = Annotated[Workflows, Depends(_workflows)]
SessionsDep = Annotated[SessionFactory, Depends(_sessions)]
NowDep = Annotated[datetime, Depends(_now)]
CallerDep = Annotated[Caller, Depends(_caller)]
UserDep = Annotated[Caller, Depends(_user)]
WriterDep = Annotated[Caller, Depends(_writer)]
ServiceDep = Annotated[Caller, Depends(_service)]
CampaignAdminDep = Annotated[Company, Depends(_campaign_admin)]


def _templates(request: Request) -> TemplateSandbox:
    """The processes that check templates: never the API's event loop."""
    templates: TemplateSandbox = request.app.state.templates
    return templates


TemplatesDep = Annotated[TemplateSandbox, Depends(_templates)]
