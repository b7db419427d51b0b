"""The lookups every read starts with, as statements built once: an operation's row and its
series' rows.

SQLAlchemy builds, coerces and keys a statement made per call in ~60-70 us; made once with bind
parameters it runs in ~20 us. A metrics read makes two or three of them before any point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from storage.database import Database
from storage.errors import OperationNotFoundError
from storage.schema import operations, series

__all__ = ["operation_row", "series_of", "series_rows", "series_to_read"]

_OPERATION = select(operations).where(operations.c.id == bindparam("op"))
_EXISTS = select(operations.c.id).where(operations.c.id == bindparam("op"))
_SERIES = select(series).where(series.c.operation_id == bindparam("op")).order_by(series.c.name)
_NAMED = (
    select(series)
    .where(series.c.operation_id == bindparam("op"))
    .where(series.c.name.in_(bindparam("names", expanding=True)))
    .order_by(series.c.name)
)


def operation_row(conn: Connection, operation_id: str) -> Any:
    """The operation's row, or None."""
    return conn.execute(_OPERATION, {"op": operation_id}).one_or_none()


def series_of(conn: Connection, operation_id: str) -> list[Any]:
    """Every series row of the operation, by name."""
    return list(conn.execute(_SERIES, {"op": operation_id}).all())


def series_rows(conn: Connection, operation_id: str, names: Sequence[str] | None) -> list[Any]:
    """The series asked for, in the order asked (all of them by name when `names` is None);
    raises `OperationNotFoundError` when the operation does not exist."""
    if names is None:
        found = {r.name: r for r in series_of(conn, operation_id)}
    elif names:
        params = {"op": operation_id, "names": list(names)}
        found = {r.name: r for r in conn.execute(_NAMED, params).all()}
    else:
        found = {}
    if not found and conn.execute(_EXISTS, {"op": operation_id}).first() is None:
        raise OperationNotFoundError(operation_id)
    return _in_order(found, names)


async def series_to_read(
    db: Database,
    operation_id: str,
    names: Sequence[str] | None,
    looked_up: Sequence[Any] | None,
) -> list[Any]:
    """What `series_rows` answers, on the event loop's thread (a lookup is small); from
    `looked_up`, the rows of all the operation's series a caller has just read (`series_of`),
    without a second lookup."""
    if looked_up is not None:
        return _in_order({r.name: r for r in looked_up}, names)
    return await db.run_read(lambda conn: series_rows(conn, operation_id, names), small=True)


def _in_order(found: dict[str, Any], names: Sequence[str] | None) -> list[Any]:
    order = names if names is not None else sorted(found)
    return [found[n] for n in order if n in found]
