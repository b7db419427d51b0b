"""Bring a database created by an earlier version up to the current tables, at open.

`metadata.create_all` creates missing tables but never alters existing ones, so each column added
since the first release is added here when it is missing. Idempotent; run on every open.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

from storage.schema import operations

__all__ = ["migrate"]

# (table, column) added after release 0.1.0, in order.
_ADDED_COLUMNS = ((operations, "lineage"),)


def migrate(conn: Connection) -> list[str]:
    """Add missing columns; returns what it added ('operations.lineage')."""
    added = []
    inspector = inspect(conn)
    for table, name in _ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        if name in present:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))
        added.append(f"{table.name}.{name}")
    return added
