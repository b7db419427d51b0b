"""Bring a database created by an earlier version up to the current tables, at open.

`metadata.create_all` creates missing tables but never alters existing ones, so each column added
since the first release is added here when it is missing, and the points' `special` column of
earlier versions is folded into `value` (+/-inf stored as themselves; NaN was already NULL) and
dropped: the table is rewritten once, and reads exactly as before. Idempotent; run on every open.
SQLite before 3.35 (still the system library of some distributions Python 3.11 runs on) has no
DROP COLUMN: there the table is rebuilt the way SQLite documents, inside the same transaction.
"""

from __future__ import annotations

import math
import sqlite3

from sqlalchemy import Connection, Float, MetaData, bindparam, inspect, text

from storage.blocks import fill_blocks
from storage.schema import operations, point_blocks, points, series

__all__ = ["migrate"]

# (table, column) added after release 0.1.0, in order.
_ADDED_COLUMNS = ((operations, "lineage"), (series, "wall_base_ms"))


def migrate(conn: Connection) -> list[str]:
    """Add missing columns and drop the old points' `special`; returns what it changed
    ('operations.lineage', '-points.special')."""
    changed = []
    inspector = inspect(conn)
    for table, name in _ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        if name in present:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        if column.server_default is not None:  # NOT NULL needs the default for existing rows
            kind += f" NOT NULL DEFAULT {column.server_default.arg.text}"  # type: ignore[attr-defined]
        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))
        changed.append(f"{table.name}.{name}")
    if "special" in {c["name"] for c in inspector.get_columns(points.name)}:
        fold = text(
            "UPDATE points SET value = CASE special WHEN 2 THEN :inf ELSE :ninf END "
            "WHERE special IN (2, 3)"
        ).bindparams(bindparam("inf", type_=Float), bindparam("ninf", type_=Float))
        conn.execute(fold, {"inf": math.inf, "ninf": -math.inf})
        if conn.dialect.name == "sqlite" and not sqlite_drops_columns():
            _rebuild_points(conn)
        else:
            conn.execute(text("ALTER TABLE points DROP COLUMN special"))
        changed.append("-points.special")
    blocks = {c["name"] for c in inspector.get_columns(point_blocks.name)}
    if "n_points" not in blocks:  # made by the first version of the table, for a few minutes
        conn.execute(text("DROP TABLE point_blocks"))
        point_blocks.create(conn)
    if fill_blocks(conn):
        changed.append("+point_blocks")
    return changed


def sqlite_drops_columns() -> bool:
    """Whether this process's SQLite has ALTER TABLE ... DROP COLUMN (3.35, March 2021)."""
    return sqlite3.sqlite_version_info >= (3, 35, 0)


def _rebuild_points(conn: Connection) -> None:
    """The points table as it is now, its rows copied over from the old one, which it replaces."""
    scratch = MetaData()
    series.to_metadata(scratch)  # what the copy's foreign key names
    rebuilt = points.to_metadata(scratch, name="points_rebuilt")
    rebuilt.create(conn)
    names = ", ".join(f'"{c.name}"' for c in points.columns)
    conn.execute(text(f"INSERT INTO points_rebuilt ({names}) SELECT {names} FROM points"))
    conn.execute(text("DROP TABLE points"))
    conn.execute(text("ALTER TABLE points_rebuilt RENAME TO points"))
