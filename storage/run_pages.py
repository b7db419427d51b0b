"""The run list in pages: newest first, walked with an opaque cursor.

The order is (created_at, id), both descending: a total order that never changes for a stored
run, so a client that follows `next_cursor` sees every run that existed when it started exactly
once, however many runs are created meanwhile (they are newer: they sort before the walk) or
deleted (they are simply not there). The cursor is the last row's key, base64-encoded: clients
pass back what they were given and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from storage.database import Database
from storage.errors import StorageError
from storage.models import Backend, Operation, OperationStatus
from storage.schema import operations

__all__ = ["MAX_RUN_CURSOR", "InvalidRunCursorError", "list_operations_page"]

MAX_RUN_CURSOR = 64  # characters of a cursor this module makes (an id is at most 16)
_ID_MAX = 16


class InvalidRunCursorError(StorageError):
    """A cursor that this module did not make."""

    def __init__(self) -> None:
        super().__init__(
            "cursor: not a next_cursor of the run list; pass one an earlier answer gave, or "
            "none for the newest runs"
        )


def _encode(created_at: float, operation_id: str) -> str:
    raw = f"{created_at!r}|{operation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[float, str]:
    if not cursor or len(cursor) > MAX_RUN_CURSOR:
        raise InvalidRunCursorError()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, operation_id = raw.split("|")
        created_at = float(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRunCursorError() from None
    if not math.isfinite(created_at) or not 0 < len(operation_id) <= _ID_MAX:
        raise InvalidRunCursorError()
    return created_at, operation_id


async def list_operations_page(
    db: Database,
    *,
    limit: int,
    cursor: str | None = None,
    status: OperationStatus | None = None,
    backend: Backend | None = None,
) -> tuple[list[Operation], str | None]:
    """At most `limit` runs after `cursor` (from the newest when None), newest first, and the
    cursor of the next page (None when this one reaches the oldest)."""
    query = select(operations).order_by(operations.c.created_at.desc(), operations.c.id.desc())
    if cursor:
        created_at, operation_id = _decode(cursor)
        query = query.where(
            or_(
                operations.c.created_at < created_at,
                and_(operations.c.created_at == created_at, operations.c.id < operation_id),
            )
        )
    if status is not None:
        query = query.where(operations.c.status == status.value)
    if backend is not None:
        query = query.where(operations.c.backend == backend.value)

    def read(conn: Connection) -> list[Any]:
        return list(conn.execute(query.limit(limit + 1)).all())

    rows = await db.run_read(read, small=True)
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = _encode(page[-1].created_at, page[-1].id) if more and page else None
    return [Operation.from_row(r) for r in page], next_cursor
