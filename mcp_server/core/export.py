"""A run's whole metric history as a stream of bytes: JSON lines, CSV, or Parquet (with pyarrow).

Rows come in (metric, step) order, exactly as stored, never downsampled. Every format carries
NaN and the infinities faithfully: JSON lines use the tokens `NaN`, `Infinity` and `-Infinity`
(the ones `POST .../metrics` accepts, so each line is also a point to push back; Python's `json`
reads them), CSV writes `nan`, `inf` and `-inf` (what `float()` and pandas read), Parquet stores
IEEE doubles.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from storage import ExportRow

__all__ = ["EXPORT_FORMATS", "MEDIA_TYPES", "ExportFormat", "encode_history", "parquet_available"]

ExportFormat = Literal["jsonl", "csv", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet")
MEDIA_TYPES: dict[ExportFormat, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
COLUMNS = ("name", "step", "epoch", "value", "wall_time")

_JSON_SPECIAL = {1: "NaN", 2: "Infinity", 3: "-Infinity"}
_CSV_SPECIAL = {1: "nan", 2: "inf", 3: "-inf"}
_FLOAT_SPECIAL = {1: float("nan"), 2: float("inf"), 3: float("-inf")}


def parquet_available() -> bool:
    """pyarrow is optional: Parquet is offered only where it is installed."""
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


async def encode_history(
    rows: AsyncIterator[list[ExportRow]], fmt: ExportFormat
) -> AsyncIterator[bytes]:
    """The chunks of `iter_history` encoded in `fmt`, one bytes object per chunk."""
    if fmt == "parquet":
        async for part in _parquet(rows):
            yield part
        return
    if fmt == "csv":
        yield _csv_header()
    encode: Callable[[list[ExportRow]], bytes] = _csv if fmt == "csv" else _jsonl
    async for chunk in rows:
        yield encode(chunk)


async def _parquet(rows: AsyncIterator[list[ExportRow]]) -> AsyncIterator[bytes]:
    import pyarrow as pa  # optional: checked by parquet_available() before a stream starts
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("name", pa.string()),
            ("step", pa.int64()),
            ("epoch", pa.int32()),
            ("value", pa.float64()),
            ("wall_time", pa.float64()),
        ]
    )
    sink = _Spool()
    writer = pq.ParquetWriter(sink, schema)
    async for chunk in rows:
        writer.write_table(pa.table(_columns(chunk), schema=schema))  # a row group per chunk
        yield sink.drain()
    writer.close()
    yield sink.drain()


def _columns(chunk: list[ExportRow]) -> dict[str, list[Any]]:
    return {
        "name": [r[0] for r in chunk],
        "step": [r[1] for r in chunk],
        "epoch": [r[2] for r in chunk],
        "value": [_FLOAT_SPECIAL[r[4]] if r[4] else r[3] for r in chunk],
        "wall_time": [r[5] / 1000 for r in chunk],
    }


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
