"""Operations: create, read, list, and status changes with legal transitions enforced."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from storage.database import Database
from storage.errors import IllegalTransitionError, OperationNotFoundError
from storage.lookups import operation_row
from storage.models import TERMINAL_STATUSES, TRANSITIONS, Backend, Operation, OperationStatus
from storage.schema import operations

__all__ = [
    "create_operation",
    "get_operation",
    "list_operations",
    "new_operation_id",
    "record_heartbeat",
    "reopen_operation",
    "set_progress",
    "set_status",
]

_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"  # URL-safe, no look-alikes (l, 1, 0, o)


def new_operation_id() -> str:
    """A short URL-safe id such as `op-k3f9x2ab` (33**8 ~ 1.4e12 possibilities)."""
    return "op-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


async def create_operation(
    db: Database,
    *,
    name: str,
    backend: Backend,
    spec: Mapping[str, Any],
    epochs_total: int | None = None,
    tags: Mapping[str, str] | None = None,
    status: OperationStatus = OperationStatus.QUEUED,
    device: str | None = None,
    bridge_url: str | None = None,
    operation_id: str | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Operation:
    now = time.time()
    values = {
        "id": operation_id or new_operation_id(),
        "name": name,
        "status": status.value,
        "backend": backend.value,
        "spec": dict(spec),
        "device": device,
        "tags": dict(tags or {}),
        "created_at": now,
        "started_at": now if status is OperationStatus.RUNNING else None,
        "epochs_done": 0,
        "epochs_total": epochs_total,
        "bridge_url": bridge_url,
        "heartbeat_at": now if status is OperationStatus.RUNNING else None,
        "lineage": dict(lineage) if lineage is not None else None,
    }
    async with db.write() as conn:
        await conn.execute(operations.insert().values(**values))
        row = (await conn.execute(select(operations).where(operations.c.id == values["id"]))).one()
    return Operation.from_row(row)


async def get_operation(db: Database, operation_id: str) -> Operation:
    row = await db.run_read(lambda conn: operation_row(conn, operation_id), small=True)
    if row is None:
        raise OperationNotFoundError(operation_id)
    return Operation.from_row(row)


async def list_operations(
    db: Database,
    *,
    status: OperationStatus | None = None,
    backend: Backend | None = None,
    limit: int = 50,
) -> list[Operation]:
    """Newest first."""
    query = select(operations).order_by(operations.c.created_at.desc(), operations.c.id.desc())
    if status is not None:
        query = query.where(operations.c.status == status.value)
    if backend is not None:
        query = query.where(operations.c.backend == backend.value)
    rows = await db.run_read(lambda conn: conn.execute(query.limit(limit)).all(), small=True)
    return [Operation.from_row(r) for r in rows]


async def set_status(
    db: Database,
    operation_id: str,
    status: OperationStatus,
    *,
    error: str | None = None,
    reason: str | None = None,
    device: str | None = None,
) -> Operation:
    """Move an operation to `status`. Illegal moves (a finished run going back) raise
    `IllegalTransitionError`; re-reporting the current status changes nothing."""
    async with db.write() as conn:
        row = (
            await conn.execute(select(operations).where(operations.c.id == operation_id))
        ).one_or_none()
        if row is None:
            raise OperationNotFoundError(operation_id)
        current = OperationStatus(row.status)
        if current == status:
            return Operation.from_row(row)
        allowed = TRANSITIONS[current]
        if status not in allowed:
            raise IllegalTransitionError(
                operation_id, current.value, status.value, tuple(s.value for s in allowed)
            )
        now = time.time()
        values: dict[str, Any] = {"status": status.value}
        if status is OperationStatus.RUNNING:
            values["started_at"] = now
            values["heartbeat_at"] = now
        if status in TERMINAL_STATUSES:
            values["finished_at"] = now
        if error is not None:
            values["error"] = error
        if reason is not None:
            values["reason"] = reason
        if device is not None:
            values["device"] = device
        await conn.execute(update(operations).where(operations.c.id == operation_id).values(values))
        row = (await conn.execute(select(operations).where(operations.c.id == operation_id))).one()
    return Operation.from_row(row)


REOPENABLE = (OperationStatus.INTERRUPTED, OperationStatus.FAILED)


async def reopen_operation(db: Database, operation_id: str, *, reason: str) -> Operation:
    """Queue an interrupted or failed run again, to resume from its checkpoint: the one way back
    from a finished status. Its stored epochs stay; `error` is cleared, `reason` says why."""
    async with db.write() as conn:
        row = (
            await conn.execute(select(operations).where(operations.c.id == operation_id))
        ).one_or_none()
        if row is None:
            raise OperationNotFoundError(operation_id)
        current = OperationStatus(row.status)
        if current not in REOPENABLE:
            raise IllegalTransitionError(
                operation_id, current.value, OperationStatus.QUEUED.value, ()
            )
        await conn.execute(
            update(operations)
            .where(operations.c.id == operation_id)
            .values(
                status=OperationStatus.QUEUED.value, finished_at=None, error=None, reason=reason
            )
        )
        row = (await conn.execute(select(operations).where(operations.c.id == operation_id))).one()
    return Operation.from_row(row)


async def set_progress(db: Database, operation_id: str, epochs_done: int) -> None:
    """Record how many epochs have finished (never moves backwards)."""
    async with db.write() as conn:
        await conn.execute(
            update(operations)
            .where(operations.c.id == operation_id, operations.c.epochs_done < epochs_done)
            .values(epochs_done=epochs_done, heartbeat_at=time.time())
        )


async def record_heartbeat(db: Database, operation_id: str, at: float | None = None) -> None:
    async with db.write() as conn:
        await conn.execute(
            update(operations)
            .where(operations.c.id == operation_id)
            .values(heartbeat_at=at if at is not None else time.time())
        )
