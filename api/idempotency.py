"""Idempotency-Key for writes from backend services: a repeat answers the first answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import ConflictError, ValidationError
from store.models import IdempotentRequest
from store.session import SessionFactory, transaction

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Yours, unique per request: a repeat answers what the first answered.",
    ),
]


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    data = json.dumps([method, path, jsonable_encoder(body)], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


async def once(
    sessions: SessionFactory,
    company_id: int,
    key: str | None,
    print_: str,
    status_code: int,
    produce: Callable[[AsyncSession], Awaitable[BaseModel]],
) -> JSONResponse:
    """Run `produce` in one transaction that writes (store.session.transaction), or replay
    what it answered for this key before. The key is looked up in that transaction: on
    SQLite it holds the write lock, so a retry that comes while the first runs waits for
    it and replays its answer; on PostgreSQL the second insert of the key answers 409."""
    try:
        async with transaction(sessions) as session:
            if key is not None:
                seen = await session.scalar(
                    select(IdempotentRequest).where(
                        IdempotentRequest.company_id == company_id, IdempotentRequest.key == key
                    )
                )
                if seen is not None:
                    if seen.fingerprint != print_:
                        raise ValidationError(
                            "This Idempotency-Key was used for a different request; use a new key."
                        )
                    return JSONResponse(seen.body["answer"], status_code=seen.status_code)
            answer: Any = jsonable_encoder(await produce(session))
            if key is not None:
                session.add(
                    IdempotentRequest(
                        company_id=company_id,
                        key=key,
                        fingerprint=print_,
                        status_code=status_code,
                        body={"answer": answer},
                    )
                )
    except IntegrityError:
        if key is None:
            raise
        raise ConflictError(
            "A request with this Idempotency-Key is being processed; retry in a moment."
        ) from None
    return JSONResponse(answer, status_code=status_code)
