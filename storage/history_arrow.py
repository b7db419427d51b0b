"""Whole histories as Arrow record batches, for the columnar exports (Arrow IPC, Parquet).

Needs pyarrow (the `export` extra). On a SQLite file with ADBC's SQLite driver installed (the
same extra: `adbc-driver-sqlite`), each chunk is read by that driver straight into Arrow
columns, in C: sqlite3 hands out a Python tuple and an object per value, ~1 us a point, which
capped any export from rows below a million points a second. Elsewhere (PostgreSQL, or no
driver) the rows are read as usual and turned into columns with one transpose and `pa.array`.

Every batch has the export's columns `name, step, epoch, value, wall_time`, in (name, step)
order, exactly as stored: NaN and the infinities as IEEE doubles, wall_time in Unix seconds.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
from sqlalchemy.engine import make_url

from storage.arrow_values import float_scalar, repeated_string
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
    chunks = _Chunks(rows, chunk_size)
    reader = _AdbcReader(db, chunks) if _adbc_path(db) else _RowReader(db, chunks)
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
    nonfinite: bool  # whether the series holds NaN or infinities
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
        return _Chunk(r.id, r.name, r.wall_base_ms, r.nonfinite > 0, -1, self._size)


def _adbc_path(db: Database) -> str | None:
    if db.sync_engine is None or not adbc_available():
        return None
    path = make_url(db.url).database
    return path or None


# A series with NaNs reads NULL (a stored NaN) as a flag beside a value that is never NULL: the
# driver infers a column's type from its first rows, and a NULL there would make `value` an
# integer column. A series without them skips the flag (a fifth of the read). The numbers are
# ints of ours, written into the text: binding them would need an Arrow batch per read.
_ADBC_CHUNK = (
    "SELECT step, epoch, {value}, wall_ms + {base:d} AS wall_ms FROM points "
    "WHERE series_id = {sid:d} AND step > {after:d} ORDER BY step LIMIT {size:d}"
)
_WITH_NAN = "ifnull(value, 0.0) AS value, value IS NULL AS nan"


class _AdbcReader:
    """Chunks through one ADBC SQLite connection (read-only), opened on the first read.

    A pipeline of two threads of its own: one reads the chunk after next while the other
    encodes the next one, while the event loop sends the last (a response's writes wait until
    the socket has taken nearly all of a chunk, so encoding on demand would idle meanwhile).
    The driver manager's own objects, not its DB-API module: that one imports pyarrow.dataset
    and with it pandas (~0.2 s on the first export)."""

    def __init__(self, db: Database, chunks: _Chunks) -> None:
        self._path = _adbc_path(db)
        self._chunks = chunks
        self._next = chunks.first()
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="export-read")
        self._encodes = ThreadPoolExecutor(1, thread_name_prefix="export-encode")
        self._read_ahead: Future[Any] | None = None  # the read of self._next, once started
        self._encoded_ahead: Future[Any] | None = None  # the next answer, once started
        self._handles: list[Any] = []  # database, connection: closed in reverse

    async def next(self, encode: Callable[[Any], T]) -> tuple[T] | None:
        staged = self._encoded_ahead or self._encodes.submit(self._encoded_next, encode)
        self._encoded_ahead = None
        found: tuple[T] | None = await anyio.to_thread.run_sync(staged.result)
        if found is not None:
            self._encoded_ahead = self._encodes.submit(self._encoded_next, encode)
        return found

    def _encoded_next(self, encode: Callable[[Any], T]) -> tuple[T] | None:
        while (chunk := self._next) is not None:
            ahead, self._read_ahead = self._read_ahead, None
            batch = (ahead or self._reads.submit(self._read, chunk)).result()
            count = 0 if batch is None else batch.num_rows
            last = -1 if batch is None else int(batch.column(1)[-1].as_py())
            self._next = self._chunks.after(chunk, count, last)
            if self._next is not None:
                self._read_ahead = self._reads.submit(self._read, self._next)
            if batch is not None:
                return (encode(batch),)
        return None

    def _read(self, chunk: _Chunk) -> Any:
        import adbc_driver_manager
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self._handles:
            import adbc_driver_sqlite

            database = adbc_driver_sqlite.connect(f"file:{self._path}?mode=ro")
            self._handles = [database, adbc_driver_manager.AdbcConnection(database)]
        sql = _ADBC_CHUNK.format(
            value=_WITH_NAN if chunk.nonfinite else "value",
            base=int(chunk.base),
            sid=int(chunk.sid),
            after=int(chunk.after),
            size=int(chunk.size),
        )
        statement = adbc_driver_manager.AdbcStatement(self._handles[1])
        try:
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            table = pa.RecordBatchReader.from_stream(stream).read_all()
        finally:
            statement.close()
        n = table.num_rows
        if n == 0:
            return None
        values = table.column("value").cast(pa.float64())
        nan = table.column("nan").cast(pa.bool_()) if chunk.nonfinite else None
        if nan is not None and pc.any(nan).as_py():
            values = pc.if_else(nan, float_scalar(math.nan), values)
        elif values.null_count:  # no NaN in the summary, a NULL all the same: still a NaN
            values = pc.fill_null(values, float_scalar(math.nan))
        columns = [
            repeated_string(chunk.name, n),
            table.column("step"),
            table.column("epoch").cast(pa.int32()),
            values,
            pc.divide(table.column("wall_ms").cast(pa.float64()), float_scalar(1000.0)),
        ]
        return pa.Table.from_arrays(columns, schema=arrow_schema()).combine_chunks().to_batches()[0]

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        for ahead in (self._encoded_ahead, self._read_ahead):
            if ahead is not None:
                ahead.exception()  # wait for it; what it found or raised is not wanted
        self._encodes.shutdown()  # waits for a read started by the last encode, if any
        if self._read_ahead is not None:
            self._read_ahead.exception()
        handles, self._handles = self._handles, []
        for handle in reversed(handles):
            self._reads.submit(handle.close).result()
        self._reads.shutdown()


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
