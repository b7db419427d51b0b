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
from typing import Any, TypeVar

import anyio
from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url

from storage.database import Database
from storage.lookups import series_rows
from storage.schema import points

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
    (keyset reads, one series after another), each handed to `encode` in the reading worker
    thread (so a Parquet encoder works beside the read, not on the event loop), one after
    another; yields what `encode` returns. The first read raises `OperationNotFoundError`
    before anything is yielded."""
    rows = await db.run_read(lambda conn: series_rows(conn, operation_id, names))
    reader = _AdbcReader(db) if _adbc_path(db) else _RowReader(db)
    try:
        for row in rows:
            after = -1
            while True:
                found = await reader.read(
                    row.id, row.name, row.wall_base_ms, after, chunk_size, encode
                )
                if found is None:
                    break
                count, last, encoded = found
                yield encoded
                if count < chunk_size:
                    break
                after = last
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()


def _adbc_path(db: Database) -> str | None:
    if db.sync_engine is None or not adbc_available():
        return None
    path = make_url(db.url).database
    return path or None


# NULL (a stored NaN) read as a flag beside a value that is never NULL: the driver infers a
# column's type from its first rows, and a NULL there would make `value` an integer column.
_ADBC_CHUNK = (
    "SELECT step, epoch, ifnull(value, 0.0) AS value, value IS NULL AS nan, "
    "wall_ms + ? AS wall_ms FROM points WHERE series_id = ? AND step > ? ORDER BY step LIMIT ?"
)


class _AdbcReader:
    """Chunks through one ADBC SQLite connection (read-only), opened on the first read."""

    def __init__(self, db: Database) -> None:
        self._path = _adbc_path(db)
        self._conn: Any = None

    async def read(
        self, sid: int, name: str, base: int, after: int, size: int, encode: Callable[[Any], T]
    ) -> tuple[int, int, T] | None:
        return await anyio.to_thread.run_sync(self._read, sid, name, base, after, size, encode)

    def _read(
        self, sid: int, name: str, base: int, after: int, size: int, encode: Callable[[Any], T]
    ) -> tuple[int, int, T] | None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._conn is None:
            import adbc_driver_sqlite.dbapi as adbc

            self._conn = adbc.connect(f"file:{self._path}?mode=ro")
        with self._conn.cursor() as cursor:
            cursor.execute(_ADBC_CHUNK, (base, sid, after, size))
            table = cursor.fetch_arrow_table()
        n = table.num_rows
        if n == 0:
            return None
        steps = table.column("step")
        values = table.column("value").cast(pa.float64())
        nan = table.column("nan")
        if pc.any(pc.equal(nan, 1)).as_py():
            values = pc.if_else(pc.equal(nan, 1), math.nan, values)
        columns = [
            pa.repeat(pa.scalar(name, pa.string()), n),
            steps,
            table.column("epoch").cast(pa.int32()),
            values,
            pc.divide(table.column("wall_ms").cast(pa.float64()), 1000.0),
        ]
        batch = pa.Table.from_arrays(columns, schema=arrow_schema()).combine_chunks()
        return n, int(steps[-1].as_py()), encode(batch.to_batches()[0])

    async def close(self) -> None:
        if self._conn is not None:
            await anyio.to_thread.run_sync(self._conn.close)


class _RowReader:
    """Chunks through the database's own connections, rows turned into columns."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def read(
        self, sid: int, name: str, base: int, after: int, size: int, encode: Callable[[Any], T]
    ) -> tuple[int, int, T] | None:
        def body(conn: Connection) -> tuple[int, int, T] | None:
            query = (
                select(points.c.step, points.c.epoch, points.c.value, points.c.wall_ms + base)
                .where(points.c.series_id == sid, points.c.step > after)
                .order_by(points.c.step)
                .limit(size)
            )
            found = [tuple(r) for r in conn.execute(query)]
            if not found:
                return None
            return len(found), found[-1][0], encode(_batch(name, found))

        return await self._db.run_read(body)

    async def close(self) -> None:
        return None


def _batch(name: str, found: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    steps, epochs, values, walls = zip(*found, strict=True)
    value = pa.array(values, pa.float64())  # None (a stored NaN) is null here
    if value.null_count:
        value = pc.fill_null(value, math.nan)
    columns = [
        pa.repeat(pa.scalar(name, pa.string()), len(steps)),
        pa.array(steps, pa.int64()),
        pa.array(epochs, pa.int32()),
        value,
        pc.divide(pa.array(walls, pa.int64()).cast(pa.float64()), 1000.0),
    ]
    return pa.record_batch(columns, schema=arrow_schema())
