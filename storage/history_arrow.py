"""Whole histories as Arrow record batches, for the columnar exports (Arrow IPC, Parquet).

Needs pyarrow (the `export` extra). A long history on a SQLite file with ADBC's SQLite driver
installed (the same extra: `adbc-driver-sqlite`) is read by that driver straight into Arrow
columns, in C, in a child process (`storage/adbc_child.py` says why not in this one): sqlite3
hands out a Python tuple and an object per value, ~1 us a point, which capped any export from
rows below a million points a second. Elsewhere (PostgreSQL, no driver, a short history) the
rows are read as usual and turned into columns with one transpose and `pa.array`.

Every batch has the export's columns `name, step, epoch, value, wall_time`, in (name, step)
order, exactly as stored: NaN and the infinities as IEEE doubles, wall_time in Unix seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sqlalchemy.engine import make_url

from storage.arrow_values import repeated_string
from storage.database import Database
from storage.history import ExportRow, KeysetRead
from storage.lookups import series_rows

__all__ = ["adbc_available", "arrow_schema", "iter_history_arrow"]

T = TypeVar("T")


def adbc_available() -> bool:
    return importlib.util.find_spec("adbc_driver_sqlite") is not None


def arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("name", pa.string()),
            ("step", pa.int64()),
            ("epoch", pa.int32()),
            ("value", pa.float64()),
            ("wall_time", pa.float64()),
        ]
    )


async def iter_history_arrow(
    db: Database,
    operation_id: str,
    encode: Callable[[Any], T],
    *,
    names: Sequence[str] | None = None,
    chunk_size: int = 100_000,
) -> AsyncIterator[T]:
    """Every stored point of the series as `pyarrow.RecordBatch`es of up to `chunk_size` rows
    (keyset reads, one series after another), each handed to `encode` in a worker thread (so an
    encoder works beside the read, not on the event loop), one after another; yields what
    `encode` returns. The first read raises `OperationNotFoundError` before anything is
    yielded."""
    rows = await db.run_read(lambda conn: series_rows(conn, operation_id, names))
    path = _adbc_path(db, rows)
    reader: _ProcessReader | _RowReader = (
        _ProcessReader(path, rows, chunk_size)
        if path is not None
        else _RowReader(db, _Chunks(rows, chunk_size))
    )
    try:
        while (found := await reader.next(encode)) is not None:
            yield found[0]
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()


@dataclass(frozen=True)
class _Chunk:
    """One keyset read: up to `size` points of series `sid` after step `after`."""

    sid: int
    name: str
    base: int  # the series' wall_base_ms
    after: int
    size: int


class _Chunks:
    """The chunks of a history, one after another: the next one follows from the last read
    (a full chunk goes on in its series after its last step, a short one ends the series)."""

    def __init__(self, rows: Sequence[Any], size: int) -> None:
        self._rows, self._size = list(rows), size

    def first(self) -> _Chunk | None:
        return self._start(0)

    def after(self, chunk: _Chunk, count: int, last: int) -> _Chunk | None:
        if count < chunk.size:
            index = next(i for i, r in enumerate(self._rows) if r.id == chunk.sid)
            return self._start(index + 1)
        return replace(chunk, after=last)

    def _start(self, index: int) -> _Chunk | None:
        if index >= len(self._rows):
            return None
        r = self._rows[index]
        return _Chunk(r.id, r.name, r.wall_base_ms, -1, self._size)


# Below this many points in all, the rows' reader beats the child's ~0.1 s start (sqlite3 costs
# ~1.8 us a point more than the driver: 0.35 vs 0.92 M points/s for JSON lines, in process).
PROCESS_READ_POINTS = 50_000

_CHILD = Path(__file__).with_name("adbc_child.py")


def _adbc_path(db: Database, rows: Sequence[Any]) -> str | None:
    """The SQLite file to read in a child process, when the driver is installed and the history
    is long enough to pay for the child's start."""
    if db.sync_engine is None or not adbc_available():
        return None
    if sum(int(r.n_points) for r in rows) < PROCESS_READ_POINTS:
        return None
    path = make_url(db.url).database
    return str(Path(path).resolve()) if path else None


