"""Errors over HTTP: the one table to statuses, handlers that answer a sentence, their docs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from errors import (
    AddOnDisabledError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    NurtureError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
    clause,
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


# -- what the document says they answer ---------------------------------------------------


class ErrorOut(BaseModel):
    """Every error's body: one sentence a person can act on."""

    detail: str = Field(examples=["Campaign 7 does not exist."])


class ProblemOut(BaseModel):
    loc: list[int | str] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the field's path"
    )
    msg: str
    type: str


class InvalidOut(ErrorOut):
    """A 422: the sentence, and each problem when the request failed validation (none when
    it was well-formed but names something that is not valid, such as an unknown sender)."""

    detail: str = Field(examples=["Invalid request: touchpoints.0.subject: field required."])
    errors: list[ProblemOut] = Field(default_factory=list)


def _json(model: type[BaseModel]) -> dict[str, Any]:
    # By reference rather than `model=`: FastAPI files a model under the route's own media
    # type, and the unsubscribe pages' errors are JSON, not HTML.
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


_ANSWERS: dict[int, dict[str, Any]] = {
    401: {
        "description": "No API key, or one that is not known (or was revoked)",
        "content": _json(ErrorOut),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
    },
    403: {
        "description": "The key's role may not do this, or the campaigns add-on is off",
        "content": _json(ErrorOut),
    },
    404: {"description": "No such record in this company", "content": _json(ErrorOut)},
    409: {"description": "The record's state does not allow this now", "content": _json(ErrorOut)},
    422: {
        "description": "The request is not valid: the sentence says why",
        "content": _json(InvalidOut),
    },
    503: {
        "description": "Temporal or the template processes did not answer, or are busy; "
        "retrying is safe",
        "content": _json(ErrorOut),
    },
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a router or route that can answer these error statuses."""
    return {status: _ANSWERS[status] for status in statuses}


async def _domain(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, NurtureError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    return JSONResponse({"detail": str(error)}, status_code=status_of(error), headers=headers)


_WHERE = ("body", "query", "path", "header", "cookie")


def _where(loc: tuple[int | str, ...]) -> str:
    # The first part says where (body, query, path, header); the rest names the field,
    # which may itself be called `body`.
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in _WHERE else [str(p) for p in loc]
    return ".".join(parts) or "the request body"


def _problem(e: Mapping[str, Any]) -> str:
    """One validation problem as a clause a person can act on (pydantic's wording, less its
    "Value error," prefix; the body's own problems said in the request's terms)."""
    loc, ctx = tuple(e["loc"]), e.get("ctx") or {}
    if e["type"] == "json_invalid":
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"the body is not valid JSON{at} ({clause(str(ctx.get('error', e['msg'])))})"
    if loc == ("body",) and e["type"] == "missing":
        return "the request needs a JSON object as its body"
    if loc == ("body",) and e["type"] in ("model_attributes_type", "dict_type"):
        if isinstance(e.get("input"), bytes | str):
            return "the body must be a JSON object sent with 'Content-Type: application/json'"
        return "the body must be a JSON object"
    message = str(ctx["error"]) if e["type"] == "value_error" and "error" in ctx else e["msg"]
    return f"{_where(loc)}: {clause(message)}"


async def _invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_problem(e) for e in error.errors()]
    sentence = "Invalid request: " + "; ".join(problems) + "."
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse({"detail": sentence, "errors": errors}, status_code=422)


def _allowed(request: Request) -> list[str]:
    """Every method of every route on this path (a path with GET and PATCH is two routes,
    and an included router's routes are only reached through it)."""
    return sorted(
        {
            method
            for route in iter_route_contexts(request.app.router.routes)
            if route.matches(request.scope)[0] is not Match.NONE
            for method in route.methods or ()
        }
    )


async def _routing(request: Request, error: Exception) -> Response:
    """Routing's own answers as sentences: no route, a method the path does not have (where
    Starlette's Allow names only the methods of the first route it matched), a body that
    is not text."""
    assert isinstance(error, HTTPException)
    path = request.url.path
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        # FastAPI answers 400 "There was an error parsing the body" for bytes that are not
        # text; they are as invalid as any JSON that does not parse, which answers 422.
        at = error.__cause__.start
        problem = {
            "type": "json_invalid",
            "loc": ("body", at),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": f"byte {at} is not UTF-8"},
        }
        return await _invalid(request, RequestValidationError([problem]))
    if error.status_code == 404:
        detail = f"Nothing is at {path}: the API's routes are listed in /openapi.json."
        return JSONResponse({"detail": detail}, status_code=404)
    if error.status_code == 405:
        allowed = _allowed(request)
        detail = f"{path} does not answer {request.method}: it allows {', '.join(allowed)}."
        return JSONResponse(
            {"detail": detail}, status_code=405, headers={"Allow": ", ".join(allowed)}
        )
    return await http_exception_handler(request, error)


def _truthful(document: dict[str, Any]) -> dict[str, Any]:
    """Adds the error bodies `answers` refers to, and drops FastAPI's own 422: it lists one
    on every route with parameters that declares none, and ours declare theirs, so one left
    is on a route that cannot answer 422."""
    default = "#/components/schemas/HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answered = operation.get("responses", {})
            schema = answered.get("422", {}).get("content", {}).get("application/json", {})
            if schema.get("schema", {}).get("$ref") == default:
                del answered["422"]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    for model in (ErrorOut, InvalidOut):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return document


def install(app: FastAPI) -> None:
    app.add_exception_handler(NurtureError, _domain)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _routing)
    document = app.openapi
    truthful: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        # Once: FastAPI caches its document, and this one is made from it.
        if not truthful:
            truthful.append(_truthful(document()))
        return truthful[0]

    app.openapi = openapi  # type: ignore[method-assign]
