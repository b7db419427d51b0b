from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from sqlalchemy import event

from storage import (
    Backend,
    Database,
    InvalidPointError,
    OperationFinishedError,
    OperationNotFoundError,
    OperationStatus,
    append_points,
    connect,
    create_operation,
    get_operation,
    latest_values,
    operation_with_series,
    read_metrics,
    read_page,
    set_status,
)
from storage.metrics import downsample_rows
from storage.models import SeriesLatest

pytestmark = pytest.mark.anyio


async def _op(db: Database) -> str:
    op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
    return op.operation_id


def _epochs(n: int, start: int = 1) -> list[dict[str, object]]:
    return [
        {"name": name, "step": e, "epoch": e, "value": base / e}
        for e in range(start, start + n)
        for name, base in (("train_loss", 1.0), ("val_loss", 2.0))
    ]


async def test_eight_concurrent_writers_lose_nothing(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)

        async def writer(w: int) -> None:
            for batch in range(10):
                pts = [
                    {"name": f"w{w}", "step": batch * 50 + i, "value": float(i)} for i in range(50)
                ]
                await append_points(db, op, pts)

        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(writer, w)
        read = await read_metrics(db, op)
    assert [s.name for s in read.series] == [f"w{w}" for w in range(8)]
    assert all(s.total_points == 500 and s.returned_points == 500 for s in read.series)
    assert all(s.steps == list(range(500)) for s in read.series)


async def test_points_survive_closing_and_reopening_the_engine(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _epochs(10))
    async with connect(db_url) as db:
        read = await read_metrics(db, op, names=["val_loss"])
    assert read.series[0].values == [2.0 / e for e in range(1, 11)]


