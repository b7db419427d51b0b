"""A declared script's process: its environment, how it is stopped and what its exit means.

Shared by the server's script runs (`mcp_server.core.processes`) and the bridge's
(`host_bridge.sessions`), so a script behaves the same wherever it runs:

- the environment: the parent's, less any TRAINING_MCP_* of its own, plus TRAINING_MCP_URL,
  TRAINING_MCP_OPERATION_ID, TRAINING_MCP_TOKEN and TRAINING_MCP_PUSH_TOKEN (the run's push
  credential), which the script's `training_mcp.init()` reads, and where the host keeps the
  run's checkpoints, TRAINING_MCP_CHECKPOINT_DIR (with TRAINING_MCP_RESUME_EPOCH on a resume or
  a fork, and TRAINING_MCP_CHECKPOINT_BUDGET: `training_mcp.checkpoints`);
- stopping: SIGINT to its process group, SIGTERM after the grace period, then SIGKILL;
- its end (`script_end`, pure): stopped -> cancelled whatever its exit code; else exit code 0 ->
  completed, anything else -> failed with the last lines of its stderr.

`ScriptProcess` runs one on a thread-based host (the bridge, a Ray actor): no shell, its own
session and process group; its stdout and stderr go to bounded rotating logs in a folder
(`rotating_log`, what the server's script runs write too, read with `script_logs.read_log`), or,
without one, stdout to the host's and stderr echoed to the host's (its last lines kept).
On Linux the script gets SIGTERM when its host dies, killed -9 included (`prctl`'s parent-death
signal): no host is left to report its end or stop it, so it must not go on holding the GPU.
(Children of the script that do not watch their parent, unlike PyTorch's DataLoader workers,
are not reached.)
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

from host_bridge.rotating_log import LOG_BYTES, LOG_FILES, RotatingLog, copy_into
from host_bridge.script_logs import read_log
from training_mcp.checkpoints import ENV_CHECKPOINT_BUDGET, ENV_CHECKPOINT_DIR, ENV_RESUME_EPOCH

__all__ = [
    "STDERR_TAIL_LINES",
    "STOP_SIGNALS",
    "ScriptProcess",
    "script_end",
    "script_environment",
]

STDERR_TAIL_LINES = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
_TICK_S = 0.1  # how soon a stop request is seen while the script runs

ScriptEnd = Literal["completed", "failed", "cancelled"]

_PR_SET_PDEATHSIG = 1  # prctl(2)
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_prctl = _libc.prctl if _libc is not None else None  # looked up here, never in the forked child


def _die_with_parent(parent: int) -> None:
    """In the forked child, before exec (async-signal-safe calls only): SIGTERM once the
    starting thread dies; at once if the parent died before the request took effect."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)


def script_environment(
    base: Mapping[str, str],
    *,
    url: str,
    operation_id: str,
    token: str | None,
    push_token: str,
    checkpoints: Path | None = None,
    resume_epoch: int | None = None,
    checkpoint_budget: int | None = None,
) -> dict[str, str]:
    """What a script runs with: `base` less TRAINING_MCP_*, plus the run's variables;
    `checkpoints`: the run's checkpoint folder, `resume_epoch`: the epoch to go on from there."""
    env = {k: v for k, v in base.items() if not k.startswith("TRAINING_MCP_")}
    env.update(
        TRAINING_MCP_URL=url,
        TRAINING_MCP_OPERATION_ID=operation_id,
        TRAINING_MCP_TOKEN=token or "",
        TRAINING_MCP_PUSH_TOKEN=push_token,  # the run's push credential
        PYTHONUNBUFFERED="1",  # so its output shows as it is written
    )
    if checkpoints is not None:
        env[ENV_CHECKPOINT_DIR] = str(checkpoints)
        if checkpoint_budget is not None:
            env[ENV_CHECKPOINT_BUDGET] = str(checkpoint_budget)
        if resume_epoch is not None:
            env[ENV_RESUME_EPOCH] = str(resume_epoch)
    return env