class _ProcessReader:
    """Chunks read by ADBC's SQLite driver in a child process (`storage/adbc_child.py`, which
    says why it may not run in this one), as one Arrow IPC stream on a pipe.

    The child reads the chunk after next while a thread of this process encodes the next one,
    while the event loop sends the last (a response's writes wait until the socket has taken
    nearly all of a chunk, so encoding on demand would idle meanwhile)."""

    def __init__(self, path: str, rows: Sequence[Any], chunk_size: int) -> None:
        self._names = [r.name for r in rows]
        self._plan = json.dumps(
            {
                "path": path,
                "size": chunk_size,
                "series": [[int(r.id), int(r.wall_base_ms), r.nonfinite > 0] for r in rows],
            }
        ).encode()
        self._encodes = ThreadPoolExecutor(1, thread_name_prefix="export-encode")
        self._encoded_ahead: Future[Any] | None = None  # the next answer, once started
        self._child: subprocess.Popen[bytes] | None = None
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (the child's stderr; _close)
        self._stream: Any = None

    async def next(self, encode: Callable[[Any], T]) -> tuple[T] | None:
        staged = self._encoded_ahead or self._encodes.submit(self._encoded_next, encode)
        self._encoded_ahead = None
        found: tuple[T] | None = await anyio.to_thread.run_sync(staged.result)
        if found is not None:
            self._encoded_ahead = self._encodes.submit(self._encoded_next, encode)
        return found

    def _encoded_next(self, encode: Callable[[Any], T]) -> tuple[T] | None:
        import pyarrow as pa

        try:
            if self._stream is None:
                self._stream = pa.ipc.open_stream(self._start())
            batch = self._stream.read_next_batch()
        except StopIteration:
            self._ended()
            return None
        except (OSError, pa.ArrowException) as exc:
            self._ended()  # raises what the child said, if it failed
            raise RuntimeError(f"the export's reader stopped: {exc}") from exc
        n = batch.num_rows
        columns = [repeated_string(self._names[batch.column(0)[0].as_py()], n)]
        named = pa.record_batch(columns + batch.columns[1:], schema=arrow_schema())
        return (encode(named),)

    def _start(self) -> Any:
        child = subprocess.Popen(
            [sys.executable, "-I", str(_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        self._child = child
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(OSError):  # a bigger pipe: the child runs a chunk ahead
            fcntl.fcntl(child.stdout, fcntl.F_SETPIPE_SZ, 1 << 20)
        child.stdin.write(self._plan)
        child.stdin.close()
        return child.stdout

    def _ended(self) -> None:
        child = self._child
        if child is None:
            return
        if child.wait(timeout=60) != 0:
            self._errors.seek(0)
            said = self._errors.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"the export's reader exited with {child.returncode}: "
                + (said[-1] if said else "no message")
            )

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()  # a client gone half way: the read it blocks on ends
        if self._encoded_ahead is not None:
            self._encoded_ahead.exception()  # wait for it; what it found or raised is not wanted
        self._encodes.shutdown()
        if child is not None:
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        self._errors.close()


class _RowReader:
    """Chunks through the database's own connections, rows turned into columns."""

    def __init__(self, db: Database, chunks: _Chunks) -> None:
        self._db = db
        self._chunks = chunks
        self._next = chunks.first()

    async def next(self, encode: Callable[[Any], T]) -> tuple[T] | None:
        sqlite = self._db.is_sqlite
        while (chunk := self._next) is not None:
            read = KeysetRead(chunk.sid, chunk.name, chunk.base, chunk.after, chunk.size, sqlite)
            found = await self._db.run_read(read)
            self._next = self._chunks.after(chunk, len(found), found[-1][1] if found else -1)
            if found:
                return (await anyio.to_thread.run_sync(encode, _batch(chunk.name, found)),)
        return None

    async def close(self) -> None:
        return None


def _batch(name: str, found: list[ExportRow]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    _, steps, epochs, values, _, walls = zip(*found, strict=True)
    value = pa.array(values, pa.float64())  # None (a stored NaN) is null here
    if value.null_count:
        value = pc.fill_null(value, math.nan)
    columns = [
        repeated_string(name, len(steps)),
        pa.array(steps, pa.int64()),
        pa.array(epochs, pa.int32()),
        value,
        pc.divide(pa.array(walls, pa.int64()).cast(pa.float64()), 1000.0),
    ]
    return pa.record_batch(columns, schema=arrow_schema())
