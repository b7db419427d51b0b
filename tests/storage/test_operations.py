from __future__ import annotations

import pytest

from storage import (
    Backend,
    IllegalTransitionError,
    OperationNotFoundError,
    OperationStatus,
    connect,
    create_operation,
    get_operation,
    list_operations,
    set_progress,
    set_status,
)

pytestmark = pytest.mark.anyio


async def test_a_created_operation_reads_back_with_its_spec_and_tags(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await create_operation(
            db,
            name="demo",
            backend=Backend.LOCAL,
            spec={"epochs": 3, "model": {"hidden_sizes": [8]}},
            epochs_total=3,
            tags={"team": "ml"},
        )
        got = await get_operation(db, op.operation_id)
    assert got == op
    assert got.status is OperationStatus.QUEUED
    assert got.spec["model"] == {"hidden_sizes": [8]}
    assert got.tags == {"team": "ml"}
    assert op.operation_id.startswith("op-") and len(op.operation_id) == 11


async def test_operations_survive_closing_and_reopening_the_database(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await create_operation(db, name="a", backend=Backend.EXTERNAL, spec={})
        await set_status(db, op.operation_id, OperationStatus.RUNNING)
        await set_progress(db, op.operation_id, 4)
    async with connect(db_url) as db:
        again = await get_operation(db, op.operation_id)
    assert again.status is OperationStatus.RUNNING
    assert again.epochs_done == 4
    assert again.started_at is not None


async def test_a_finished_run_never_goes_back_to_running(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await create_operation(db, name="a", backend=Backend.LOCAL, spec={})
        await set_status(db, op.operation_id, OperationStatus.RUNNING)
        done = await set_status(db, op.operation_id, OperationStatus.COMPLETED, reason="ok")
        with pytest.raises(IllegalTransitionError, match="'completed' and cannot become 'running'"):
            await set_status(db, op.operation_id, OperationStatus.RUNNING)
        assert (await get_operation(db, op.operation_id)).status is OperationStatus.COMPLETED
    assert done.finished_at is not None and done.reason == "ok"


async def test_reporting_the_current_status_again_is_a_harmless_no_op(db_url: str) -> None:
    async with connect(db_url) as db:
        op = await create_operation(db, name="a", backend=Backend.LOCAL, spec={})
        await set_status(db, op.operation_id, OperationStatus.FAILED, error="boom")
        again = await set_status(db, op.operation_id, OperationStatus.FAILED)
    assert again.status is OperationStatus.FAILED and again.error == "boom"


async def test_an_unknown_operation_is_reported_by_id(db_url: str) -> None:
    async with connect(db_url) as db:
        with pytest.raises(OperationNotFoundError, match="op-nope"):
            await get_operation(db, "op-nope")
        with pytest.raises(OperationNotFoundError):
            await set_status(db, "op-nope", OperationStatus.RUNNING)


async def test_listing_filters_by_status_newest_first_with_a_limit(db_url: str) -> None:
    async with connect(db_url) as db:
        ids = []
        for i in range(5):
            op = await create_operation(db, name=f"run{i}", backend=Backend.LOCAL, spec={})
            ids.append(op.operation_id)
        await set_status(db, ids[1], OperationStatus.RUNNING)
        await set_status(db, ids[3], OperationStatus.RUNNING)
        running = await list_operations(db, status=OperationStatus.RUNNING)
        newest_two = await list_operations(db, limit=2)
    assert [o.operation_id for o in running] == [ids[3], ids[1]]
    assert [o.name for o in newest_two] == ["run4", "run3"]
