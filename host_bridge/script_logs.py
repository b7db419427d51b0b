"""Reading a script run's stdout and stderr, kept bounded: each stream rotates through a few
files of a fixed size (`rotating_log`), so a script that floods its output cannot fill the disk
or the memory. The server reads its own script runs' logs with it, a bridge its scripts'.

Positions are byte offsets in everything the stream ever wrote; a reader passes the last one it
got (`next_cursor`) to read only what is new. What rotated away is gone: a cursor older than the
oldest kept byte reads from there, flagged `truncated`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from host_bridge.rotating_log import LogStream, read_bases

__all__ = ["LOGS_KEPT", "LogsQuery", "OperationLogs", "read_log"]

LOGS_KEPT = 50  # a bridge keeps its newest scripts' log folders (each 2 x LOG_FILES x LOG_BYTES)


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


def read_log(
    folder: Path,
    operation_id: str,
    stream: LogStream,
    *,
    tail: int | None = None,
    cursor: int | None = None,
) -> OperationLogs:
    """The last `tail` lines, or the lines after byte `cursor` (then at most 10,000)."""
    for _ in range(10):  # the relay, another process, may rotate the files as they are read
        current = _inode(folder / f"{stream}.log")
        bases = read_bases(folder, stream)
        data, start = _read_kept(folder, stream, bases)
        if (current is not None or bases == [0]) and (
            _inode(folder / f"{stream}.log"),
            read_bases(folder, stream),
        ) == (current, bases):
            break  # no rotation while we read: the offsets match the files
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


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read_kept(folder: Path, stream: LogStream, bases: list[int]) -> tuple[bytes, int]:
    """Every kept byte of the stream, oldest first, and the offset of the first one."""
    files = [folder / f"{stream}.log"] + [
        folder / f"{stream}.log.{i}" for i in range(1, len(bases))
    ]
    pieces = []
    for base, path in zip(bases, files, strict=True):
        try:
            pieces.append((base, path.read_bytes()))
        except FileNotFoundError:
            continue
    pieces.reverse()
    return b"".join(data for _, data in pieces), (pieces[0][0] if pieces else 0)
