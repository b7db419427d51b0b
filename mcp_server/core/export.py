"""A run's whole metric history as a stream of bytes: JSON lines, CSV, Parquet or Arrow.

Rows come in (metric, step) order, exactly as stored, never downsampled. Every format carries
NaN and the infinities faithfully: JSON lines use the tokens `NaN`, `Infinity` and `-Infinity`
(the ones `POST .../metrics` accepts, so each line is also a point to push back; Python's `json`
reads them), CSV writes `nan`, `inf` and `-inf` (what `float()` and pandas read), Parquet and
Arrow store IEEE doubles. With the `export` extra (pyarrow, and ADBC's SQLite driver in a child
process) storage reads each chunk into Arrow columns (`storage.iter_history_arrow`) and every
format is encoded from those, the text ones by `export_text` (the same bytes as the row writer
here, which serves where pyarrow is absent: Python formatting each row held it near 0.4M
points/s); Arrow's IPC stream is the fastest (the arrays as they lie in memory, no encoding).
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from mcp_server.core.export_text import arrow_text_encoder, vectorised_text_exact
from storage import Database, ExportRow, arrow_schema, iter_history, iter_history_arrow

__all__ = [
    "COLUMNAR_FORMATS",
    "EXPORT_FORMATS",
    "MEDIA_TYPES",
    "ColumnarEncoder",
    "ExportFormat",
    "encode_history",
    "export_history",
    "parquet_available",
]

ExportFormat = Literal["jsonl", "csv", "parquet", "arrow"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet", "arrow")
COLUMNAR_FORMATS: tuple[ExportFormat, ...] = ("parquet", "arrow")
MEDIA_TYPES: dict[ExportFormat, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
COLUMNS = ("name", "step", "epoch", "value", "wall_time")

_JSON_SPECIAL = {1: "NaN", 2: "Infinity", 3: "-Infinity"}
_CSV_SPECIAL = {1: "nan", 2: "inf", 3: "-inf"}


def parquet_available() -> bool:
    """pyarrow is optional: Parquet and Arrow are offered only where it is installed."""
    return importlib.util.find_spec("pyarrow") is not None


def _jsonl(chunk: list[ExportRow]) -> bytes:
    # Metric names are validated on the way in (letters, digits, _ . / -): nothing to escape.
    return "".join(
        [
            f'{{"name":"{name}","step":{step},"epoch":{"null" if epoch is None else epoch},'
            f'"value":{_JSON_SPECIAL[special] if special else repr(value)},'
            f'"wall_time":{wall_ms / 1000!r}}}\n'
            for name, step, epoch, value, special, wall_ms in chunk
        ]
    ).encode()


def _csv_header() -> bytes:
    return (",".join(COLUMNS) + "\r\n").encode()


def _csv(chunk: list[ExportRow]) -> bytes:
    # Same dialect as the csv module's default (CRLF); no field needs quoting (see _jsonl).
    return "".join(
        [
            f"{name},{step},{'' if epoch is None else epoch},"
            f"{_CSV_SPECIAL[special] if special else repr(value)},{wall_ms / 1000!r}\r\n"
            for name, step, epoch, value, special, wall_ms in chunk
        ]
    ).encode()


def export_history(
    db: Database,
    operation_id: str,
    fmt: ExportFormat,
    names: list[str] | None,
    *,
    chunk_size: int | None = None,
) -> AsyncIterator[bytes]:
    """The stream of the run's export in `fmt`: Arrow batches encoded beside the reads where
    pyarrow is installed (the text formats too, see `export_text`), else rows in Python.
    `chunk_size` (points a read) is the readers' own default unless given."""
    sized = {} if chunk_size is None else {"chunk_size": chunk_size}
    if fmt == "parquet" or fmt == "arrow":
        encoder = ColumnarEncoder(fmt)
        batches = iter_history_arrow(db, operation_id, encoder.encode, names=names, **sized)
        return encoder.stream(batches)
    if parquet_available() and vectorised_text_exact():
        encode = arrow_text_encoder(fmt)
        lines = iter_history_arrow(db, operation_id, encode, names=names, **sized)
        return _with_header(fmt, lines)
    return encode_history(iter_history(db, operation_id, names=names, **sized), fmt)


async def _with_header(
    fmt: Literal["jsonl", "csv"], lines: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    if fmt == "csv":
        yield _csv_header()
    async for part in lines:
        yield part


async def encode_history(
    rows: AsyncIterator[list[ExportRow]], fmt: Literal["jsonl", "csv"]
) -> AsyncIterator[bytes]:
    """The chunks of `iter_history` encoded as JSON lines or CSV, one bytes object per chunk."""
    if fmt == "csv":
        yield _csv_header()
    encode: Callable[[list[ExportRow]], bytes] = _csv if fmt == "csv" else _jsonl
    async for chunk in rows:
        yield encode(chunk)


class ColumnarEncoder:
    """Parquet (a row group per chunk) or an Arrow IPC stream (a record batch per chunk).

    `encode` is what `storage.iter_history_arrow` calls in its reading thread, a batch at a
    time; `stream` yields what it made, then the format's end (Parquet's footer, Arrow's
    end-of-stream marker)."""

    def __init__(self, fmt: Literal["parquet", "arrow"]) -> None:
        import pyarrow as pa  # optional: checked by parquet_available() before a stream starts

        self._sink = _Spool()
        self._writer: Any
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # A dictionary for the name only: tried on every column (the default), it was most of
            # the encoding's time, and the values' pages came out larger.
            self._writer = pq.ParquetWriter(self._sink, arrow_schema(), use_dictionary=["name"])
        else:
            self._writer = pa.ipc.new_stream(self._sink, arrow_schema())

    def encode(self, batch: Any) -> bytes:
        self._writer.write_batch(batch)
        return self._sink.drain()

    async def stream(self, encoded: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for part in encoded:
            yield part
        self._writer.close()
        yield self._sink.drain()


class _Spool(io.RawIOBase):
    """A write-only file that hands its bytes out as they come but keeps counting: Parquet's
    footer records absolute offsets, so `tell()` must be the position in the whole stream."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._written

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data
