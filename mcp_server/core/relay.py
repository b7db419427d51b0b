"""The small process between the server and a script run, so the script outlives the server.

    server --(spawns, own session)--> relay --(same process group)--> the script
                                        |-- stdout/stderr -> logs/<run>/stdout.log, stderr.log
                                        |-- process.json: its pid and identity, at start
                                        `-- exit.json: the script's exit code, at the end

If the server piped the script's output itself, the pipes would die with the server and the
script's next `print` would fail (BrokenPipeError). The relay holds the pipes instead and
writes them to the bounded rotating logs (`host_bridge/rotating_log.py`), so a server that is
killed, or stopped gracefully, leaves the script training; the next server on the same data
directory finds the run's folder, checks `process.json` against the live process (pid and start
time, so a reused pid is not taken for it), follows the relay again and reads the exit code
from `exit.json`.
Standard library only (and the log files): one relay runs per script run, so it stays small.

The relay leads the run's process group (the server's stop signals reach the script, its
children and the relay); it keeps a no-op handler for SIGINT, SIGTERM and SIGHUP so it can still
record how the script ended (a handler, not SIG_IGN, which the script would inherit). Only
SIGKILL ends it early, and then there is no `exit.json`: the server knows it sent that.

    python -m mcp_server.core.relay FOLDER MAX_BYTES KEEP CWD -- ARGV...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from host_bridge.rotating_log import LogStream, RotatingLog, copy_into

__all__ = ["EXIT_FILE", "PROCESS_FILE", "process_identity", "read_json_file", "relay_argv"]

PROCESS_FILE = "process.json"
EXIT_FILE = "exit.json"
_DRAIN_S = 2.0  # after the script exits, how long its children may hold the pipes open


def relay_argv(folder: Path, max_bytes: int, keep: int, cwd: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` in `cwd` under a relay writing to `folder`."""
    return [
        sys.executable,
        "-m",
        "mcp_server.core.relay",
        str(folder),
        str(max_bytes),
        str(keep),
        cwd,
        "--",
        *argv,
    ]


def process_identity(pid: int) -> str | None:
    """'<boot id>:<start time>' of the live process `pid`, or None when it is gone, a zombie,
    or this system has no /proc: a pid reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):  # exited, waiting to be reaped
        return None
    return f"{boot}:{fields[19]}"  # field 22, starttime (clock ticks since boot)


def read_json_file(path: Path) -> dict[str, Any] | None:
    """The object in `path`, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value), encoding="utf-8")
    temporary.replace(path)  # readers see the whole file or none


def _peak_kb() -> int | None:
    """The relay's own peak memory (kB) since it started: bounded however much the script
    writes. VmHWM, not ru_maxrss, which keeps the high-water mark of the forked server."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _ignore(signum: int, frame: object) -> None:
    """The relay outlives the signals sent to its group, to record how the script ended."""


def run(folder: Path, max_bytes: int, keep: int, cwd: str, argv: list[str]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    _write_json(folder / PROCESS_FILE, {"pid": pid, "identity": process_identity(pid)})
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        child = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        _write_json(folder / EXIT_FILE, {"error": f"{exc.strerror or exc} ({argv[0]})"})
        return 0
    copiers = []
    for stream, source in (("stdout", child.stdout), ("stderr", child.stderr)):
        assert source is not None
        name: LogStream = "stdout" if stream == "stdout" else "stderr"
        sink = RotatingLog(folder, name, max_bytes, keep)
        copier = threading.Thread(target=copy_into, args=(source, sink), daemon=True)
        copier.start()
        copiers.append(copier)
    returncode = child.wait()
    for copier in copiers:
        copier.join(_DRAIN_S)
    _write_json(folder / EXIT_FILE, {"returncode": returncode, "relay_peak_kb": _peak_kb()})
    return 0


def main(args: list[str]) -> int:
    if len(args) < 6 or args[4] != "--":
        print("usage: relay FOLDER MAX_BYTES KEEP CWD -- ARGV...", file=sys.stderr)
        return 2
    return run(Path(args[0]), int(args[1]), int(args[2]), args[3], args[5:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
