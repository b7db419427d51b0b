"""Real `training-mcp serve --http` and `training-mcp bridge` processes on free loopback ports, for
the live tests and the bench. Each is always stopped (terminated, killed if it lingers)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    """A running server or bridge: its URL, its log file, and the process."""

    name: str
    url: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "mcp_server.cli", *self.args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> Process:
        path = "/health" if self.name.startswith("bridge") else "/api/v1/health"
        poll_until(lambda: self._answers(path), timeout_s, self)
        return self

    def _answers(self, path: str) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
        try:
            return httpx.get(self.url + path, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful) or SIGKILL (a crash); waits until it has exited."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=15)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def bridge(tmp: Path, token: str, name: str = "bridge", port: int | None = None) -> Process:
    port = port or free_port()
    data = tmp / name
    args = ["bridge", "--port", str(port), "--token", token, "--data-dir", str(data)]
    args += ["--log-level", "WARNING"]
    return Process(name, f"http://127.0.0.1:{port}", args, tmp / f"{name}.log")


def server(
    tmp: Path,
    bridges: Sequence[tuple[str, str]],
    name: str = "server",
    *,
    port: int | None = None,
    heartbeat_timeout_s: float = 10.0,  # tests of a lost bridge pass a short one
) -> Process:
    port = port or free_port()
    args = ["serve", "--http", "--port", str(port), "--data-dir", str(tmp / name)]
    args += ["--heartbeat-timeout", str(heartbeat_timeout_s), "--log-level", "WARNING"]
    for url, token in bridges:
        args += ["--bridge", f"{url}#{token}"]
    return Process(name, f"http://127.0.0.1:{port}", args, tmp / f"{name}.log")


@contextmanager
def running(*processes: Process) -> Iterator[tuple[Process, ...]]:
    """Start them all at once (their imports overlap), wait until each answers, always stop."""
    try:
        for p in processes:
            p.start()
        for p in processes:
            p.wait_ready()
        yield processes
    finally:
        for p in processes:
            p.stop()


def poll_until(check: Callable[[], bool], timeout_s: float, about: Process | None = None) -> None:
    """Poll observable state until `check()` holds, or fail after `timeout_s` with the log."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            log = f"\n{about.name} log:\n{about.tail()}" if about else ""
            raise TimeoutError(f"not true after {timeout_s} s{log}")
        time.sleep(0.05)


def exits_within(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` (not our child) exits within `timeout_s`, waited on by a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)
