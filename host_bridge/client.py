"""The server's client of a bridge: the HTTP calls of `protocol`, over a shared async client.

Beside the wire contract it speaks, so the two cannot drift; torch-free (the server imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from host_bridge.protocol import BridgeHealth, CheckpointList, SessionInfo, SessionRequest
from host_bridge.script_logs import LogsQuery, OperationLogs
from httpbase import ApiError

if TYPE_CHECKING:  # the client is handed in: by then httpx is imported (see _call)
    import httpx

__all__ = ["HEALTH_TIMEOUT_S", "REQUEST_TIMEOUT_S", "BridgeCallError", "BridgeClient"]

M = TypeVar("M", bound=BaseModel)

HEALTH_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 5.0


class BridgeCallError(Exception):
    """A bridge could not be reached, or answered with an error (`status_code`, `code`,
    `field`)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, code: str = "unreachable"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.field: str | None = None


class BridgeClient:
    """The HTTP calls to the bridge at `url` (with its bearer `token`, if it has one)."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str | None = None) -> None:
        self._client = client
        self.url = url
        self._headers = {"authorization": f"Bearer {token}"} if token else {}

    async def health(self) -> BridgeHealth:
        return await self._call("GET", "/health", BridgeHealth, limit_s=HEALTH_TIMEOUT_S)

    async def start(self, request: SessionRequest) -> SessionInfo:
        body = request.model_dump_json().encode()
        return await self._call("POST", "/sessions", SessionInfo, content=body)

    async def session(self, operation_id: str) -> SessionInfo | None:
        """The session, or None when the bridge has no record of it."""
        return await self._call_or_none("GET", f"/sessions/{operation_id}", SessionInfo)

    async def checkpoints(self, operation_id: str) -> CheckpointList | None:
        """What the session's checkpoints are, or None when the bridge has no record of it."""
        path = f"/sessions/{operation_id}/checkpoints"
        return await self._call_or_none("GET", path, CheckpointList)

    async def logs(self, operation_id: str, query: LogsQuery) -> OperationLogs | None:
        """A script session's stdout or stderr, or None when the bridge has no such session (or
        it ran the built-in trainer)."""
        params = query.model_dump(exclude_none=True)
        path = f"/sessions/{operation_id}/logs"
        return await self._call_or_none("GET", path, OperationLogs, params=params)

    async def cancel(self, operation_id: str, reason: str) -> SessionInfo | None:
        path = f"/sessions/{operation_id}"
        return await self._call_or_none("DELETE", path, SessionInfo, params={"reason": reason})

    async def _call_or_none(
        self, method: str, path: str, model: type[M], **kwargs: Any
    ) -> M | None:
        """`_call`, with None for a 404: the bridge has no record of what was asked."""
        try:
            return await self._call(method, path, model, **kwargs)
        except BridgeCallError as exc:
            if exc.status_code == 404:
                return None
            raise

    async def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        limit_s: float = REQUEST_TIMEOUT_S,
        **kwargs: Any,
    ) -> M:
        import httpx

        headers = {**self._headers, "content-type": "application/json"}
        try:
            response = await self._client.request(
                method, self.url + path, headers=headers, timeout=limit_s, **kwargs
            )
        except httpx.HTTPError as exc:
            raise BridgeCallError(f"cannot reach {self.url}: {type(exc).__name__}") from exc
        if not response.is_success:
            raise _error_of(response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise BridgeCallError(
                f"{self.url}{path} answered something that is not a bridge's answer",
                status_code=response.status_code,
                code="bad_answer",
            ) from exc


def _error_of(response: httpx.Response) -> BridgeCallError:
    try:
        detail = ApiError.model_validate_json(response.content).error
    except ValidationError:
        return BridgeCallError(
            f"HTTP {response.status_code}", status_code=response.status_code, code="http_error"
        )
    error = BridgeCallError(detail.message, status_code=response.status_code, code=detail.code)
    error.field = detail.field
    return error
