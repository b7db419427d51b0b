"""JSON lines and CSV built from Arrow columns are byte for byte what the row-by-row writer makes
(the fallback where pyarrow is absent): doubles at every magnitude where Python's repr and
Arrow's cast write differently, NaN and the infinities, -0.0, epochs and none, names with every
character a metric name may hold, several series and chunks, an empty run; through ADBC's SQLite
driver (in its child process) and through the database's own rows. A stream closed half-way
stops its reader. The server process never loads the driver's own copy of SQLite."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mcp_server.core import export, export_text
from storage import Backend, Database, append_points, connect, create_operation, history_arrow

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.anyio


def _awkward_doubles() -> list[float]:
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 5e-324, 2.2250738585072014e-308]
    values += [1.7976931348623157e308, math.nan, math.inf, -math.inf, 1764650000.123]
    for exponent in range(-12, 24):  # both sides of every power of ten where the styles switch
        edge = 10.0**exponent
        values += [edge, 1.5 * edge, math.nextafter(edge, 0.0), math.nextafter(edge, math.inf)]
    rng = random.Random(17)
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-30, 30) for _ in range(2_000)]
    values += [struct.unpack("d", rng.randbytes(8))[0] for _ in range(2_000)]  # any bit pattern
    return [v for v in values if not math.isnan(v)] + [math.nan] * 3


async def _run(db: Database) -> str:
    op = (await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})).operation_id
    doubles = _awkward_doubles()
    points = [{"name": "odd/Name_1.x-y", "step": s, "value": v} for s, v in enumerate(doubles)]
    points += [{"name": "a", "step": s, "epoch": s // 10, "value": s / 7} for s in range(2_500)]
    points += [{"name": "zeros", "step": s, "epoch": 0, "value": 0.0} for s in range(3)]
    for start in range(0, len(points), 1_000):
        await append_points(db, op, points[start : start + 1_000])
    return op


async def _bytes(db: Database, op: str, fmt: export.ExportFormat) -> bytes:
    stream = export.export_history(db, op, fmt, None, chunk_size=700)
    return b"".join([part async for part in stream])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("adbc", [True, False])
async def test_the_columnar_text_writers_make_the_bytes_of_the_row_writer(
    tmp_path: Path, fmt: export.ExportFormat, adbc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not adbc:
        monkeypatch.setattr(history_arrow, "adbc_available", lambda: False)
    elif not history_arrow.adbc_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    monkeypatch.setattr(history_arrow, "PROCESS_READ_POINTS", 0)  # the child reads this short one
    assert export_text.vectorised_text_exact()
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        op = await _run(db)
        vectorised = await _bytes(db, op, fmt)
        monkeypatch.setattr(export, "parquet_available", lambda: False)
        rows = await _bytes(db, op, fmt)
    assert vectorised == rows
    lines = rows.decode().splitlines()
    assert len(lines) == len(_awkward_doubles()) + 2_503 + (fmt == "csv")
    if fmt == "jsonl":  # and the lines still read back as the doubles written
        odd = [json.loads(line)["value"] for line in lines if '"odd/' in line]
        stored = [0.0 if v == 0 else v for v in _awkward_doubles()]  # SQLite keeps no -0.0
        assert [repr(v) for v in odd] == [repr(v) for v in stored]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_a_run_without_points_exports_nothing_but_the_csv_header(
    tmp_path: Path, fmt: export.ExportFormat
) -> None:
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        op = (await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})).operation_id
        got = await _bytes(db, op, fmt)
    assert got == (b"name,step,epoch,value,wall_time\r\n" if fmt == "csv" else b"")


async def test_a_stream_closed_half_way_stops_its_reading_process_and_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not history_arrow.adbc_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    monkeypatch.setattr(history_arrow, "PROCESS_READ_POINTS", 0)
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        op = await _run(db)
        stream = history_arrow.iter_history_arrow(db, op, lambda b: b.num_rows, chunk_size=500)
        assert await stream.__anext__() == 500
        assert any(t.name.startswith("export-") for t in threading.enumerate())
        children = _children()
        assert len(children) == 1, children  # the reader, running ahead
        # A client gone: the reader is ended and the encode started ahead waited for.
        await stream.aclose()  # type: ignore[attr-defined]
        assert not any(t.name.startswith("export-") for t in threading.enumerate())
        assert _children() == []


def _children() -> list[str]:
    """The command lines of this process's live (not reaped) children."""
    me = str(os.getpid())
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                found.append((status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def test_pyarrow_doubles_go_row_by_row_when_its_formatting_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pyarrow that writes doubles otherwise is caught by the probe, not by a client."""
    real = export_text._doubles
    monkeypatch.setattr(
        export_text,
        "_doubles",
        lambda x, tokens: real(x, tokens) if len(x) < 3 else real(x[:1], tokens),
    )
    export_text.vectorised_text_exact.cache_clear()
    try:
        assert not export_text.vectorised_text_exact()
    finally:
        export_text.vectorised_text_exact.cache_clear()


def test_an_export_imports_neither_pandas_nor_adbcs_sqlite(tmp_path: Path) -> None:
    """pyarrow imports pandas (~0.2 s) the first time it converts a Python value; the export
    paths build theirs from bytes. ADBC's SQLite driver links its own SQLite, which beside the
    server's crashed it with SIGBUS: it runs in a child process only (storage/adbc_child.py)."""
    if not history_arrow.adbc_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    script = f"""
import anyio, sys
from mcp_server.core.export import export_history
from storage import Backend, append_points, connect, create_operation, history_arrow

async def main():
    async with connect("sqlite+aiosqlite:///{tmp_path / "x.db"}") as db:
        run = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={{}})
        op = run.operation_id
        await append_points(db, op, [{{"name": "m", "step": s, "value": 1 / s}} for s in (1, 2)])
        await append_points(db, op, [{{"name": "n", "step": 0, "value": float("nan")}}])
        for fmt in ("jsonl", "csv", "parquet", "arrow"):
            assert b"".join([p async for p in export_history(db, op, fmt, None)])

history_arrow.PROCESS_READ_POINTS = 0  # through the driver, in its child process
anyio.run(main)
assert "pandas" not in sys.modules, "pandas was imported"
# The driver's own copy of SQLite must never open the file beside sqlite3's: storage/adbc_child.py
assert "adbc_driver_sqlite" not in sys.modules, "ADBC's SQLite was loaded into the server"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


async def test_a_reader_that_fails_raises_its_last_words_not_a_short_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies (a driver error, a killed process) is an error with what it said on
    stderr, never an export that silently ends early."""
    if not history_arrow.adbc_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    failing = tmp_path / "failing_child.py"
    failing.write_text("import sys\nsys.stdin.read()\nsys.exit('the driver could not open it')\n")
    monkeypatch.setattr(history_arrow, "_CHILD", failing)
    monkeypatch.setattr(history_arrow, "PROCESS_READ_POINTS", 0)
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") as db:
        op = await _run(db)
        with pytest.raises(RuntimeError, match="exited with 1: the driver could not open it"):
            await _bytes(db, op, "parquet")
    assert _children() == []
