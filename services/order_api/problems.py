"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import copy
import http
from typing import Any

import fastapi
import fastapi.exceptions
import orjson
from starlette import exceptions as starlette_exceptions

from order_api import schemas

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> fastapi.Response:
    title = http.HTTPStatus(status).phrase
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra or {})
    return fastapi.Response(
        content=orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    location = ".".join(str(part) for part in error.get("loc", ()))
    return {"field": location, "message": error.get("msg", ""), "type": error.get("type", "")}


async def _on_problem(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.detail, headers=exc.headers, extra=exc.extra)


async def _on_validation(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, fastapi.exceptions.RequestValidationError)
    errors = [_describe(e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(400, "the request body is not valid JSON", extra={"errors": errors})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem_response(422, f"the request is invalid: {summary}", extra={"errors": errors})


async def _on_http(request: fastapi.Request, exc: Exception) -> fastapi.Response:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    return problem_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def install(app: fastapi.FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(fastapi.exceptions.RequestValidationError, _on_validation)
    app.add_exception_handler(starlette_exceptions.HTTPException, _on_http)


SCHEMAS = schemas.openapi_components(schemas.Problem)
"""The Problem model and the models it uses, as OpenAPI components (app.py adds them)."""

# FastAPI's own description of its 422 body, which this API never sends.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def describe_error_responses(openapi: dict[str, Any]) -> None:
    """Make every error response in `openapi` what the handlers above send: a Problem document
    as application/problem+json (FastAPI describes them as application/json bodies)."""
    problem = {PROBLEM_JSON: {"schema": {"$ref": schemas.COMPONENT_REF.format(model="Problem")}}}
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = copy.deepcopy(problem)
    components = openapi.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)
