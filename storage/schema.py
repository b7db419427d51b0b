"""Tables. Points are stored compactly: one row per (series, step), clustered by that key.

A series is one metric of one operation; its row also holds the count and latest value, so the
latest value of every metric is read without scanning history. A point's row is its key, its
epoch (NULL when the point carries none), its value and its wall-clock time in ms after the
series' `wall_base_ms` (set when the series is made: 2-4 bytes where the absolute time took 6;
a series from before it existed has base 0). Non-finite values are stored faithfully in
`value` itself: +inf and -inf as the IEEE doubles, NaN as NULL (SQLite turns a NaN into NULL
anyway); `POINT_SPECIAL` reads them back as the codes NaN 1, +inf 2, -inf 3 (0: finite). A
database whose points still have the `special` column of earlier versions is moved to this
layout when it opens (`storage.migrations`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    text,
)

metadata = MetaData()

operations = Table(
    "operations",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("device", String(32)),
    Column("tags", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("epochs_total", Integer),
    Column("error", Text),
    Column("reason", Text),
    Column("bridge_url", String(500)),
    Column("heartbeat_at", Float),
    # {"parent_id", "from_epoch", "changes"} for a run forked from another; added by
    # storage.migrations to databases created before it existed
    Column("lineage", JSON),
    Index("ix_operations_status_created", "status", "created_at"),
    Index("ix_operations_created", "created_at"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "operation_id",
        String(16),
        ForeignKey("operations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(128), nullable=False),
    Column("n_points", Integer, nullable=False, default=0),
    Column("nonfinite", Integer, nullable=False, default=0),
    Column("first_step", BigInteger),
    Column("last_step", BigInteger),
    Column("last_value", Float),
    Column("last_special", SmallInteger),
    Column("last_wall_ms", BigInteger),
    # Points' wall_ms count from here (added by storage.migrations to older databases: 0 there).
    Column("wall_base_ms", BigInteger, nullable=False, server_default=text("0")),
    UniqueConstraint("operation_id", "name", name="uq_series_operation_name"),
)

points = Table(
    "points",
    metadata,
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), primary_key=True),
    Column("step", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch", Integer),
    Column("value", Float),  # +/-inf as themselves, NaN as NULL
    Column("wall_ms", BigInteger, nullable=False),  # ms after the series' wall_base_ms
    sqlite_with_rowid=False,
)

# Per series, the summary of every 32 steps (storage.blocks): what a long downsampled read reads.
point_blocks = Table(
    "point_blocks",
    metadata,
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), primary_key=True),
    Column("block", BigInteger, primary_key=True, autoincrement=False),  # step // 32
    Column("min_step", BigInteger),  # the lowest finite value's point (NULL: none finite)
    Column("min_value", Float),
    Column("max_step", BigInteger),
    Column("max_value", Float),
    Column("last_step", BigInteger, nullable=False),
    Column("last_value", Float),  # NULL when not finite
    Column("last_special", SmallInteger, nullable=False),
    Column("special_step", BigInteger),  # the first non-finite point (NULL: none)
    Column("special_code", SmallInteger),
    Column("n_points", Integer, nullable=False),
    sqlite_with_rowid=False,
)

# The largest finite double: a stored value above it is +inf, below its negative -inf.
_MAX = 1.7976931348623157e308
# A point's special code from its stored value, as SQL text (for the plain-SQL hot paths) and
# as a SQLAlchemy expression; `FINITE` selects the finite values.
POINT_SPECIAL_SQL = (
    f"CASE WHEN value IS NULL THEN 1 WHEN value > {_MAX!r} THEN 2 "
    f"WHEN value < {-_MAX!r} THEN 3 ELSE 0 END"
)
FINITE_SQL = f"value BETWEEN {-_MAX!r} AND {_MAX!r}"
POINT_SPECIAL = case(
    (points.c.value.is_(None), 1),
    (points.c.value > _MAX, 2),
    (points.c.value < -_MAX, 3),
    else_=0,
)

# A run's push credential (external and bridge runs): only its SHA-256 is kept. A table of its
# own, so a database made before it existed gains it with `create_all` and nothing else changes.
push_credentials = Table(
    "push_credentials",
    metadata,
    Column(
        "operation_id",
        String(16),
        ForeignKey("operations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("digest", String(64), nullable=False),
)
