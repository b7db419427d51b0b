"""The history as Arrow record batches equals the history as rows, point for point, through
ADBC's SQLite driver (in its child process), through the database's own rows (PostgreSQL, or no
driver), NaN and infinities included, even where a chunk starts with NaNs (the driver guesses a
column's type from its first rows)."""

from __future__ import annotations

import math

import pytest

from storage import (
    Backend,
    Database,
    append_points,
    connect,
    create_operation,
    history_arrow,
    iter_history,
    iter_history_arrow,
)

pa = pytest.importorskip("pyarrow")
pytestmark = pytest.mark.anyio


def _value(step: int) -> float:
    if step < 1_500 or step % 997 == 0:  # a run of NaNs first: the driver sees nothing else
        return math.nan
    if step % 1999 == 0:
        return math.inf
    if step % 2999 == 0:
        return -math.inf
    return 1.0 / (step + 1) + step * 1e-9


async def _written(db: Database) -> str:
    op = (await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})).operation_id
    pts = [{"name": "val_loss", "step": s, "value": _value(s)} for s in range(12_000)]
    pts += [{"name": "acc", "step": s, "epoch": s, "value": 0.5 + s} for s in range(1, 4)]
    for start in range(0, len(pts), 5_000):
        await append_points(db, op, pts[start : start + 5_000])
    return op


def _key(v: float | None) -> str:
    return "nan" if v is None or math.isnan(v) else repr(v)


@pytest.mark.parametrize("adbc", [True, False])
async def test_arrow_batches_equal_the_rows(
    db_url: str, adbc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not adbc:
        monkeypatch.setattr(history_arrow, "adbc_available", lambda: False)
    elif not history_arrow.adbc_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    monkeypatch.setattr(history_arrow, "PROCESS_READ_POINTS", 0)  # the child reads this short one
    async with connect(db_url) as db:
        op = await _written(db)
        rows = [r async for chunk in iter_history(db, op) for r in chunk]
        batches = [b async for b in iter_history_arrow(db, op, lambda b: b, chunk_size=5_000)]
    table = pa.Table.from_batches(batches)
    assert table.schema == history_arrow.arrow_schema()
    assert [b.num_rows for b in batches] == [3, 5_000, 5_000, 2_000]  # a series at a time
    got = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    want = [
        (name, step, epoch, value if not special else _SPECIAL[special], wall_ms / 1000)
        for name, step, epoch, value, special, wall_ms in rows
    ]
    assert [(n, s, e, w) for n, s, e, _, w in got] == [(n, s, e, w) for n, s, e, _, w in want]
    assert [_key(v) for *_, v, _ in got] == [_key(v) for *_, v, _ in want]


_SPECIAL = {1: math.nan, 2: math.inf, 3: -math.inf}
