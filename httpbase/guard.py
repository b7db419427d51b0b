"""Cross-site protection for every HTTP app of the project (the server's and the bridge's).

One ASGI middleware, in front of everything (auth, REST, docs, pages, MCP):

- **Host**: the `Host` header must name this server: a loopback name (127.0.0.1, localhost, [::1]),
  the address it was bound to (unless a wildcard), or a name the operator allowed
  (`--allowed-host`, `*` for any). Anything else is a DNS-rebinding attempt: 421.
- **Origin**: a browser's `Origin`, when sent, must be this server itself (same scheme, host and
  port as the request) or one the operator allowed (`--allowed-origin`). A foreign page gets 403.
  Requests without an `Origin` (curl, SDKs, other servers) pass: browsers always send one on the
  requests that matter (cross-site POSTs, and reads after a rebinding).
- **Content-Type**: a request with a body must say it is JSON (`application/json` or `+json`):
  415 otherwise. A form or `text/plain` POST is what a page may send cross-site without asking
  first (a CORS "simple" request); refusing it closes that door even to an Origin-less client.

Errors are `{"error": {"code", "message", "field"}}` with the header as the field. Torch-free,
starlette only: the server imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "LOOPBACK_HOSTS",
    "GuardPolicy",
    "RequestGuard",
    "is_loopback_host",
    "server_url_allowed",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback_host(host: str) -> bool:
    """A loopback name or address (`[::1]` with or without brackets)."""
    bare = host.strip("[]").lower()
    return bare in LOOPBACK_HOSTS or bare.startswith("127.")


def _split_host(value: str) -> tuple[str, str | None]:
    """'name:port' -> (name, port); '[::1]:80' -> ('::1', '80'); no port -> (name, None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port
    return value, None


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard lets through. `hosts`: extra host names (no port; '*' = any); `origins`:
    extra origins as `scheme://host[:port]` (a port of '*' matches any)."""

    hosts: frozenset[str] = frozenset()
    origins: frozenset[str] = frozenset()

    @classmethod
    def for_server(
        cls, bind_host: str, hosts: Iterable[str] = (), origins: Iterable[str] = ()
    ) -> GuardPolicy:
        """Loopback always; the bind address unless a wildcard; what the operator added."""
        names = {h.strip().strip("[]").lower() for h in hosts if h.strip()}
        if bind_host not in _WILDCARDS:
            names.add(bind_host.strip("[]").lower())
        return cls(
            hosts=frozenset(names),
            origins=frozenset(o.strip().rstrip("/").lower() for o in origins if o.strip()),
        )

    def host_allowed(self, header: str) -> bool:
        if "*" in self.hosts:
            return True
        name, port = _split_host(header)
        if port is not None and not port.isdigit():
            return False
        return is_loopback_host(name) or name in self.hosts

    def origin_allowed(self, origin: str, host_header: str, scheme: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin == f"{scheme}://{host_header.strip().lower()}":
            return True  # the server's own pages
        if origin in self.origins:
            return True
        scheme_part, sep, rest = origin.partition("://")
        if not sep:
            return False
        name, _port = _split_host(rest)
        bracketed = f"[{name}]" if ":" in name else name
        return f"{scheme_part}://{bracketed}:*" in self.origins


class RequestGuard:
    """The ASGI middleware applying a `GuardPolicy` to every HTTP and WebSocket request."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message, field = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope) -> tuple[int, str, str, str] | None:
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)
        host = headers.get(b"host", b"").decode("latin-1")
        if not host or not self.policy.host_allowed(host):
            return (
                421,
                "misdirected_request",
                "Host: this server does not answer to that name; the operator can add it "
                "with --allowed-host",
                "Host",
            )
        origin = headers.get(b"origin")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if origin is not None and not self.policy.origin_allowed(
            origin.decode("latin-1"), host, scheme
        ):
            return (
                403,
                "forbidden_origin",
                "Origin: requests from other web pages are refused; the operator can allow an "
                "origin with --allowed-origin",
                "Origin",
            )
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS and _has_body(headers):
            media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
            media = media.lower()
            if media != "application/json" and not (
                media.startswith("application/") and media.endswith("+json")
            ):
                return (
                    415,
                    "unsupported_media_type",
                    "Content-Type: a body must be JSON (application/json), "
                    f"got {media or 'none'!r}",
                    "Content-Type",
                )
        return None


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


def _origin_of(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL; None if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default, parts.path.rstrip("/")


def server_url_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether a bridge may push to `url`: one of `allowed` (same scheme, host and port, and
    under its path), or, when the operator listed none, any server on loopback."""
    target = _origin_of(url)
    if target is None:
        return False
    allowed = list(allowed)
    if not allowed:
        return is_loopback_host(target[1])
    for entry in allowed:
        origin = _origin_of(entry)
        if origin is None or origin[:3] != target[:3]:
            continue
        if not origin[3] or target[3] == origin[3] or target[3].startswith(origin[3] + "/"):
            return True
    return False
