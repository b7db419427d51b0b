"""Deleting a run: its row, its series and points, and its push credential, in one transaction.

Only a run that has ended may go: one still queued or running is refused with its status, and
the check runs inside the deleting transaction, so a run resumed meanwhile is never deleted
under its trainer. The deletes are explicit, table by table, rather than left to `ON DELETE
CASCADE`: a database made by an earlier version may have been created without the foreign key.
A run forked from this one keeps its own copy of the history (`lineage.copy_history`) and only
names this one as its parent.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from storage.database import Database
from storage.errors import OperationNotFoundError, StorageError
from storage.models import TERMINAL_STATUSES, OperationStatus
from storage.schema import operations, points, push_credentials, series

__all__ = ["DeletedRun", "OperationActiveError", "delete_operation"]


class OperationActiveError(StorageError):
    """The run has not ended yet."""

    def __init__(self, operation_id: str, status: str) -> None:
        super().__init__(
            f"operation_id: operation {operation_id!r} is {status}; stop it first "
            "(stop_training, or POST .../cancel), then delete it"
        )
        self.operation_id = operation_id
        self.status = status


@dataclass(frozen=True)
class DeletedRun:
    operation_id: str
    status: OperationStatus
    points: int  # metric points deleted with it
    series: int


async def delete_operation(db: Database, operation_id: str) -> DeletedRun:
    """Delete an ended run and everything stored for it (not its files: the caller's)."""

    def transaction(conn: Connection) -> DeletedRun:
        status = conn.execute(
            select(operations.c.status).where(operations.c.id == operation_id)
        ).scalar_one_or_none()
        if status is None:
            raise OperationNotFoundError(operation_id)
        if OperationStatus(status) not in TERMINAL_STATUSES:
            raise OperationActiveError(operation_id, status)
        ids = select(series.c.id).where(series.c.operation_id == operation_id)
        gone_points = conn.execute(points.delete().where(points.c.series_id.in_(ids)))
        gone_series = conn.execute(series.delete().where(series.c.operation_id == operation_id))
        conn.execute(
            push_credentials.delete().where(push_credentials.c.operation_id == operation_id)
        )
        conn.execute(operations.delete().where(operations.c.id == operation_id))
        return DeletedRun(
            operation_id, OperationStatus(status), gone_points.rowcount, gone_series.rowcount
        )

    return await db.run_write(transaction)
