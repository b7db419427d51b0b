"""Run as a script by `storage.history_arrow` (never imported there): reads a SQLite history with
ADBC's SQLite driver and writes it to stdout as one Arrow IPC stream, a record batch per chunk.

A process of its own because the driver links its own copy of SQLite. Two copies in one process
do not see each other's locks: the driver's first connection takes the file for its only user,
truncates the WAL index the server's sqlite3 connections have mapped, and they die of SIGBUS (or
write a corrupt file; https://sqlite.org/howtocorrupt.html, 2.2.1). Across processes SQLite's
locks hold. Imports pyarrow and the driver only (~0.1 s to start): not the `storage` package.

stdin: `{"path": FILE, "size": POINTS_A_CHUNK, "series": [[ID, WALL_BASE_MS, HAS_NAN], ...]}`.
Each batch holds one chunk of one series: `series` (its index in the list), `step`, `epoch`,
`value` (a stored NaN as NaN), `wall_time` (Unix seconds), in step order.
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema(
    [
        ("series", pa.int32()),
        ("step", pa.int64()),
        ("epoch", pa.int32()),
        ("value", pa.float64()),
        ("wall_time", pa.float64()),
    ]
)

# A series with NaNs reads NULL (a stored NaN) as a flag beside a value that is never NULL: the
# driver infers a column's type from its first rows, and a NULL there would make `value` an
# integer column. A series without them skips the flag (a fifth of the read). The numbers are
# ints of ours, written into the text: binding them would need an Arrow batch per read.
_CHUNK = (
    "SELECT step, epoch, {value}, wall_ms + {base:d} AS wall_ms FROM points "
    "WHERE series_id = {sid:d} AND step > {after:d} ORDER BY step LIMIT {size:d}"
)
_WITH_NAN = "ifnull(value, 0.0) AS value, value IS NULL AS nan"
_NAN = pa.scalar(math.nan, pa.float64())


def _query(conn: Any, sid: int, base: int, nan: bool, after: int, size: int) -> Any:
    """One chunk as the driver reads it (in C, without the GIL: a thread reads ahead)."""
    sql = _CHUNK.format(
        value=_WITH_NAN if nan else "value", base=base, sid=sid, after=after, size=size
    )
    statement = adbc_driver_manager.AdbcStatement(conn)
    try:
        statement.set_sql_query(sql)
        stream, _ = statement.execute_query()
        return pa.RecordBatchReader.from_stream(stream).read_all()
    finally:
        statement.close()


def _batch(table: Any, index: int, nan: bool) -> Any:
    """The chunk in the stream's schema: NaN where a NaN was stored, wall_time in seconds."""
    n = table.num_rows
    values = table.column("value").cast(pa.float64())
    flags = table.column("nan").cast(pa.bool_()) if nan else None
    if flags is not None and pc.any(flags).as_py():
        values = pc.if_else(flags, _NAN, values)
    elif values.null_count:  # no NaN in the summary, a NULL all the same: still a NaN
        values = pc.fill_null(values, _NAN)
    columns = [
        pa.repeat(pa.scalar(index, pa.int32()), n),
        table.column("step"),
        table.column("epoch").cast(pa.int32()),
        values,
        pc.divide(table.column("wall_ms").cast(pa.float64()), pa.scalar(1000.0)),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA).combine_chunks().to_batches()[0]


def main() -> None:
    plan = json.loads(sys.stdin.read())
    size, series = int(plan["size"]), plan["series"]
    database = adbc_driver_sqlite.connect(f"file:{plan['path']}?mode=ro")
    conn = adbc_driver_manager.AdbcConnection(database)
    ahead = ThreadPoolExecutor(1)

    def read(index: int, after: int) -> Future[Any]:
        sid, base, nan = series[index]
        return ahead.submit(_query, conn, sid, base, nan, after, size)

    try:
        with pa.ipc.new_stream(sys.stdout.buffer, SCHEMA) as writer:
            index, pending = 0, read(0, -1) if series else None
            while pending is not None:
                table = pending.result()
                n = table.num_rows
                # The next read starts before this chunk is converted and written: a full
                # chunk goes on in its series after its last step, a short one ends it.
                if n == size:
                    pending = read(index, table.column("step")[-1].as_py())
                elif index + 1 < len(series):
                    pending = read(index + 1, -1)
                else:
                    pending = None
                if n:
                    writer.write_batch(_batch(table, index, series[index][2]))
                if n < size:
                    index += 1
    finally:
        ahead.shutdown()
        conn.close()
        database.close()


if __name__ == "__main__":
    main()
