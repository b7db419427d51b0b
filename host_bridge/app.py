"""The bridge's HTTP app (Starlette): health, and sessions behind a bearer token (their
checkpoints, and a script session's logs).

`GET /health` is open (a server picks a bridge by it); every other route needs
`Authorization: Bearer <token>` when the bridge has a token, compared in constant time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import anyio.to_thread
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from host_bridge.protocol import BridgeHealth, SessionRequest
from host_bridge.script_logs import LogsQuery
from host_bridge.sessions import SessionError, SessionManager
from httpbase import BearerAuth, bearer_matches, error_response, json_response, read_limited
from httpbase.guard import GuardPolicy, RequestGuard

__all__ = ["build_bridge_app"]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
_MAX_BODY = 1024 * 1024


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

    secret = str(token) if token else None

    def op_id(request: Request) -> str:
        value: str = request.path_params["operation_id"]
        return value

    async def get_health(request: Request) -> Response:
        body = health()
        header = request.headers.get("authorization")
        if header is not None:
            body = body.model_copy(
                update={"token_accepted": bearer_matches(header.encode(), secret)}
            )
        return json_response(body)

    async def list_sessions(_request: Request) -> Response:
        return json_response(manager.list_sessions())

    async def start_session(request: Request) -> Response:
        body = await read_limited(request, _MAX_BODY)
        if body is None:
            return error_response(
                413, "payload_too_large", f"body: at most {_MAX_BODY} bytes", "body"
            )
        try:
            session = SessionRequest.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc, "body")
        # Checking the spec and resolving the device touch the disk and torch: off the loop.
        info, created = await anyio.to_thread.run_sync(manager.start, session)
        return json_response(info, 201 if created else 200)

    async def get_session(request: Request) -> Response:
        return json_response(manager.get(op_id(request)))

    async def session_checkpoints(request: Request) -> Response:
        return json_response(manager.checkpoints(op_id(request)))

    async def session_logs(request: Request) -> Response:
        try:
            query = LogsQuery.model_validate(dict(request.query_params))
        except ValidationError as exc:
            return _invalid(exc, "query")
        return json_response(manager.logs(op_id(request), query))

    async def cancel_session(request: Request) -> Response:
        reason = request.query_params.get("reason")
        info, cancelled = manager.cancel(op_id(request), reason[:500] if reason else None)
        return json_response(info, 202 if cancelled else 200)

    async def on_session_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SessionError)
        return error_response(exc.http_status, exc.code, exc.message, exc.field)

    async def on_http_exception(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_internal_error(_request: Request, exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return error_response(500, "internal", "internal error on the bridge (see its log)")

    app = Starlette(
        routes=[
            Route("/health", get_health, methods=["GET"]),
            Route("/sessions", list_sessions, methods=["GET"]),
            Route("/sessions", start_session, methods=["POST"]),
            Route("/sessions/{operation_id}", get_session, methods=["GET"]),
            Route("/sessions/{operation_id}", cancel_session, methods=["DELETE"]),
            Route("/sessions/{operation_id}/checkpoints", session_checkpoints, methods=["GET"]),
            Route("/sessions/{operation_id}/logs", session_logs, methods=["GET"]),
        ],
        exception_handlers={
            SessionError: on_session_error,
            HTTPException: on_http_exception,
            Exception: on_internal_error,
        },
        lifespan=lifespan,
    )
    app.add_middleware(BearerAuth, token=secret, open_paths=OPEN_PATHS)
    app.add_middleware(RequestGuard, policy=guard or GuardPolicy())
    return app


def _invalid(exc: ValidationError, where: str) -> Response:
    """422 naming the first field a request got wrong, and what is allowed."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or where
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return error_response(422, "invalid_input", f"{field}: {message}", field)
