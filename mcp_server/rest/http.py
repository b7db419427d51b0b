"""The REST mirror's plumbing: the endpoint table entry, reading bodies within a size limit,
parsing query strings into models, and shaping every answer (errors included) as JSON."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from httpbase import error_response, json_response, read_limited
from mcp_server.core.errors import InvalidInputError, ServiceError, from_validation_error
from mcp_server.rest.models import MAX_BODY_BYTES

__all__ = [
    "Endpoint",
    "PayloadTooLargeError",
    "body_or_empty",
    "error_response",
    "http_exception_response",
    "internal_error_response",
    "json_response",
    "parse_body",
    "parse_query",
    "read_body",
    "read_json",
    "service_error_response",
]

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]


class PayloadTooLargeError(ServiceError):
    code = "payload_too_large"
    http_status = 413


@dataclass(frozen=True)
class Endpoint:
    """One route: what routing needs and what the OpenAPI document says about it."""

    method: str
    path: str  # under /api/v1, with {operation_id} style parameters
    handler: Handler
    name: str
    summary: str
    ok_status: int = 200
    ok: type[BaseModel] | str | None = None  # a model, or a media type for non-JSON bodies
    also: tuple[str, ...] = ()  # further media types the answer may have (chosen by a parameter)
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # response header -> description
    events: dict[str, type[BaseModel]] = field(default_factory=dict)  # SSE event -> its data
    open: bool = False  # no bearer token needed


def service_error_response(exc: ServiceError) -> Response:
    return error_response(exc.http_status, exc.code, exc.message, exc.field)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def http_exception_response(exc: HTTPException) -> Response:
    """Routing's own answers (no such route, wrong method) in the same JSON shape."""
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = "no such route under /api/v1" if exc.status_code == 404 else str(exc.detail)
    if exc.status_code == 405 and exc.headers:
        message = f"method not allowed here; allowed: {exc.headers.get('Allow', '')}"
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


def internal_error_response() -> Response:
    # The traceback goes to the server log, never to the client.
    return error_response(500, "internal", "internal error; the server log has the details")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body's bytes, refused with 413 past `limit` (see `read_json`)."""
    raw = await read_limited(request, limit)
    if raw is None:
        raise PayloadTooLargeError(f"body: larger than the limit of {limit} bytes", field="body")
    return raw


async def read_json(request: Request, limit: int = MAX_BODY_BYTES, *, required: bool = True) -> Any:
    """The body parsed as JSON (NaN and Infinity tokens accepted), refused with 413 past `limit`
    bytes: at once when Content-Length says so, else as soon as the stream passes it."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if required:
            raise InvalidInputError("body: a JSON object is required", field="body")
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidInputError(f"body: not valid JSON ({exc})", field="body") from exc


def body_or_empty(data: Any) -> Any:
    """No body is `{}`; any other body, `[]`, `0`, `false` or `""` included, is parsed as given
    (and refused when it is not an object)."""
    return {} if data is None else data


def parse_body(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"body: expected a JSON object, got {type(data).__name__}", field="body"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def parse_query(request: Request, model: type[M]) -> M:
    """Query parameters into `model`: unknown names are refused, list fields take repeated
    parameters and comma-separated values, other fields must appear at most once."""
    fields = model.model_fields
    lists = {name for name, info in fields.items() if _is_list(info.annotation)}
    values: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise InvalidInputError(
                f"{key}: unknown query parameter; allowed: {allowed}", field=key
            )
        if key in lists:
            values.setdefault(key, []).extend(v for v in value.split(",") if v)
        elif key in values:
            raise InvalidInputError(f"{key}: given more than once", field=key)
        else:
            values[key] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(
        get_origin(a) is list for a in get_args(annotation)
    )
