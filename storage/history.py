"""Exact history at any length: cursor pages over several series at once, and a chunked scan for
streaming exports. Nothing here downsamples; the order is always (metric name, step).

A page covers one step range for all the series asked for: every point with `after < step <=
through`, where `through` is the highest step that keeps each series within `page_size` points.
So a client that follows `through` as its next cursor sees every point exactly once, however
the series interleave, and a page never splits one step across two answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exists, func, select

from storage.database import SMALL_READ_POINTS, Database
from storage.lookups import series_rows, series_to_read
from storage.models import SeriesData
from storage.schema import POINT_SPECIAL, POINT_SPECIAL_SQL, points, series

__all__ = [
    "MAX_PAGE_SIZE",
    "ExportRow",
    "HistoryPage",
    "KeysetRead",
    "iter_history",
    "read_page",
    "tail_points",
]

MAX_PAGE_SIZE = 100_000

# (name, step, epoch, stored value, special code, wall-clock ms): one stored point. The value is
# as stored: +/-inf themselves, None for NaN (the special code says which, 0 when finite).
ExportRow = tuple[str, int, int | None, float | None, int, int]


@dataclass(frozen=True)
class HistoryPage:
    """Every point of the asked-for series with `after < step <= through`, exactly as stored.

    `through` is None when the page reached the end of every series (then the highest step
    returned, if any, is the cursor to go on from); `has_more` says whether points past
    `through` were stored when the page was read."""

    series: list[SeriesData]
    missing: list[str]
    through: int | None
    has_more: bool

    @property
    def last_step(self) -> int | None:
        """Where the next page starts (exclusive): `through`, else the highest step returned."""
        if self.through is not None:
            return self.through
        ends = [s.steps[-1] for s in self.series if s.steps]
        return max(ends) if ends else None


def _nth_step_after(conn: Connection, sid: int, after: int, n: int) -> int | None:
    """The step of the n-th point after `after` (an index seek plus n entries), or None."""
    query = (
        select(points.c.step)
        .where(points.c.series_id == sid, points.c.step > after)
        .order_by(points.c.step)
        .limit(1)
        .offset(n - 1)
    )
    step: int | None = conn.execute(query).scalar_one_or_none()
    return step


async def read_page(
    db: Database,
    operation_id: str,
    *,
    names: Sequence[str] | None = None,
    after_step: int | None = None,
    page_size: int = 10_000,
    looked_up: Sequence[Any] | None = None,
) -> HistoryPage:
    """One exact page: at most `page_size` points per series, all series over the same steps,
    in step order, never downsampled. Follow `HistoryPage.last_step` as the next `after_step`
    while `has_more`. A page of a few thousand points at most is read without a hop to a worker
    thread (`Database.run_read`), as the series' lookup before it (saved when `looked_up` gives
    the rows of all the operation's series just read, as in `read_metrics`)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size: must be between 1 and {MAX_PAGE_SIZE}")
    after = -1 if after_step is None else after_step
    is_sqlite = db.is_sqlite
    rows = await series_to_read(db, operation_id, names, looked_up)

    def query(conn: Connection) -> HistoryPage:
        # A series with no more points in all than a page needs no bound: skip its seek.
        bounds = [
            step
            for r in rows
            if r.n_points > page_size
            and (step := _nth_step_after(conn, r.id, after, page_size)) is not None
        ]
        through = min(bounds) if bounds else None
        by_id = {r.id: r for r in rows}
        fetched: dict[int, list[tuple[int, float | None, int]]] = {r.id: [] for r in rows}
        if rows and is_sqlite:
            fetched = _sqlite_page(conn, rows, after, through)
        elif rows:
            cols = select(points.c.series_id, points.c.step, points.c.value, POINT_SPECIAL)
            cols = cols.where(points.c.series_id.in_(list(by_id)), points.c.step > after)
            if through is not None:
                cols = cols.where(points.c.step <= through)
            for sid, step, value, special in conn.execute(
                cols.order_by(points.c.series_id, points.c.step)
            ):
                fetched[sid].append((step, value, special))
        has_more = through is not None and bool(
            conn.execute(
                select(exists().where(points.c.series_id.in_(list(by_id)), points.c.step > through))
            ).scalar()
        )
        result = [
            SeriesData.build(
                r.name,
                r.n_points,
                len(fetched[r.id]) if through is None else _matching(conn, r, after),
                fetched[r.id],
                downsampled=False,
            )
            for r in rows
        ]
        known = {r.name for r in rows}
        missing = [n for n in (names or []) if n not in known]
        return HistoryPage(series=result, missing=missing, through=through, has_more=has_more)

    small = sum(min(r.n_points, page_size) for r in rows) <= SMALL_READ_POINTS
    return await db.run_read(query, small=small)


