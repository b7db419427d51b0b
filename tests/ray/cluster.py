"""A real one-node Ray cluster for the tests and the bench: `ray start --head` on 127.0.0.1 in a
short temporary folder, its actors' spools in another, always stopped by its own process id.

Ray's head probes network addresses (cloud metadata, DNS) on start, so this runs only inside a
loopback-only network namespace (`in_loopback_namespace`); `scripts/ray_tests.sh` makes one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.host_bridge.processes import free_port

NAMESPACE = "training-mcp"
HOW = "run them with scripts/ray_tests.sh (a loopback-only network namespace: unshare -n)"


def in_loopback_namespace() -> bool:
    """True where the only network interface is loopback (nothing can leave the machine)."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


def skip_reason() -> str | None:
    """Why the Ray tests cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return 'Ray is not installed (pip install -e ".[ray]")'
    if not in_loopback_namespace():
        return f"not in a loopback-only network namespace; {HOW}"
    return None


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    spool_dir: Path
    popen: subprocess.Popen[bytes]
    client_port: int  # the head's Ray Client server (ray://), where grpcio is installed

    def log_tail(self, chars: int = 3000, name: str | None = None) -> str:
        """The end of `ray start`'s output, or of the head's logs matching `name`."""
        if name is None:
            path = self.temp_dir / "start.log"
            return path.read_text(errors="replace")[-chars:] if path.exists() else ""
        paths = sorted((self.temp_dir / "session_latest" / "logs").glob(name))
        return "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-chars:]}" for p in paths)


@contextmanager
def ray_head(num_cpus: int = 4, timeout_s: float = 60.0) -> Iterator[Cluster]:
    """A Ray head for as long as the block runs. Leaving it kills every named actor first (a
    head asked to stop drains running actors for 30 s), then stops the head it started."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths are short
    spool_dir = temp_dir / "spools"
    env = _env(spool_dir)
    args = [_RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    args += [f"--port={free_port()}", f"--num-cpus={num_cpus}", "--num-gpus=0"]
    args += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    client_port = free_port()
    args += [f"--ray-client-server-port={client_port}"]
    with (temp_dir / "start.log").open("wb") as out:
        popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    cluster = Cluster("", temp_dir, spool_dir, popen, client_port)
    try:
        current = temp_dir / "ray_current_cluster"
        deadline = time.monotonic() + timeout_s
        while not (current.exists() and current.read_text().strip()):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{cluster.log_tail()}")
            time.sleep(0.1)
        cluster.address = current.read_text().strip()
        yield cluster
    finally:
        _stop(cluster)


_RAY = str(Path(sys.executable).with_name("ray"))


def _env(spool_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A node that stops answering is declared dead in about a second, not half a minute.
        "RAY_health_check_period_ms": "300",
        "RAY_health_check_timeout_ms": "300",
        "RAY_health_check_failure_threshold": "3",
        "OMP_NUM_THREADS": "1",
        "TRAINING_MCP_RAY_DATA_DIR": str(spool_dir),
    }


@contextmanager
def ray_node(cluster: Cluster, num_cpus: int) -> Iterator[subprocess.Popen[bytes]]:
    """A second node joined to `cluster`, in its own process group: `os.killpg` on it with
    SIGKILL is a node lost. Always gone when the block ends."""
    args = [_RAY, "start", "--block", f"--address={cluster.address}"]
    args += ["--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0"]
    with (cluster.temp_dir / "node.log").open("ab") as out:
        popen = subprocess.Popen(
            args,
            env=_env(cluster.spool_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield popen
    finally:
        with suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=15)


def connect(cluster: Cluster) -> Any:
    """This process as a driver of `cluster` (to find and kill workers), in the runs' namespace."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=cluster.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    return ray


def _stop(cluster: Cluster) -> None:
    try:
        if cluster.address:
            ray = connect(cluster)
            for entry in ray.util.list_named_actors(all_namespaces=True):
                with suppress(ValueError):
                    ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]))
            ray.shutdown()
    finally:
        cluster.popen.terminate()
        try:
            cluster.popen.wait(timeout=40)
        except subprocess.TimeoutExpired:
            cluster.popen.kill()
            cluster.popen.wait(timeout=15)
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
