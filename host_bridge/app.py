"""The bridge's HTTP app (Starlette): health, and sessions behind a bearer token.

`GET /health` is open (a server picks a bridge by it); every other route needs
`Authorization: Bearer <token>` when the bridge has a token, compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from host_bridge.guard import GuardPolicy, RequestGuard
from host_bridge.protocol import BridgeError, BridgeHealth, ErrorDetail, SessionRequest
from host_bridge.sessions import SessionError, SessionManager

__all__ = ["BearerAuth", "build_bridge_app"]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
_MAX_BODY = 1024 * 1024


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        model.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = BridgeError(error=ErrorDetail(code=code, message=message, field=field))
    return _json(body, status, headers)


def _token_ok(header: bytes, token: Secret | None) -> bool:
    """`Authorization: Bearer <token>` matches (constant time); anything goes without a token."""
    if not token:
        return True
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), str(token).encode())


async def _read_limited(request: Request, limit: int) -> bytes | None:
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


class BearerAuth:
    """Every path but /health needs the bearer token, when one is set. Never logs the token."""

    def __init__(self, app: ASGIApp, token: Secret | None) -> None:
        self.app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        if not _token_ok(header, self._token):
            response = _error(
                401,
                "unauthorized",
                "Authorization: a valid 'Bearer <token>' header is required",
                "Authorization",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_bridge_app(
    manager: SessionManager,
    health: Callable[[], BridgeHealth],
    *,
    token: Secret | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    guard: GuardPolicy | None = None,
) -> Starlette:
    """The bridge's routes over `manager`; `health()` describes this host (torch, devices).
    `guard`: the Host/Origin/Content-Type policy (default: loopback names only)."""

    def op_id(request: Request) -> str:
        value: str = request.path_params["operation_id"]
        return value

    async def get_health(request: Request) -> Response:
        body = health()
        header = request.headers.get("authorization")
        if header is not None:
            body = body.model_copy(update={"token_accepted": _token_ok(header.encode(), token)})
        return _json(body)

    async def list_sessions(_request: Request) -> Response:
        return _json(manager.list_sessions())

    async def start_session(request: Request) -> Response:
        body = await _read_limited(request, _MAX_BODY)
        if body is None:
            return _error(413, "payload_too_large", f"body: at most {_MAX_BODY} bytes", "body")
        try:
            session = SessionRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            return _error(422, "invalid_input", f"{field}: {message}", field)
        # Checking the spec and resolving the device touch the disk and torch: off the loop.
        info, created = await anyio.to_thread.run_sync(manager.start, session)
        return _json(info, 201 if created else 200)

    async def get_session(request: Request) -> Response:
        return _json(manager.get(op_id(request)))

    async def cancel_session(request: Request) -> Response:
        reason = request.query_params.get("reason")
        info, cancelled = manager.cancel(op_id(request), reason[:500] if reason else None)
        return _json(info, 202 if cancelled else 200)

    async def on_session_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SessionError)
        return _error(exc.http_status, exc.code, exc.message, exc.field)

    async def on_http_exception(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    async def on_internal_error(_request: Request, exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return _error(500, "internal", "internal error on the bridge (see its log)")

    app = Starlette(
        routes=[
            Route("/health", get_health, methods=["GET"]),
            Route("/sessions", list_sessions, methods=["GET"]),
            Route("/sessions", start_session, methods=["POST"]),
            Route("/sessions/{operation_id}", get_session, methods=["GET"]),
            Route("/sessions/{operation_id}", cancel_session, methods=["DELETE"]),
        ],
        exception_handlers={
            SessionError: on_session_error,
            HTTPException: on_http_exception,
            Exception: on_internal_error,
        },
        lifespan=lifespan,
    )
    app.add_middleware(BearerAuth, token=token)
    app.add_middleware(RequestGuard, policy=guard or GuardPolicy())
    return app