def _sqlite_page(
    conn: Connection, rows: list[Any], after: int, through: int | None
) -> dict[int, list[tuple[int, float | None, int]]]:
    """The page's points on sqlite3 itself, a series at a time, as the rows it hands out: through
    SQLAlchemy's row objects a 20,000-point page cost five times as much."""
    raw = conn.connection.driver_connection
    assert raw is not None
    tail = () if through is None else (through,)
    bound = ("" if through is None else " AND step <= ?") + " ORDER BY step"
    return {r.id: raw.execute(_SQLITE_PAGE + bound, (r.id, after, *tail)).fetchall() for r in rows}


_SQLITE_PAGE = (
    f"SELECT step, value, {POINT_SPECIAL_SQL} FROM points WHERE series_id = ? AND step > ?"
)


def _matching(conn: Connection, row: Any, after: int) -> int:
    """Points after the cursor (all of them on a first page, read from the summary)."""
    if after < 0 or row.n_points == 0:
        return int(row.n_points)
    count = select(func.count()).where(points.c.series_id == row.id, points.c.step > after)
    return int(conn.execute(count).scalar_one())


async def tail_points(
    db: Database, operation_id: str, *, prefix: str, last: int
) -> list[ExportRow]:
    """The last `last` points of every series whose name starts with `prefix`, by (name, step):
    the recent window of a run's `system/...` series, epochs included."""

    def query(conn: Connection) -> list[ExportRow]:
        found = conn.execute(
            select(series.c.id, series.c.name, series.c.wall_base_ms).where(
                series.c.operation_id == operation_id, series.c.name.startswith(prefix)
            )
        ).all()
        rows: list[ExportRow] = []
        for sid, name, base in sorted(found, key=lambda r: r.name):
            recent = conn.execute(
                select(
                    points.c.step,
                    points.c.epoch,
                    points.c.value,
                    POINT_SPECIAL,
                    points.c.wall_ms + base,
                )
                .where(points.c.series_id == sid)
                .order_by(points.c.step.desc())
                .limit(last)
            ).all()
            rows += [(name, step, epoch, v, sp, ms) for step, epoch, v, sp, ms in reversed(recent)]
        return rows

    return await db.run_read(query)


async def iter_history(
    db: Database,
    operation_id: str,
    *,
    names: Sequence[str] | None = None,
    chunk_size: int = 20_000,
) -> AsyncIterator[list[ExportRow]]:
    """Every stored point of the series, by (name, step), in chunks of up to `chunk_size` read
    one after another (keyset: each chunk starts after the last one's final step). The first read
    raises `OperationNotFoundError` before anything is yielded."""
    rows = await db.run_read(lambda conn: series_rows(conn, operation_id, names))
    for row in rows:
        after = -1
        while True:
            chunk = await db.run_read(
                KeysetRead(row.id, row.name, row.wall_base_ms, after, chunk_size, db.is_sqlite)
            )
            if chunk:
                yield chunk
            if len(chunk) < chunk_size:
                break
            after = chunk[-1][1]


_SQLITE_CHUNK = (
    f"SELECT ?, step, epoch, value, {POINT_SPECIAL_SQL}, wall_ms + ? FROM points "
    "WHERE series_id = ? AND step > ? ORDER BY step LIMIT ?"
)


@dataclass(frozen=True)
class KeysetRead:
    """One keyset read: the next `size` points of a series after step `after`."""

    sid: int
    name: str
    wall_base_ms: int
    after: int
    size: int
    is_sqlite: bool

    def __call__(self, conn: Connection) -> list[ExportRow]:
        if self.is_sqlite:  # sqlite3 hands back the rows as they go out, at ~3x the speed
            raw = conn.connection.driver_connection
            assert raw is not None
            found: list[ExportRow] = raw.execute(
                _SQLITE_CHUNK, (self.name, self.wall_base_ms, self.sid, self.after, self.size)
            ).fetchall()
            return found
        query = (
            select(
                points.c.step,
                points.c.epoch,
                points.c.value,
                POINT_SPECIAL,
                points.c.wall_ms + self.wall_base_ms,
            )
            .where(points.c.series_id == self.sid, points.c.step > self.after)
            .order_by(points.c.step)
            .limit(self.size)
        )
        name = self.name
        return [(name, s, e, v, sp, w) for s, e, v, sp, w in conn.execute(query)]
