"""Server settings, built once by the CLI (the only place that reads the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from storage import default_database_url
from trainer.budget import ResourceLimits
from trainer.checkpoint_budget import CheckpointBudget
from trainer.preflight import TrainerOptions
from training_mcp.system import DEFAULT_INTERVAL_S, GpuReader

__all__ = ["BridgeTarget", "Secret", "ServerConfig"]


class Secret:
    """A string that never shows itself in a repr or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class BridgeTarget:
    """A GPU host bridge this server may dispatch runs to."""

    url: str
    token: Secret | None = None


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = field(default_factory=lambda: Path.home() / ".training-mcp")
    db_url: str | None = None
    max_concurrent_runs: int = 2
    allow_factory: bool = False
    data_roots: tuple[Path, ...] = ()
    bridges: tuple[BridgeTarget, ...] = ()
    heartbeat_timeout_s: float = 60.0
    public_url: str | None = None  # how bridges reach this server's ingest route
    token: Secret | None = None
    ray_address: str | None = None  # "auto" (a local Ray) or a cluster's address; None: no Ray
    entry_points_file: Path | None = None  # the operator's declared training scripts (TOML)
    script_grace_s: float = 5.0  # a stopped script's time per signal (SIGINT, SIGTERM, SIGKILL)
    ray_namespace: str = "training-mcp"  # where the runs' named actors live on the cluster
    ray_retries: int = 0  # times a run whose Ray worker died is started again from scratch
    allowed_hosts: tuple[str, ...] = ()  # Host names besides loopback and the bind address
    allowed_origins: tuple[str, ...] = ()  # browser origins besides the server's own
    limits: ResourceLimits | None = None  # a run's budget; None: defaults from this machine
    checkpoints: CheckpointBudget = field(default_factory=CheckpointBudget)
    max_streams_per_run: int = 8  # REST event streams of one run open at once
    max_streams: int = 64  # REST event streams open at once, in all
    mcp_max_sessions: int = 100  # MCP-over-HTTP sessions open at once
    mcp_sessions_per_client: int = 32  # of those, held by one client (peer address)
    mcp_session_idle_s: float = 600.0  # an MCP session with no request this long is closed
    resume_interrupted: bool = False  # on start, resume local and script runs left interrupted
    system_interval_s: float = DEFAULT_INTERVAL_S  # system/... metrics of runs; 0: none
    system_gpu: GpuReader | Literal["nvml"] | None = "nvml"  # GPU readings (tests: fixed ones)

    @property
    def database_url(self) -> str:
        return self.db_url or default_database_url(self.data_dir)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        """Where script runs' logs are kept, a folder per run (local, and Ray ones collected)."""
        return self.data_dir / "logs"

    @property
    def trainer_options(self) -> TrainerOptions:
        """What every local run and pre-flight check here may do."""
        return TrainerOptions(
            data_roots=self.allowed_data_roots,
            allow_factory=self.allow_factory,
            limits=self.limits or ResourceLimits.for_memory(),
            checkpoint_budget_bytes=self.checkpoints.per_run,
        )

    @property
    def allowed_data_roots(self) -> tuple[Path, ...]:
        """CSV files must lie under one of these: by default only the data directory. Never the
        working directory unless asked for: a stdio server started in `/` would read any file."""
        return self.data_roots or (self.data_dir,)