async def test_nan_and_infinities_round_trip_and_are_flagged(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        pts = [
            {"name": "loss", "step": 1, "value": 0.5},
            {"name": "loss", "step": 2, "value": math.nan},
            {"name": "loss", "step": 3, "value": math.inf},
            {"name": "loss", "step": 4, "value": -math.inf},
        ]
        await append_points(db, op, pts)
        series = (await read_metrics(db, op)).series[0]
        latest = await latest_values(db, op)
    assert series.values == [0.5, None, None, None]
    assert series.non_finite == {"2": "nan", "3": "inf", "4": "-inf"}
    assert latest[0].step == 4 and latest[0].non_finite == "-inf" and latest[0].value is None
    assert "NaN" not in series.model_dump_json()


async def test_the_same_batch_twice_is_stored_once(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        first = await append_points(db, op, _epochs(5))
        second = await append_points(db, op, _epochs(5))
        read = await read_metrics(db, op)
    assert (first.stored, second.stored) == (10, 0)
    assert [s.total_points for s in read.series] == [5, 5]


async def test_a_bad_point_rejects_the_whole_batch_naming_index_and_field(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _epochs(2))
        bad = [*_epochs(1, start=3), {"name": "val loss!", "step": 3, "value": 1.0}]
        with pytest.raises(InvalidPointError) as info:
            await append_points(db, op, bad)
        negative = [{"name": "x", "step": -1, "value": 1.0}]
        with pytest.raises(InvalidPointError, match=r"points\[0\]\.step"):
            await append_points(db, op, negative)
        read = await read_metrics(db, op)
    assert (info.value.index, info.value.field) == (2, "name")
    assert [s.total_points for s in read.series] == [2, 2]


async def test_finished_or_unknown_operations_take_no_points(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await set_status(db, op, OperationStatus.CANCELLED)
        with pytest.raises(OperationFinishedError, match="cancelled"):
            await append_points(db, op, _epochs(1))
        with pytest.raises(OperationNotFoundError):
            await append_points(db, "op-missing", _epochs(1))
        with pytest.raises(OperationNotFoundError):
            await read_metrics(db, "op-missing")


async def test_cursor_and_last_n_report_totals_against_what_they_return(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _epochs(30))
        after = await read_metrics(db, op, names=["val_loss", "nope"], after_step=25)
        last = await read_metrics(db, op, names=["train_loss"], last=3)
    s = after.series[0]
    assert (s.total_points, s.matching_points, s.returned_points) == (30, 5, 5)
    assert s.steps == [26, 27, 28, 29, 30]
    assert after.missing == ["nope"]
    assert last.series[0].steps == [28, 29, 30]


async def test_latest_values_follow_the_highest_step_not_arrival(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, [{"name": "a", "step": 10, "value": 1.0}])
        await append_points(db, op, [{"name": "a", "step": 3, "value": 9.0}])
        latest = await latest_values(db, op)
    assert (latest[0].step, latest[0].value, latest[0].count) == (10, 1.0, 2)


def _spiky(n: int) -> list[dict[str, object]]:
    pts: list[dict[str, object]] = [
        {"name": "loss", "step": i, "value": 1.0 + 0.001 * math.sin(i)} for i in range(n)
    ]
    pts[1234] = {"name": "loss", "step": 1234, "value": 50.0}
    pts[4321] = {"name": "loss", "step": 4321, "value": -3.0}
    return pts


async def test_downsampling_keeps_spikes_first_and_last_and_is_deterministic(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _spiky(10_000))
        one = (await read_metrics(db, op, max_points=100)).series[0]
        two = (await read_metrics(db, op, max_points=100)).series[0]
    assert one == two
    assert one.downsampled and one.total_points == 10_000 and one.returned_points <= 100
    assert one.steps[0] == 0 and one.steps[-1] == 9_999
    assert 1234 in one.steps and one.values[one.steps.index(1234)] == 50.0
    assert 4321 in one.steps and one.values[one.steps.index(4321)] == -3.0


async def test_database_and_memory_downsampling_pick_the_same_points(db_url: str) -> None:
    raw = _spiky(5_000)
    raw[777] = {"name": "loss", "step": 777, "value": math.nan}
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, raw)
        in_db = (await read_metrics(db, op, max_points=200)).series[0]
        all_rows = (await read_metrics(db, op)).series[0]
    rows = [
        (s, v, 0 if v is not None else 1)
        for s, v in zip(all_rows.steps, all_rows.values, strict=True)
    ]
    in_memory = downsample_rows(rows, 200, nonfinite=True)
    assert in_db.steps == [r[0] for r in in_memory]
    assert in_db.non_finite == {"777": "nan"}


async def test_a_retry_that_overlaps_stored_points_keeps_counts_and_latest_exact(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, [*_epochs(3), {"name": "val_loss", "step": 2, "value": 9.0}])
        overlap = await append_points(db, op, _epochs(5))  # epochs 1-3 again, then 4 and 5
        latest = {s.name: s for s in await latest_values(db, op)}
        read = await read_metrics(db, op, names=["val_loss"])
    assert overlap.stored == 4
    assert (latest["val_loss"].count, latest["val_loss"].step) == (5, 5)
    assert latest["val_loss"].value == 2.0 / 5
    assert read.series[0].values[1] == 2.0 / 2  # the first point stored for a step wins


async def test_a_refused_write_does_not_take_concurrent_writes_down_with_it(db_url: str) -> None:
    async with connect(db_url) as db:
        live, done = await _op(db), await _op(db)
        await set_status(db, done, OperationStatus.CANCELLED)
        outcomes: dict[str, int | OperationFinishedError] = {}

        async def push(op: str, key: str) -> None:
            try:
                outcomes[key] = (await append_points(db, op, _epochs(3))).stored
            except OperationFinishedError as exc:
                outcomes[key] = exc

        async with anyio.create_task_group() as tg:
            for i in range(6):  # interleaved, so some share one group transaction
                tg.start_soon(push, live if i % 2 else done, f"{'live' if i % 2 else 'done'}{i}")
        read = await read_metrics(db, live)
    assert sorted(v for k, v in outcomes.items() if isinstance(v, int)) == [0, 0, 6]
    assert all(isinstance(v, OperationFinishedError) for k, v in outcomes.items() if "done" in k)
    assert [s.total_points for s in read.series] == [3, 3]


async def test_a_batch_past_one_insert_with_a_point_sent_twice_keeps_the_first(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        batch = [{"name": "m", "step": s, "value": float(s)} for s in range(12_000)]
        batch.insert(7_000, {"name": "m", "step": 3, "value": -1.0})  # again, in a later insert
        batch.insert(1, {"name": "m", "step": 0, "value": -1.0})  # again, in the same insert
        result = await append_points(db, op, batch, progress_epoch=5)
        read = await read_metrics(db, op)
        (latest,) = await latest_values(db, op)
        operation = await get_operation(db, op)
    assert (result.received, result.stored) == (12_002, 12_000)
    (series,) = read.series
    assert series.steps == list(range(12_000)) and series.values[:4] == [0.0, 1.0, 2.0, 3.0]
    assert (latest.count, latest.step, latest.value) == (12_000, 11_999, 11_999.0)
    assert operation.epochs_done == 5


async def test_a_batch_whose_later_insert_meets_stored_points_counts_only_the_new(
    db_url: str,
) -> None:
    # The first insert of the batch is all new; the second meets points stored before.
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(
            db, op, [{"name": "m", "step": s, "value": -1.0} for s in range(9_000, 9_010)]
        )
        batch = [{"name": "m", "step": s, "value": float(s)} for s in range(12_000)]
        batch[2]["value"] = math.nan
        result = await append_points(db, op, batch)
        again = await append_points(db, op, batch)
        read = await read_metrics(db, op)
        (latest,) = await latest_values(db, op)
    assert (result.received, result.stored, again.stored) == (12_000, 11_990, 0)
    (series,) = read.series
    assert series.total_points == 12_000 and series.steps == list(range(12_000))
    assert series.values[9_000:9_011] == [-1.0] * 10 + [9_010.0]
    assert series.non_finite == {"2": "nan"}
    assert (latest.count, latest.step, latest.value) == (12_000, 11_999, 11_999.0)


async def test_the_operation_and_its_latest_values_come_in_one_read(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _epochs(3))
        operation, rows = await operation_with_series(db, op)
        latest = [SeriesLatest.from_row(r) for r in rows]
        with pytest.raises(OperationNotFoundError):
            await operation_with_series(db, "op-missing")
    assert operation.operation_id == op
    assert [(s.name, s.count, s.step) for s in latest] == [("train_loss", 3, 3), ("val_loss", 3, 3)]


async def test_a_read_handed_the_series_rows_answers_the_same_without_looking_them_up(
    db_url: str,
) -> None:
    """`operation_with_series` then `read_metrics`/`read_page` with `looked_up=`: what every
    metrics read does, one lookup instead of two, and the same answer as a read on its own."""
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _epochs(120))
        operation, rows = await operation_with_series(db, op)
        assert operation.operation_id == op and [r.name for r in rows] == ["train_loss", "val_loss"]
        statements: list[str] = []
        engines = {e for e in (db.engine.sync_engine, db.inline_engine, db.sync_engine) if e}
        for engine in engines:
            event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        for names in (None, ["val_loss"], ["val_loss", "nope", "train_loss"], []):
            cases: list[dict[str, Any]] = [{}, {"last": 7}, {"max_points": 20}, {"after_step": 100}]
            for kwargs in cases:
                statements.clear()
                handed = await read_metrics(db, op, names=names, looked_up=rows, **kwargs)
                lookups = len(statements)
                alone = await read_metrics(db, op, names=names, **kwargs)
                assert handed == alone, (names, kwargs)
                assert len(statements) - lookups >= lookups + 1, (names, kwargs, statements)
            page = await read_page(db, op, names=names, after_step=3, page_size=50, looked_up=rows)
            assert page == await read_page(db, op, names=names, after_step=3, page_size=50)
        statements.clear()
        await read_metrics(db, op, names=["train_loss"], looked_up=rows)
        assert len(statements) == 1, statements  # the points, nothing else
