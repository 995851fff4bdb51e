"""The one table from domain error to HTTP status, and handlers that answer a sentence."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from errors import (
    AddOnDisabledError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    NurtureError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)

STATUS: dict[type[NurtureError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ValidationError: 422,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    AddOnDisabledError: 403,
    UnavailableError: 503,
}


def status_of(error: NurtureError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    raise LookupError(f"{type(error).__name__} has no HTTP status in api/errors.py")


async def _domain(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, NurtureError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    return JSONResponse({"detail": str(error)}, status_code=status_of(error), headers=headers)


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "the request body"


async def _invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [f"{_where(tuple(e['loc']))}: {e['msg']}" for e in error.errors()]
    sentence = "Invalid request: " + "; ".join(problems) + "."
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse({"detail": sentence, "errors": errors}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(NurtureError, _domain)
    app.add_exception_handler(RequestValidationError, _invalid)
