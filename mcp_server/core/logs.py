"""A script run's stdout and stderr, kept bounded: each stream rotates through a few files of a
fixed size, so a script that floods its output cannot fill the disk or the memory.

Positions are byte offsets in everything the stream ever wrote; a reader passes the last one it
got (`next_cursor`) to read only what is new. What rotated away is gone: a cursor older than the
oldest kept byte reads from there, flagged `truncated`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LogStream", "LogsQuery", "OperationLogs", "RotatingLog", "read_log"]

LogStream = Literal["stdout", "stderr"]


class LogsQuery(BaseModel):
    """Which lines of a script run's output to read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: LogStream = "stdout"
    tail: int = Field(50, ge=1, le=10_000, description="The last N lines")
    cursor: int | None = Field(None, ge=0, description="A next_cursor: only what is newer")


class OperationLogs(BaseModel):
    """Lines of one stream of a script run. Pass `next_cursor` as `cursor` to get what is new."""

    operation_id: str
    stream: LogStream
    lines: list[str]
    next_cursor: int = Field(description="Bytes written so far: pass as cursor next time")
    truncated: bool = Field(description="Older output rotated away (bounded logs)")


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
        self._bases = _read_bases(folder, stream)
        self._tail = b""  # the last bytes written, for the error of a failed run

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
            self._tail = (self._tail + part)[-8192:]
        self._file.flush()

    def tail_text(self, lines: int) -> str:
        text = self._tail.decode("utf-8", errors="replace")
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])

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


def _read_bases(folder: Path, stream: LogStream) -> list[int]:
    try:
        bases = json.loads((folder / f"{stream}.offsets").read_text())
        return [int(b) for b in bases] or [0]
    except (OSError, ValueError, TypeError):
        return [0]


def read_log(
    folder: Path,
    operation_id: str,
    stream: LogStream,
    *,
    tail: int | None = None,
    cursor: int | None = None,
) -> OperationLogs:
    """The last `tail` lines, or the lines after byte `cursor` (then at most 10,000)."""
    bases = _read_bases(folder, stream)
    files = [folder / f"{stream}.log"] + [
        folder / f"{stream}.log.{i}" for i in range(1, len(bases))
    ]
    pieces = [(b, p) for b, p in zip(bases, files, strict=True) if p.exists()]
    pieces.reverse()  # oldest first
    data = b"".join(p.read_bytes() for _, p in pieces)
    start = pieces[0][0] if pieces else 0
    end = start + len(data)
    truncated = start > 0
    if cursor is not None:
        truncated = cursor < start
        data = data[max(0, cursor - start) :] if cursor <= end else b""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    lines = lines[-(tail or 100) :] if cursor is None else lines[:10_000]
    return OperationLogs(
        operation_id=operation_id,
        stream=stream,
        lines=lines,
        next_cursor=end,
        truncated=truncated,
    )
