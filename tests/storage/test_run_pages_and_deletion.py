"""The run list's pages and deleting a run, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from storage import (
    Backend,
    InvalidRunCursorError,
    OperationActiveError,
    OperationNotFoundError,
    OperationStatus,
    append_points,
    connect,
    create_operation,
    delete_operation,
    issue_push_credential,
    latest_values,
    list_operations_page,
    push_credential_matches,
    set_status,
)

pytestmark = pytest.mark.anyio


async def test_pages_walk_every_run_once_newest_first_with_a_status_filter(db_url: str) -> None:
    async with connect(db_url) as db:
        made = []
        for i in range(7):
            op = await create_operation(db, name=f"r{i}", backend=Backend.EXTERNAL, spec={})
            made.append(op.operation_id)
            if i % 2:
                await set_status(db, op.operation_id, OperationStatus.CANCELLED)
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = await list_operations_page(db, limit=3, cursor=cursor)
            seen += [op.operation_id for op in page]
            if cursor is None:
                break
        assert seen == list(reversed(made))
        cancelled, more = await list_operations_page(db, limit=10, status=OperationStatus.CANCELLED)
        assert [op.operation_id for op in cancelled] == [made[5], made[3], made[1]]
        assert more is None
        with pytest.raises(InvalidRunCursorError):
            await list_operations_page(db, limit=3, cursor="bm90LWEtbnVtYmVyfG9wLXg")


async def test_deleting_a_run_takes_its_points_and_credential_and_nothing_else(
    db_url: str,
) -> None:
    async with connect(db_url) as db:
        ops = [
            await create_operation(
                db, name=n, backend=Backend.EXTERNAL, spec={}, status=OperationStatus.RUNNING
            )
            for n in ("gone", "kept")
        ]
        for op in ops:
            await issue_push_credential(db, op.operation_id)
            points = [{"name": "val_loss", "step": s, "value": 1.0 / s} for s in (1, 2, 3)]
            await append_points(db, op.operation_id, points)
        gone, kept = (op.operation_id for op in ops)
        with pytest.raises(OperationActiveError, match="is running"):
            await delete_operation(db, gone)
        await set_status(db, gone, OperationStatus.COMPLETED)
        deleted = await delete_operation(db, gone)
        assert (deleted.points, deleted.series, deleted.status) == (
            3,
            1,
            OperationStatus.COMPLETED,
        )
        with pytest.raises(OperationNotFoundError):
            await delete_operation(db, gone)
        assert await push_credential_matches(db, kept, "wrong") is False  # still protected
        assert [s.count for s in await latest_values(db, kept)] == [3]
