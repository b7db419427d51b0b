"""The files behind a script run's logs: each stream appends to `<stream>.log` and rotates
through a few files of a fixed size, so a script that floods its output cannot fill the disk or
the memory. Written by the server's relay (`mcp_server/core/relay.py`, a process per script run)
and by a bridge's `ScriptProcess`; read by `script_logs.read_log`. Standard library only: the
relay should stay small.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Literal

__all__ = ["LOG_BYTES", "LOG_FILES", "LogStream", "RotatingLog", "copy_into", "read_bases"]

LogStream = Literal["stdout", "stderr"]
LOG_BYTES = 1024 * 1024  # per file, by default
LOG_FILES = 3  # files kept per stream, by default


class RotatingLog:
    """Appends to `<dir>/<stream>.log`, moving it to `.1`, `.2`, ... past `max_bytes`; keeps
    `keep` files in all. The base offset of each kept file is in `<stream>.offsets`."""

    def __init__(self, folder: Path, stream: LogStream, max_bytes: int, keep: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._stream = stream
        self._max = max_bytes
        self._keep = keep
        self._file = (folder / f"{stream}.log").open("ab")
        self._size = self._file.tell()
        self._bases = read_bases(folder, stream)

    @property
    def written(self) -> int:
        return self._bases[0] + self._size

    def write(self, chunk: bytes) -> None:
        while chunk:
            room = self._max - self._size
            if room <= 0:
                self._rotate()
                continue
            part, chunk = chunk[:room], chunk[room:]
            self._file.write(part)
            self._size += len(part)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        base = self._folder / f"{self._stream}.log"
        for i in range(self._keep - 1, 0, -1):
            older = base.with_name(f"{base.name}.{i}")
            if i == self._keep - 1:
                older.unlink(missing_ok=True)
            previous = base if i == 1 else base.with_name(f"{base.name}.{i - 1}")
            if previous.exists():
                previous.rename(older)
        self._bases = [self._bases[0] + self._size, *self._bases][: self._keep]
        (self._folder / f"{self._stream}.offsets").write_text(json.dumps(self._bases))
        self._file = base.open("ab")
        self._size = 0


def read_bases(folder: Path, stream: LogStream) -> list[int]:
    try:
        bases = json.loads((folder / f"{stream}.offsets").read_text())
        return [int(b) for b in bases] or [0]
    except (OSError, ValueError, TypeError):
        return [0]


def copy_into(source: IO[bytes], sink: RotatingLog) -> None:
    """Everything `source` gives until its end, into `sink`, which is then closed. Reads what is
    there (not a full buffer), so the log follows the output as it is written."""
    try:
        while chunk := os.read(source.fileno(), 65536):
            sink.write(chunk)
    finally:
        sink.close()