def script_end(
    returncode: int, stop_reason: str | None, stderr_tail: str
) -> tuple[ScriptEnd, str | None, str | None]:
    """(status, error, reason) of a script that exited with `returncode` (pure)."""
    if stop_reason is not None:
        return "cancelled", None, stop_reason
    if returncode == 0:
        return "completed", None, None
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    error = f"the script ended with {how}"
    if stderr_tail:
        error += f"; the end of its stderr:\n{stderr_tail}"
    return "failed", error[-4000:], None


class ScriptProcess:
    """One script, started at once (`OSError` if it cannot start); `run` waits for its end.
    `logs`: the folder its stdout and stderr rotate in (`log_bytes` per file, `log_files` kept
    per stream); None: the host's own."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        *,
        logs: Path | None = None,
        log_bytes: int = LOG_BYTES,
        log_files: int = LOG_FILES,
    ) -> None:
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._ended = threading.Event()
        self._drained = threading.Event()
        self._logs = logs
        # Opened first: a folder that cannot be written refuses the script before it starts.
        sinks = [
            RotatingLog(logs, stream, log_bytes, log_files)
            for stream in ("stdout", "stderr")
            if logs is not None
        ]
        # Started from a thread that lives exactly as long as the script: the parent-death
        # signal follows the starting thread, not the process, and a caller's thread may end.
        started: queue.SimpleQueue[subprocess.Popen[bytes] | Exception] = queue.SimpleQueue()
        threading.Thread(
            target=self._keep, args=(list(argv), cwd, dict(env), started), daemon=True
        ).start()
        process = started.get()
        if isinstance(process, Exception):  # OSError: it cannot start; anything else: a bug
            for sink in sinks:
                sink.close()
            raise process
        self._process = process
        assert process.stderr is not None
        if not sinks:
            threading.Thread(target=self._echo, args=(process.stderr,), daemon=True).start()
            return
        assert process.stdout is not None
        copiers = [
            threading.Thread(target=copy_into, args=(pipe, sink), daemon=True)
            for pipe, sink in zip((process.stdout, process.stderr), sinks, strict=True)
        ]
        for copier in copiers:
            copier.start()
        threading.Thread(target=self._close_logs, args=(process, copiers), daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def ended(self) -> threading.Event:
        """Set once the script has exited (and any children it left were killed)."""
        return self._ended

    def run(self, stop: threading.Event, grace_s: float) -> tuple[int, bool, str]:
        """Wait for the script to end; once `stop` is set, end it (SIGINT, SIGTERM, SIGKILL,
        `grace_s` apart). Returns (exit code, whether it was stopped, its stderr's last lines)."""
        stopped = False
        while not self._ended.wait(_TICK_S):
            if stop.is_set():
                stopped = True
                self.stop(grace_s)
                self._ended.wait()
                break
        returncode, tail = self.result()
        return returncode, stopped, tail

    def stop(self, grace_s: float) -> None:
        """SIGINT to its process group, then SIGTERM and SIGKILL, `grace_s` apart, until it ends."""
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, sig)  # the group's id is the leader's pid
            if self._ended.wait(grace_s):
                return

    def result(self) -> tuple[int, str]:
        """(exit code, its stderr's last lines), once `ended`."""
        self._drained.wait(5.0)  # the last lines of stderr, unless a child still holds it
        returncode = self._process.returncode
        assert returncode is not None
        if self._logs is not None:
            lines = read_log(self._logs, "", "stderr", tail=STDERR_TAIL_LINES).lines
            return returncode, "\n".join(lines)
        return returncode, "\n".join(self._tail)

    def _echo(self, stderr: IO[bytes]) -> None:
        with stderr:
            for raw in stderr:
                sys.stderr.buffer.write(raw)
                self._tail.append(raw.decode(errors="replace").rstrip("\n"))
        sys.stderr.flush()
        self._drained.set()

    def _close_logs(
        self, process: subprocess.Popen[bytes], copiers: list[threading.Thread]
    ) -> None:
        for copier in copiers:
            copier.join()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        self._drained.set()

    def _keep(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        started: queue.SimpleQueue[subprocess.Popen[bytes] | Exception],
    ) -> None:
        """Start the script, then reap it: its exit, then any children it left behind."""
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=None if self._logs is None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own group: signals reach its children
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        except Exception as exc:  # handed to the caller, which waits for one or the other
            started.put(exc)
            return
        started.put(process)
        process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._ended.set()
