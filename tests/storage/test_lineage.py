"""A database from before `lineage` gains the column on open and keeps its runs; a forked run's
start is the parent's history up to the fork point; a reopened run is queued again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import (
    Backend,
    IllegalTransitionError,
    OperationStatus,
    append_points,
    connect,
    copy_history,
    create_operation,
    get_operation,
    read_metrics,
    reopen_operation,
    set_status,
)

pytestmark = pytest.mark.anyio


async def test_an_older_sqlite_file_gains_the_lineage_column_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with connect(url) as db:
        op = await create_operation(db, name="old run", backend=Backend.LOCAL, spec={})
    with sqlite3.connect(path) as raw:  # make it look like a file written before the column
        raw.execute("ALTER TABLE operations DROP COLUMN lineage")
    async with connect(url) as db:
        again = await get_operation(db, op.operation_id)
        assert (again.name, again.lineage) == ("old run", None)
        child = await create_operation(
            db,
            name="child",
            backend=Backend.LOCAL,
            spec={},
            lineage={"parent_id": op.operation_id, "from_epoch": 3, "changes": {"epochs": 2}},
        )
        assert child.lineage is not None and child.lineage.from_epoch == 3
    with sqlite3.connect(path) as raw:
        columns = [r[1] for r in raw.execute("PRAGMA table_info(operations)")]
    assert columns.count("lineage") == 1


async def test_the_parents_points_up_to_the_fork_epoch_are_copied_once(db_url: str) -> None:
    async with connect(db_url) as db:
        parent = await create_operation(db, name="p", backend=Backend.LOCAL, spec={})
        child = await create_operation(db, name="c", backend=Backend.LOCAL, spec={})
        points = [{"name": "val_loss", "step": e, "epoch": e, "value": 1.0 / e} for e in (1, 2, 3)]
        points += [
            {"name": "step/train_loss", "step": s, "epoch": 1 + s // 10, "value": s}
            for s in (5, 15, 25)
        ]
        await append_points(db, parent.operation_id, points)
        assert await copy_history(db, parent.operation_id, child.operation_id, up_to_epoch=2) == 4
        assert await copy_history(db, parent.operation_id, child.operation_id, up_to_epoch=2) == 0
        read = await read_metrics(db, child.operation_id)
        by_name = {s.name: (s.steps, s.total_points) for s in read.series}
        assert by_name == {"val_loss": ([1, 2], 2), "step/train_loss": ([5, 15], 2)}


async def test_only_an_interrupted_or_failed_run_is_reopened(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await create_operation(db, name="r", backend=Backend.LOCAL, spec={})
        with pytest.raises(IllegalTransitionError):
            await reopen_operation(db, op.operation_id, reason="again")
        await set_status(db, op.operation_id, OperationStatus.FAILED, error="boom")
        again = await reopen_operation(db, op.operation_id, reason="again")
        assert (again.status, again.error, again.reason) == (OperationStatus.QUEUED, None, "again")
        assert again.finished_at is None
