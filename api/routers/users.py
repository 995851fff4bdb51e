"""The company's users, as admins see them, and who of them may configure automatic
actions besides the admins."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import SessionDep, UserDep
from api.errors import answers
from api.schemas import PathId, UserOut, UserUpdate
from errors import NotFoundError, PermissionDeniedError
from store.companies import Caller
from store.models import Role, User

router = APIRouter(prefix="/users", tags=["users"], responses=answers(401, 403, 422))


def _admin(caller: Caller) -> None:
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("Only company admins can see and change users' rights.")


def _out(user: User) -> UserOut:
    return UserOut(
        id=user.id, name=user.name, role=user.role.value,
        manages_automations=user.manages_automations,
    )  # fmt: skip


@router.get("", response_model=list[UserOut])
async def list_users(caller: UserDep, session: SessionDep) -> list[UserOut]:
    _admin(caller)
    users = await session.scalars(
        select(User).where(User.company_id == caller.company_id).order_by(User.id)
    )
    return [_out(user) for user in users]


@router.patch("/{user_id}", response_model=UserOut, responses=answers(404))
async def update_user(
    user_id: PathId, body: UserUpdate, caller: UserDep, session: SessionDep
) -> UserOut:
    """Allow a user to manage automatic actions (pipelines, rules, reasons), or not."""
    _admin(caller)
    async with session.begin():
        user = await session.scalar(
            select(User).where(User.company_id == caller.company_id, User.id == user_id)
        )
        if user is None:
            raise NotFoundError(f"User {user_id} does not exist.")
        user.manages_automations = body.manages_automations
        return _out(user)
