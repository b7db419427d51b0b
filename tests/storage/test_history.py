from __future__ import annotations

import math

import pytest

from storage import (
    Backend,
    Database,
    OperationNotFoundError,
    append_points,
    connect,
    create_operation,
    iter_history,
    read_page,
)

pytestmark = pytest.mark.anyio


async def _op(db: Database) -> str:
    op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
    return op.operation_id


def _value(step: int) -> float:
    """A value per step, with NaN and both infinities sprinkled in."""
    if step % 997 == 0:
        return math.nan
    if step % 1999 == 0:
        return math.inf
    if step % 2999 == 0:
        return -math.inf
    return 1.0 / (step + 1) + step * 1e-9


def _same(a: float | None, b: float) -> bool:
    return a is not None and ((math.isnan(a) and math.isnan(b)) or a == b)


async def _store(db: Database, op: str, name: str, steps: range) -> None:
    batch: list[dict[str, object]] = []
    for step in steps:
        batch.append({"name": name, "step": step, "value": _value(step)})
        if len(batch) == 5_000:
            await append_points(db, op, batch)
            batch = []
    if batch:
        await append_points(db, op, batch)


async def test_a_25000_point_series_read_whole_through_pages_equals_what_was_written(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _store(db, op, "loss", range(25_000))
        steps: list[int] = []
        values: list[float] = []
        after: int | None = None
        pages = 0
        while True:
            page = await read_page(db, op, names=["loss"], after_step=after, page_size=4_000)
            pages += 1
            (series,) = page.series
            assert not series.downsampled
            assert series.total_points == 25_000
            steps += series.steps
            values += series.floats()
            after = page.last_step
            if not page.has_more:
                break
    assert pages == 7
    assert steps == list(range(25_000))
    assert all(_same(v, _value(s)) for s, v in zip(steps, values, strict=True))
    assert sum(math.isnan(v) for v in values) == len(range(0, 25_000, 997))


async def test_pages_over_series_of_different_density_return_every_point_once(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _store(db, op, "dense", range(0, 3_000))
        await _store(db, op, "sparse", range(0, 30_000, 100))
        seen: dict[str, list[int]] = {"dense": [], "sparse": []}
        after: int | None = None
        while True:
            page = await read_page(
                db, op, names=["sparse", "dense"], after_step=after, page_size=50
            )
            assert [s.name for s in page.series] == ["sparse", "dense"]
            for s in page.series:
                assert s.returned_points <= 50
                lo = -1 if after is None else after
                assert all(lo < t <= (page.through or t) for t in s.steps)
                seen[s.name] += s.steps
            after = page.last_step
            if not page.has_more:
                break
    assert seen["dense"] == list(range(3_000))
    assert seen["sparse"] == list(range(0, 30_000, 100))


async def test_a_page_counts_what_lies_after_its_cursor_and_names_missing_series(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _store(db, op, "loss", range(100))
        page = await read_page(db, op, names=["loss", "nope"], after_step=89, page_size=5)
        with pytest.raises(ValueError, match="page_size"):
            await read_page(db, op, page_size=0)
        with pytest.raises(OperationNotFoundError):
            await read_page(db, "op-missing")
    (series,) = page.series
    assert (series.total_points, series.matching_points, series.returned_points) == (100, 10, 5)
    assert series.steps == [90, 91, 92, 93, 94]
    assert (page.through, page.has_more, page.missing) == (94, True, ["nope"])


async def test_the_history_scan_yields_every_point_by_name_then_step_in_chunks(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _store(db, op, "b", range(2_500))
        await _store(db, op, "a", range(10, 20))
        chunks = [c async for c in iter_history(db, op, chunk_size=1_000)]
        only_a = [c async for c in iter_history(db, op, names=["a"])]
        with pytest.raises(OperationNotFoundError):
            _ = [c async for c in iter_history(db, "op-missing")]
    assert [len(c) for c in chunks] == [10, 1_000, 1_000, 500]
    rows = [r for c in chunks for r in c]
    assert [(r[0], r[1]) for r in rows] == [("a", s) for s in range(10, 20)] + [
        ("b", s) for s in range(2_500)
    ]
    restored = {1: math.nan, 2: math.inf, 3: -math.inf}
    assert all(_same(restored.get(r[4], r[3] or 0.0), _value(r[1])) for r in rows)
    assert len(only_a) == 1 and len(only_a[0]) == 10
