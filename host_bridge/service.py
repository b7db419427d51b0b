"""Run a bridge: `training-mcp bridge --host 127.0.0.1 --port 8766 --token ... --data-dir ...`.

The CLI (`mcp_server.cli`, the one place that reads the environment) builds a `BridgeConfig` and
calls `run_bridge`. The bridge owns its spool and sessions for as long as it serves: on start it
resumes deliveries an earlier process left unfinished, on stop it ends running sessions as failed
and keeps whatever the server has not confirmed for the next start.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Secret

from host_bridge.app import build_bridge_app
from host_bridge.entry_points import EntryPointFileError, load_entry_points
from host_bridge.protocol import BridgeHealth, GpuInfo
from host_bridge.sessions import BridgeOptions, SessionManager
from httpbase.guard import GuardPolicy, is_loopback_host
from trainer.budget import ResourceLimits
from trainer.checkpoint_budget import CheckpointBudget
from training_mcp.system import DEFAULT_INTERVAL_S

__all__ = [
    "DEFAULT_PORT",
    "SWITCH_INTERVAL_S",
    "BridgeConfig",
    "bridge_app",
    "host_health",
    "run_bridge",
]

log = logging.getLogger("training_mcp.bridge")

DEFAULT_PORT = 8766
# The training thread holds the GIL most of the time; a thread that wants it waits up to this
# long per hand-over (Python's default is 5 ms), and sending one request takes several. 1 ms
# keeps an epoch's trip to the server short at no measurable cost to training.
SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True)
class BridgeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: Secret | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".training-mcp-bridge")
    max_sessions: int = 2
    data_roots: tuple[Path, ...] = ()
    allow_factory: bool = False
    log_level: str = "INFO"
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    allowed_servers: tuple[str, ...] = ()  # empty: servers on loopback only
    limits: ResourceLimits | None = None  # None: defaults from this machine's memory
    checkpoints: CheckpointBudget = field(default_factory=CheckpointBudget)
    system_interval_s: float = DEFAULT_INTERVAL_S  # system/... metrics of sessions; 0: none
    entry_points_file: Path | None = None  # --entry-points: the scripts it runs for a server
    script_grace_s: float = 5.0  # --script-grace: a stopped script's time per signal

    @property
    def options(self) -> BridgeOptions:
        """`EntryPointFileError` when the entry points file is unusable."""
        path = self.entry_points_file
        return BridgeOptions(
            entry_points=load_entry_points(path) if path is not None else {},
            data_dir=self.data_dir,
            max_sessions=self.max_sessions,
            data_roots=self.data_roots or (self.data_dir,),
            allow_factory=self.allow_factory,
            allowed_servers=self.allowed_servers,
            limits=self.limits or ResourceLimits.for_memory(),
            checkpoints=self.checkpoints,
            system_interval_s=self.system_interval_s,
            script_grace_s=self.script_grace_s,
        )

    @property
    def guard(self) -> GuardPolicy:
        return GuardPolicy.for_server(self.host, self.allowed_hosts, self.allowed_origins)


def host_health(manager: SessionManager) -> BridgeHealth:
    """What this host has: torch, CUDA devices (with free memory now), sessions training."""
    import torch

    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, _total = torch.cuda.mem_get_info(index)
            devices.append(
                GpuInfo(
                    index=index,
                    name=props.name,
                    total_memory_bytes=props.total_memory,
                    free_memory_bytes=free,
                )
            )
    mps = torch.backends.mps.is_available()
    return BridgeHealth(
        version=_version(),
        torch_version=torch.__version__,
        cuda_available=cuda,
        mps_available=mps,
        devices=devices,
        best_device="cuda" if cuda else "mps" if mps else "cpu",
        sessions_running=manager.running,
        max_sessions=manager.options.max_sessions,
    )


def bridge_app(config: BridgeConfig, manager: SessionManager) -> Starlette:
    """The app with a lifespan that resumes deliveries on start and closes the manager on stop."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        resumed = manager.resume()
        if resumed:
            log.info("resuming delivery of %d sessions from the spool", resumed)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(manager.close)

    return build_bridge_app(
        manager,
        lambda: host_health(manager),
        token=config.token,
        lifespan=lifespan,
        guard=config.guard,
    )


def run_bridge(config: BridgeConfig) -> int:
    """Serve until interrupted. Returns the exit status (2: refused to start)."""
    if not is_loopback_host(config.host) and not config.token:
        print(
            f"training-mcp bridge: refusing to listen on {config.host} without a token; "
            "pass --token or TRAINING_MCP_BRIDGE_TOKEN, or use 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    try:
        options = config.options
    except EntryPointFileError as exc:
        print(f"training-mcp bridge: --entry-points: {exc}", file=sys.stderr)
        return 2
    import torch  # load it before the first request, not during it
    import uvicorn

    sys.setswitchinterval(SWITCH_INTERVAL_S)

    manager = SessionManager(options)
    app = bridge_app(config, manager)
    health = host_health(manager)
    log.info(
        "training-mcp bridge on http://%s:%d (torch %s, best device %s%s, data in %s)",
        config.host,
        config.port,
        torch.__version__,
        health.best_device,
        "".join(f", {d.name}" for d in health.devices),
        config.data_dir,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level.lower(),
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
    )
    server.run()
    return 0


def _version() -> str:
    try:
        return metadata.version("training-mcp")
    except metadata.PackageNotFoundError:
        return "0+unknown"
