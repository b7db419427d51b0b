"""The block summaries behind long downsampled reads stay exact whatever the writes (out of order,
retried, forked, a database from before them), and a read through them picks the points its
in-memory twin picks from the whole history."""

from __future__ import annotations

import math
import random

import pytest
from sqlalchemy import Connection, select, text

from storage import (
    Backend,
    Database,
    OperationStatus,
    append_points,
    connect,
    copy_history,
    create_operation,
    delete_operation,
    read_metrics,
    set_status,
)
from storage.blocks import BLOCK_STEPS, covers, summarize
from storage.metrics import Row, _bucket_count, downsample_rows
from storage.schema import POINT_SPECIAL, point_blocks, points, series

pytestmark = pytest.mark.anyio

_COLUMNS = [c for c in point_blocks.c if c.name != "series_id"]


def _values(n: int, seed: int) -> list[dict[str, object]]:
    """n points of `m` with ties (values rounded to 0.1), two spikes, NaN and both infinities."""
    rng = random.Random(seed)
    pts: list[dict[str, object]] = [
        {"name": "m", "step": s, "value": round(math.sin(s / 50) + rng.uniform(-0.2, 0.2), 1)}
        for s in range(n)
    ]
    for step, value in ((777, 40.0), (n - 5, -40.0), (901, math.nan), (1500, math.inf)):
        pts[step]["value"] = value
    pts[1501]["value"] = pts[n // 2]["value"] = -math.inf  # 1501: its bucket keeps 1500 only
    return pts


async def _shuffled_writes(db: Database, op: str, pts: list[dict[str, object]]) -> None:
    """The points in shuffled batches of mixed sizes, then a retry of some with other values
    (which must change nothing: the first stored point of a step wins)."""
    order = pts[:]
    random.Random(1).shuffle(order)
    at = 0
    for size in [6, 1, 300, 2_000, 50] * 100:
        if at >= len(order):
            break
        await append_points(db, op, order[at : at + size])
        at += size
    retry = [{**p, "value": -1000.0} for p in pts[100:400]]
    await append_points(db, op, retry)


def _stored_rows(conn: Connection, op: str) -> tuple[list[Row], list[tuple[object, ...]]]:
    sid = conn.execute(select(series.c.id).where(series.c.operation_id == op)).scalar_one()
    rows = conn.execute(
        select(points.c.step, points.c.value, POINT_SPECIAL)
        .where(points.c.series_id == sid)
        .order_by(points.c.step)
    ).all()
    blocks = conn.execute(
        select(*_COLUMNS).where(point_blocks.c.series_id == sid).order_by(point_blocks.c.block)
    ).all()
    return [(r[0], r[1], r[2]) for r in rows], [tuple(b) for b in blocks]


async def _op(db: Database) -> str:
    return (await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})).operation_id


