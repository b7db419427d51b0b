"""The host bridge's HTTP contract: what the server sends to start a session and what the bridge
answers. The same models are the bridge's JSON and what the server's client
(`mcp_server.core.dispatch`) parses, so the two sides cannot drift.
Torch-free: the server imports this module.

    GET    /health           BridgeHealth (no token needed)
    GET    /sessions         SessionList
    POST   /sessions         SessionRequest -> 201 SessionInfo (200 if it exists already)
    GET    /sessions/{id}    SessionInfo
    DELETE /sessions/{id}    202 SessionInfo: cancel, effective within one batch
    GET    /sessions/{id}/checkpoints    CheckpointList: what a fork or resume can start from

A request with `start_from` trains from a checkpoint this bridge holds: another session's (a
fork, under a new id) or its own (a resume: the same id, a session that has ended, trained again
from its checkpoint with the new request).

Errors are `httpbase.ApiError`, `{"error": {"code", "message", "field"}}`, as on the server's
REST mirror.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator

from trainer.retention import CheckpointIndex
from trainer.spec import TrainingSpec
from training_mcp.points import PUSH_TOKEN_HEADER

__all__ = [
    "OPERATION_ID_PATTERN",
    "PUSH_TOKEN_HEADER",
    "RESTART_ERROR",
    "SHUTDOWN_ERROR",
    "BridgeHealth",
    "CheckpointList",
    "GpuInfo",
    "ScriptRun",
    "SessionInfo",
    "SessionList",
    "SessionRequest",
    "SessionStatus",
    "StartFrom",
]

OPERATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

SessionStatus = Literal["running", "completed", "failed", "cancelled"]

# How a bridge reports a run it could not finish because it itself stopped: the server knows
# these (with its own "bridge lost") as runs to resume once the bridge is back.
SHUTDOWN_ERROR = "the bridge shut down during the run; its finished epochs are kept"
RESTART_ERROR = "the bridge stopped during the run (it was restarted); its finished epochs are kept"


class StartFrom(BaseModel):
    """A checkpoint on the bridge: epoch `epoch` of the session `operation_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str = Field(pattern=OPERATION_ID_PATTERN)
    epoch: int = Field(ge=1, le=10_000_000)


class CheckpointList(BaseModel):
    """The checkpoints a session's folder on the bridge holds (kept within its disk budget)."""

    operation_id: str
    epochs: list[int]
    best: int | None = None
    last: int | None = None

    def index(self) -> CheckpointIndex:
        return CheckpointIndex(epochs=tuple(self.epochs), last=self.last, best=self.best)


class ScriptRun(BaseModel):
    """Run the entry point `entry_point` of this bridge's own declarations with `params`: the
    bridge checks them again against its file before anything starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_point: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    params: dict[str, Any] = Field(default_factory=dict)


class SessionRequest(BaseModel):
    """Train `spec` (or run the declared script `script`) here and push everything to the server
    at `server_url` as `operation_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str = Field(
        pattern=OPERATION_ID_PATTERN, description="The server's id for the run"
    )
    spec: TrainingSpec | None = None
    script: ScriptRun | None = Field(
        default=None, description="A declared entry point instead of a spec"
    )
    server_url: str = Field(
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        max_length=2000,
        description="The server's base URL: metrics go to "
        "{server_url}/api/v1/operations/{operation_id}/metrics",
    )
    server_token: SecretStr | None = Field(
        None, description="Bearer token for the server's REST mirror, if it needs one"
    )
    heartbeat_interval_s: float = Field(
        5.0, gt=0, le=300, description="How often to tell the server the run is alive"
    )
    push_token: SecretStr | None = Field(
        default=None,
        max_length=200,
        description=f"The run's push credential: sent as {PUSH_TOKEN_HEADER} with every push",
    )
    start_from: StartFrom | None = Field(
        default=None, description="Train from this checkpoint on the bridge (fork or resume)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SessionRequest:
        if (self.spec is None) == (self.script is None):
            raise ValueError("give exactly one of spec and script")
        if self.script is not None and self.start_from is not None:
            raise ValueError("start_from: a script run starts from no checkpoint")
        return self

    @property
    def epochs_total(self) -> int:
        """The epochs the run is to train (a script's `epochs` parameter; 0 if it has none)."""
        if self.spec is not None:
            return self.spec.epochs
        assert self.script is not None
        epochs = self.script.params.get("epochs")
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else 0

    @field_serializer("server_token", "push_token", when_used="json")
    def _reveal_on_the_wire(self, token: SecretStr | None) -> str | None:
        # repr and logs show '**********'; only the JSON sent to the bridge carries the token.
        return None if token is None else token.get_secret_value()


class SessionInfo(BaseModel):
    """One session as the bridge has it. `points_pending`: spooled here, not yet stored by the
    server; `delivered`: the final status reached the server (nothing is left to send)."""

    operation_id: str
    status: SessionStatus
    device: str | None = Field(default=None, description="Where it trains: cpu, cuda, cuda:1, mps")
    epochs_done: int = 0
    epochs_total: int
    created_at: float = Field(description="Unix seconds")
    started_at: float | None = Field(
        default=None, description="When training began (data loading on)"
    )
    finished_at: float | None = Field(default=None, description="When training ended")
    error: str | None = None
    reason: str | None = None
    cancel_requested: bool = False
    points_pending: int = 0
    delivered: bool = False

    @property
    def finished(self) -> bool:
        return self.status != "running"


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class GpuInfo(BaseModel):
    index: int
    name: str
    total_memory_bytes: int
    free_memory_bytes: int | None = None


class BridgeHealth(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    torch_version: str
    cuda_available: bool
    mps_available: bool = False
    devices: list[GpuInfo] = Field(default_factory=list, description="CUDA devices")
    best_device: str = Field(description="Where device 'auto' trains here")
    sessions_running: int
    max_sessions: int
    token_accepted: bool | None = Field(
        default=None,
        description="Whether this request's bearer token would be accepted (None: none was "
        "given). Lets a server check its token without starting anything",
    )

    @property
    def has_gpu(self) -> bool:
        return self.cuda_available and bool(self.devices)
