"""A forked run's start: the parent's history up to the fork point, copied into the child.

The child then reads as one whole run (its analysis, plots and cursors see the curve from epoch 1),
and the copy is an ordinary set of points: idempotent by (series, step), so copying twice, or a
resumed child retraining an epoch, never stores an epoch twice.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from storage.blocks import store_blocks
from storage.database import Database
from storage.errors import OperationNotFoundError
from storage.metrics import _ADD_TO_SUMMARY, StoredRow, _as_dicts, _series_ids, _summaries
from storage.models import special_of
from storage.schema import operations, points, series

__all__ = ["copy_history"]


async def copy_history(db: Database, source_id: str, target_id: str, *, up_to_epoch: int) -> int:
    """Copy every point of `source_id` from epochs 1..`up_to_epoch` into `target_id` (points
    that carry no epoch count their step as one); returns how many points were added."""
    is_sqlite = db.is_sqlite

    def transaction(conn: Connection) -> int:
        for oid in (source_id, target_id):
            known = conn.execute(select(operations.c.id).where(operations.c.id == oid)).first()
            if known is None:
                raise OperationNotFoundError(oid)
        found = conn.execute(
            select(series.c.id, series.c.name, series.c.wall_base_ms).where(
                series.c.operation_id == source_id
            )
        ).all()
        if not found:
            return 0
        names = {sid: name for sid, name, _ in found}
        source_bases = {sid: base for sid, _, base in found}
        in_range = or_(
            points.c.epoch <= up_to_epoch,
            and_(points.c.epoch.is_(None), points.c.step <= up_to_epoch),
        )
        source_points = conn.execute(
            select(points).where(points.c.series_id.in_(list(names)), in_range)
        ).all()
        if not source_points:
            return 0
        now_ms = int(time.time() * 1000)
        ids = _series_ids(conn, is_sqlite, target_id, set(names.values()), now_ms)
        rows: list[StoredRow] = []  # absolute ms and special codes, as the summaries take them
        for p in source_points:
            special = special_of(math.nan if p.value is None else p.value)
            wall_ms = p.wall_ms + source_bases[p.series_id]
            value = None if special else p.value
            rows.append((ids[names[p.series_id]][0], p.step, p.epoch, value, special, wall_ms))
        bases = {sid: base for sid, base in ids.values()}
        insert = (_insert(is_sqlite))(points).on_conflict_do_nothing()
        added = conn.execute(
            insert.returning(points.c.series_id, points.c.step), _as_dicts(rows, bases)
        ).all()
        keys = {(r[0], r[1]) for r in added}
        new_rows = [r for r in rows if (r[0], r[1]) in keys]
        if new_rows:
            conn.execute(_ADD_TO_SUMMARY, _summaries(new_rows))
            store_blocks(conn, new_rows)
        return len(new_rows)

    return await db.run_write(transaction)


def _insert(is_sqlite: bool) -> Any:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert if is_sqlite else pg_insert
