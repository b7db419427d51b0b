"""The HTTP plumbing training-mcp's two services share: the server's REST mirror
(`mcp_server.rest`, `mcp_server.app`) and the host bridge (`host_bridge.app`).

Here: the error envelope every error answer carries, JSON answers, bodies read within a size
limit, the bearer-token check (constant time, never logged). `httpbase.guard`: the cross-site
guard in front of both apps, and what counts as loopback. Starlette and pydantic only: nothing
else of training-mcp, no torch.
"""

from __future__ import annotations

import hmac

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ApiError",
    "BearerAuth",
    "ErrorDetail",
    "bearer_matches",
    "error_response",
    "json_response",
    "read_limited",
]


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable: invalid_input, not_found, conflict, payload_too_large, "
        "unauthorized, method_not_allowed, unavailable, busy, internal"
    )
    message: str = Field(description="What is wrong, naming the field and what is allowed")
    field: str | None = Field(
        None, description="The offending input, e.g. points[3].value, limit, body"
    )


class ApiError(BaseModel):
    """Every error answer: `{"error": {"code", "message", "field"}}`."""

    error: ErrorDetail


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    # pydantic writes the JSON (fast, and non-finite floats become null: always valid JSON).
    return Response(
        model.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ApiError(error=ErrorDetail(code=code, message=message, field=field))
    return json_response(body, status, headers)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (declared or streamed): a huge body
    is refused without being read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_matches(header: bytes, token: str | None) -> bool:
    """`Authorization: Bearer <token>` matches, compared in constant time; anything goes when
    there is no token."""
    if not token:
        return True
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


class BearerAuth:
    """ASGI middleware: every path but `open_paths` (and those under `open_prefixes`: pages that
    carry no data) needs the bearer token, when one is set. Refused with 401 and the error
    envelope; the token is never logged."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        open_paths: frozenset[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self._token = token or None
        self._open = open_paths
        self._open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._token is None
            or scope["type"] != "http"
            or scope["path"] in self._open
            or scope["path"].startswith(self._open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if not bearer_matches(header, self._token):
            response = error_response(
                401,
                "unauthorized",
                "Authorization: a valid 'Bearer <token>' header is required",
                "Authorization",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
