"""SQLite writes: WAL checkpoints run in the checkpointer's thread, never inside a writer's commit;
small writes run on the event loop's thread and never wait there for another writer. Small reads
run on the event loop's thread too, and the others in a worker thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from sqlalchemy import Connection

from storage import Backend, append_points, connect, create_operation, read_metrics
from storage.history import read_page

pytestmark = pytest.mark.anyio

T = TypeVar("T")


def _autocheckpoint(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


async def test_commits_never_checkpoint_and_the_checkpointer_does(tmp_path: Path) -> None:
    path = tmp_path / "data" / "t.db"
    async with connect(f"sqlite+aiosqlite:///{path}") as db:
        assert db.checkpointer is not None
        assert await db.run_read(_autocheckpoint) == 0  # the hot path's own connection
        async with db.engine.connect() as conn:  # and the async engine's
            assert await conn.run_sync(_autocheckpoint) == 0
        op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
        await append_points(db, op.operation_id, [{"name": "m", "step": 1, "value": 1.0}])
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(db.checkpointer.ran.wait)
        assert db.checkpointer.checkpoints >= 1
        await append_points(db, op.operation_id, [{"name": "m", "step": 2, "value": 2.0}])
    wal = path.with_name("t.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # closing checkpointed what was left
    async with connect(f"sqlite+aiosqlite:///{path}") as db:
        read = await read_metrics(db, op.operation_id)
    assert read.series[0].steps == [1, 2] and read.series[0].values == [1.0, 2.0]


async def test_a_long_log_is_caught_up_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with connect(f"sqlite+aiosqlite:///{path}") as db:
        assert db.checkpointer is not None
        db.checkpointer.max_frames = 1  # any log is long
        op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
        await append_points(db, op.operation_id, [{"name": "m", "step": 1, "value": 1.0}])
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(db.checkpointer.ran.wait)
        assert db.checkpointer.catch_up_due
        assert db.checkpointer.catch_ups == 0
        await append_points(db, op.operation_id, [{"name": "m", "step": 2, "value": 2.0}])
        assert db.checkpointer.catch_ups == 1 and not db.checkpointer.catch_up_due
        read = await read_metrics(db, op.operation_id)
    assert read.series[0].steps == [1, 2]


async def test_a_small_write_waits_for_another_writer_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with connect(f"sqlite+aiosqlite:///{path}") as db:
        op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction holds the file
        with anyio.fail_after(5):  # the loop was not blocked for the 10 s busy timeout
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    append_points, db, op.operation_id, [{"name": "m", "step": 1, "value": 1.0}]
                )
                await anyio.lowlevel.checkpoint()  # the append tried and went to a worker thread
                assert (await read_metrics(db, op.operation_id)).series == []
                other.execute("COMMIT")
        other.close()
        read = await read_metrics(db, op.operation_id)
    assert read.series[0].steps == [1] and read.series[0].values == [1.0]


async def test_a_small_read_runs_on_the_event_loop_and_a_large_one_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 't.db'}") as db:
        here = threading.get_ident()
        assert await db.run_read(lambda _conn: threading.get_ident(), small=True) == here
        assert await db.run_read(lambda _conn: threading.get_ident()) != here
        op = await create_operation(db, name="r", backend=Backend.EXTERNAL, spec={})
        points = [{"name": "m", "step": s, "value": float(s % 97)} for s in range(20_000)]
        await append_points(db, op.operation_id, points)
        run_read, where = db.run_read, []

        async def spy(body: Callable[[Connection], T], *, small: bool = False) -> T:
            where.append(small)
            return await run_read(body, small=small)

        monkeypatch.setattr(db, "run_read", spy)

        async def reads(read: Awaitable[object]) -> list[bool]:
            where.clear()
            await read
            return list(where)

        # The series' lookup, then the points: on the loop when they are a few thousand at most
        assert await reads(read_metrics(db, op.operation_id)) == [True, False]
        assert await reads(read_metrics(db, op.operation_id, last=100)) == [True, True]
        sampled = read_metrics(db, op.operation_id, max_points=500)  # ~627 block summaries
        assert await reads(sampled) == [True, True]
        assert await reads(read_page(db, op.operation_id, page_size=4096)) == [True, True]
        assert await reads(read_page(db, op.operation_id, page_size=4097)) == [True, False]
        page = await read_page(db, op.operation_id, page_size=50)
    assert page.series[0].steps == list(range(50)) and page.has_more


async def test_a_small_read_the_file_refuses_runs_again_in_a_worker(tmp_path: Path) -> None:
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 't.db'}") as db:
        here, tries = threading.get_ident(), []

        def body(_conn: Connection) -> int:
            tries.append(threading.get_ident())
            if len(tries) == 1:  # what a reader meets while another process recovers the log
                raise sqlite3.OperationalError("database is locked")
            return 1

        assert await db.run_read(body, small=True) == 1
        assert tries[0] == here and tries[1] != here

        def broken(_conn: Connection) -> int:
            raise sqlite3.OperationalError("no such table: nothing")

        with pytest.raises(sqlite3.OperationalError, match="no such table"):  # not run again
            await db.run_read(broken, small=True)