async def test_block_summaries_stay_exact_after_out_of_order_and_retried_writes(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _shuffled_writes(db, op, _values(6_000, seed=3))
        rows, blocks = await db.run_read(lambda conn: _stored_rows(conn, op))
    assert len(rows) == 6_000 and all(v != -1000.0 for _, v, _ in rows)
    assert blocks == summarize(rows)
    assert len(blocks) == 6_000 // BLOCK_STEPS + 1


async def test_a_long_sampled_read_picks_what_its_twin_picks_from_the_whole_history(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _shuffled_writes(db, op, _values(20_000, seed=5))
        rows, _ = await db.run_read(lambda conn: _stored_rows(conn, op))
        for after, max_points in ((None, 500), (None, 101), (36, 500), (5_000, 500), (63, 300)):
            kept = [r for r in rows if after is None or r[0] > after]
            nb = _bucket_count(max_points, nonfinite=True)
            assert covers(len(kept), kept[0][0], kept[-1][0], nb)  # the blocks' path, each time
            read = await read_metrics(db, op, after_step=after, max_points=max_points)
            got = read.series[0]
            twin = downsample_rows(kept, max_points, nonfinite=True)
            assert got.downsampled and got.matching_points == len(kept)
            assert got.steps == [r[0] for r in twin], (after, max_points)
            assert got.returned_points <= max_points
            assert got.values == [None if r[2] else r[1] for r in twin]
        whole = (await read_metrics(db, op, max_points=500)).series[0]
    assert whole.steps[0] == 0 and whole.steps[-1] == 19_999
    assert {777, 19_995, 901, 1500, 10_000} <= set(whole.steps)  # spikes and non-finite kept
    assert whole.non_finite == {"901": "nan", "1500": "inf", "10000": "-inf"}


def test_sparse_or_short_series_are_sampled_from_their_points() -> None:
    nb = _bucket_count(500, nonfinite=False)
    assert covers(20_000, 0, 19_999, nb)
    assert not covers(5_000, 0, 4_999, nb)  # under two blocks a bucket
    assert not covers(20_000, 0, 20_000 * 1_000, nb)  # ms steps: about a point a block


@pytest.mark.parametrize(
    "made_before",
    ["DROP TABLE point_blocks", "ALTER TABLE point_blocks DROP COLUMN n_points"],
    ids=["no blocks", "blocks without counts"],
)
async def test_a_database_from_before_blocks_gets_them_when_it_opens(
    db_url: str, made_before: str
) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await _shuffled_writes(db, op, _values(8_000, seed=7))
        before = (await read_metrics(db, op, max_points=200)).series[0]

        def forget(conn: Connection) -> None:  # as a database made before the table (or count)
            conn.execute(text(made_before))

        await db.run_write(forget)
    async with connect(db_url) as db:
        rows, blocks = await db.run_read(lambda conn: _stored_rows(conn, op))
        after = (await read_metrics(db, op, max_points=200)).series[0]
    assert blocks == summarize(rows)
    assert after == before


async def test_a_forked_runs_copied_history_has_its_blocks_and_deleting_a_run_drops_them(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        parent, child = await _op(db), await _op(db)
        pts = [{**p, "epoch": p["step"]} for p in _values(4_000, seed=9)]
        await append_points(db, parent, pts)
        await copy_history(db, parent, child, up_to_epoch=2_999)
        rows, blocks = await db.run_read(lambda conn: _stored_rows(conn, child))
        assert len(rows) == 3_000 and blocks == summarize(rows)
        await set_status(db, parent, OperationStatus.CANCELLED)
        await delete_operation(db, parent)

        def left(conn: Connection) -> int:
            return len(conn.execute(select(point_blocks.c.series_id)).all())

        assert await db.run_read(left) == len(blocks)  # the child's only


async def test_a_long_read_comes_from_the_blocks_unless_they_miss_points(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await _op(db)
        await append_points(db, op, _values(20_000, seed=11))

        def mark(conn: Connection) -> None:  # block 24's max said to be at step 770, not 777
            conn.execute(
                point_blocks.update().where(point_blocks.c.block == 24).values(max_step=770)
            )

        await db.run_write(mark)
        marked = (await read_metrics(db, op, max_points=500)).series[0]
        assert 770 in marked.steps and 777 not in marked.steps

        def lose_some(conn: Connection) -> None:  # as points stored by a writer without blocks
            # the blocks of the spike at 777 and of the last point
            conn.execute(point_blocks.delete().where(point_blocks.c.block.in_([24, 300, 624])))

        await db.run_write(lose_some)
        rows, _ = await db.run_read(lambda conn: _stored_rows(conn, op))
        got = (await read_metrics(db, op, max_points=500)).series[0]
        after = (await read_metrics(db, op, after_step=50, max_points=500)).series[0]
    assert got.steps == [r[0] for r in downsample_rows(rows, 500, nonfinite=True)]
    assert after.steps == [r[0] for r in downsample_rows(rows[51:], 500, nonfinite=True)]
