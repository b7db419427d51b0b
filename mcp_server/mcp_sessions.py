"""MCP-over-HTTP sessions per client: a cap and the idle time that gives a session back.

The SDK's session manager keeps one global cap (`max_sessions`, 503 past it) and closes a
session once no request has been in flight for `session_idle_timeout`. On its own that lets one
client open every session there is and keep the others out until they idle away. `SessionCap`,
an ASGI wrapper in front of the SDK's app, keeps its own book of the sessions it saw opened
(the `mcp-session-id` an initialize answer carries) by client, and refuses a client that holds
`per_client` of them (429) or a new session once `total` are open (503), with an error that names
the flag to raise. The book follows the SDK's own rule for idleness (no request in flight for
`idle_s`), so a session the SDK closed for idleness is no longer counted here either; a session
ended by the client (`DELETE`) or answered 404 (the SDK no longer has it) is forgotten at once.

A client is the peer's address: with the one bearer token every client of a server shares, the
token does not tell clients apart. Behind a reverse proxy every client shares the proxy's
address; put the cap on the proxy there. Stateless (2026-07-28) requests, which the SDK tells
apart by their `mcp-protocol-version` header, open no session and are never counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SessionBook", "SessionCap", "SessionLimits"]

_SESSION_HEADER = MCP_SESSION_ID_HEADER.encode("ascii")
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.encode("ascii")
_SESSION_VERSIONS = frozenset(v.encode("ascii") for v in HANDSHAKE_PROTOCOL_VERSIONS)


@dataclass(frozen=True)
class SessionLimits:
    per_client: int  # sessions one client may hold open
    total: int  # sessions open at once, in all
    idle_s: float  # a session with no request in flight this long is closed

    def __post_init__(self) -> None:
        if self.per_client < 1 or self.total < 1:
            raise ValueError("MCP session caps must be at least 1")
        if not self.idle_s > 0:
            raise ValueError("the MCP session idle time must be positive")


@dataclass
class _Session:
    client: str
    in_flight: int = 0
    last_seen: float = 0.0


@dataclass
class SessionBook:
    """Who holds which session, and which are idle: the pure decisions, with the clock given."""

    limits: SessionLimits
    _sessions: dict[str, _Session] = field(default_factory=dict)
    _opening: dict[str, int] = field(default_factory=dict)  # client -> initialize requests pending

    def held(self, client: str, now: float) -> int:
        self._reap(now)
        open_ = sum(1 for s in self._sessions.values() if s.client == client)
        return open_ + self._opening.get(client, 0)

    def refusal(self, client: str, now: float) -> tuple[int, str] | None:
        """Why `client` may not open another session now (HTTP status, message), or None; when
        None, an opening is reserved for it until `opened` or `abandoned`."""
        held = self.held(client, now)
        idle = f"{self.limits.idle_s:g}"
        if held >= self.limits.per_client:
            return 429, (
                f"this client already holds {held} MCP sessions, the most one client may "
                f"(--mcp-sessions-per-client {self.limits.per_client}); close one (DELETE /mcp "
                f"with its mcp-session-id) or wait: a session idle {idle} s is closed "
                "(--mcp-session-idle)"
            )
        total = len(self._sessions) + sum(self._opening.values())
        if total >= self.limits.total:
            return 503, (
                f"{total} MCP sessions are open, the most this server keeps "
                f"(--max-mcp-sessions {self.limits.total}); a session idle {idle} s is closed "
                "(--mcp-session-idle)"
            )
        self._opening[client] = self._opening.get(client, 0) + 1
        return None

    def opened(self, client: str, session_id: str | None) -> None:
        """The reserved opening was answered: with the session id the answer carried (its
        request still in flight until `end`), or with none."""
        pending = self._opening.get(client, 0) - 1
        if pending > 0:
            self._opening[client] = pending
        else:
            self._opening.pop(client, None)
        if session_id is not None:
            self._sessions[session_id] = _Session(client, in_flight=1)

    def begin(self, session_id: str) -> bool:
        """A request for a known session is being served; False if the session is not ours."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.in_flight += 1
        return True

    def end(self, session_id: str, now: float, *, gone: bool) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        if gone:  # the client closed it, or the SDK no longer has it
            del self._sessions[session_id]
            return
        session.in_flight -= 1
        session.last_seen = now

    def _reap(self, now: float) -> None:
        idle = [
            sid
            for sid, s in self._sessions.items()
            if s.in_flight == 0 and now - s.last_seen >= self.limits.idle_s
        ]
        for sid in idle:
            del self._sessions[sid]


def _refused(status: int, message: str) -> Response:
    body = JSONRPCError(
        jsonrpc="2.0", id=None, error=ErrorData(code=INTERNAL_ERROR, message=message)
    )
    headers = {"Retry-After": "1"} if status == 503 else None
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _client(scope: Scope) -> str:
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"


class SessionCap:
    """ASGI wrapper of the SDK's streamable-HTTP app at `path`: admits new sessions by the book
    and keeps the book up to date from the requests and answers that pass."""

    def __init__(
        self,
        app: ASGIApp,
        limits: SessionLimits,
        *,
        path: str = "/mcp",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.book = SessionBook(limits)
        self._path = path
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self._path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        session_id = headers.get(_SESSION_HEADER)
        if session_id is None:
            version = headers.get(_VERSION_HEADER)
            if version is not None and version not in _SESSION_VERSIONS:
                # A stateless (2026-07-28) request, as the SDK routes it: it opens no session,
                # however long it streams (subscriptions/listen), so it is never counted.
                await self.app(scope, receive, send)
                return
            await self._open(scope, receive, send)
            return
        sid = session_id.decode("latin-1")
        if not self.book.begin(sid):  # not one we saw opened: the SDK answers it (404)
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            ended = scope["method"] == "DELETE" and 200 <= status < 300
            self.book.end(sid, self._clock(), gone=ended or status == 404)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":  # only a POST (initialize) opens a session
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        refusal = self.book.refusal(client, self._clock())
        if refusal is not None:
            await _refused(*refusal)(scope, receive, send)
            return
        answered = False
        opened: str | None = None

        async def watch(message: Message) -> None:
            nonlocal answered, opened
            if message["type"] == "http.response.start":
                # Booked as the answer starts: the client may use the id before its stream ends.
                value = dict(message.get("headers", [])).get(_SESSION_HEADER)
                if value and message["status"] < 400:
                    opened = value.decode("latin-1")
                answered = True
                self.book.opened(client, opened)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not answered:
                self.book.opened(client, None)
            elif opened is not None:
                self.book.end(opened, self._clock(), gone=False)
