"""Tables. Points are stored compactly: one row per (series, step), clustered by that key.

A series is one metric of one operation; its row also holds the count and latest value, so the
latest value of every metric is read without scanning history. Non-finite values are stored
faithfully: `special` says NaN (1), +inf (2) or -inf (3), and `value` is then NULL
(SQLite would turn a NaN into NULL anyway).
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
    UniqueConstraint("operation_id", "name", name="uq_series_operation_name"),
)

points = Table(
    "points",
    metadata,
    Column("series_id", Integer, ForeignKey("series.id", ondelete="CASCADE"), primary_key=True),
    Column("step", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch", Integer),
    Column("value", Float),
    Column("special", SmallInteger, nullable=False, default=0),
    Column("wall_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
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
