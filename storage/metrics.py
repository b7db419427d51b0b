"""Metric points: idempotent batch append, cursor / last-N / downsampled reads, latest values."""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from math import isfinite
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.blocks import (
    BLOCK_STEPS,
    UPSERT_BLOCKS_SQLITE,
    Summary,
    covers,
    fold_rows,
    pick,
    read_blocks,
    store_blocks,
)
from storage.blocks import summarize as summarize_blocks
from storage.database import SMALL_READ_POINTS, Database
from storage.errors import InvalidPointError, OperationFinishedError, OperationNotFoundError
from storage.lookups import operation_row, series_of, series_to_read
from storage.models import (
    TERMINAL_STATUSES,
    MetricPointIn,
    MetricsRead,
    Operation,
    OperationStatus,
    SeriesData,
    SeriesLatest,
    special_of,
)
from storage.schema import (
    FINITE_SQL,
    POINT_SPECIAL,
    POINT_SPECIAL_SQL,
    operations,
    points,
    series,
)
from training_mcp.points import METRIC_NAME_RULE, MetricPoint

__all__ = [
    "MIN_SAMPLE_POINTS",
    "AppendResult",
    "append_points",
    "invalid_point",
    "latest_values",
    "operation_with_series",
    "read_metrics",
    "validate_points",
]

# Downsampling keeps each bucket's first, min, max and last point: fewer than this is no sample.
MIN_SAMPLE_POINTS = 4

Row = tuple[int, float | None, int]  # (step, stored value, special code)
PointLike = MetricPointIn | MetricPoint | Mapping[str, Any]


_BATCH = TypeAdapter(list[MetricPointIn])


def validate_points(raw: Sequence[PointLike]) -> list[MetricPointIn]:
    """Validate a whole batch of `MetricPointIn`s, `training_mcp.points.MetricPoint`s or JSON
    objects; the first bad point raises `InvalidPointError` with its index."""
    if all(isinstance(item, MetricPointIn) for item in raw):
        return list(raw)  # type: ignore[arg-type]  # checked just above
    try:
        return _BATCH.validate_python(list(raw), from_attributes=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise invalid_point(first, first["loc"]) from exc


def invalid_point(error: ErrorDetails, loc: tuple[int | str, ...]) -> InvalidPointError:
    """A pydantic error about a batch's point as `InvalidPointError`: `loc` is (index, field...);
    a name that breaks the rule is told the rule rather than the regular expression."""
    index = loc[0] if loc and isinstance(loc[0], int) else 0
    field = ".".join(str(p) for p in loc[1:]) or "point"
    message = METRIC_NAME_RULE if error["type"] == "string_pattern_mismatch" else error["msg"]
    return InvalidPointError(index, field, message)


class AppendResult:
    """How many points a batch added (duplicates of stored points are not added again)."""

    __slots__ = ("received", "stored")

    def __init__(self, received: int, stored: int) -> None:
        self.received = received
        self.stored = stored

    def __repr__(self) -> str:
        return f"AppendResult(received={self.received}, stored={self.stored})"


def _insert(is_sqlite: bool) -> Any:
    if is_sqlite:
        return sqlite_insert
    # PostgreSQL's dialect only where it is used: importing it cost ~60 ms of every start.
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert


def _series_ids(
    conn: Connection, is_sqlite: bool, operation_id: str, names: Iterable[str], now_ms: int
) -> dict[str, tuple[int, int]]:
    """Each name's (series id, wall_base_ms), making the missing series with base `now_ms`."""
    wanted = set(names)
    query = select(series.c.name, series.c.id, series.c.wall_base_ms).where(
        series.c.operation_id == operation_id, series.c.name.in_(wanted)
    )
    ids = {name: (sid, base) for name, sid, base in conn.execute(query).all()}
    missing = wanted - ids.keys()
    if missing:
        stmt = _insert(is_sqlite)(series).on_conflict_do_nothing()
        conn.execute(
            stmt,
            [
                {"operation_id": operation_id, "name": n, "n_points": 0, "wall_base_ms": now_ms}
                for n in sorted(missing)
            ],
        )
        ids.update({name: (sid, base) for name, sid, base in conn.execute(query).all()})
    return ids


async def append_points(
    db: Database,
    operation_id: str,
    raw_points: Sequence[PointLike],
    *,
    allow_finished: bool = False,
    progress_epoch: int | None = None,
) -> AppendResult:
    """Store a batch atomically: all points or none. A point whose (name, step) is already stored
    is skipped, so retries are harmless. A finished operation takes no more points unless
    `allow_finished` (used for the final flush of a run being closed). `progress_epoch` also
    records, in the same transaction, how many epochs the run has finished."""
    batch = validate_points(raw_points)
    now_ms = int(time.time() * 1000)
    is_sqlite = db.is_sqlite

    def transaction(conn: Connection) -> AppendResult:
        if is_sqlite:
            raw = conn.connection.driver_connection
            return _append_sqlite(raw, operation_id, batch, now_ms, allow_finished, progress_epoch)
        status = conn.execute(
            select(operations.c.status).where(operations.c.id == operation_id)
        ).scalar_one_or_none()
        if status is None:
            raise OperationNotFoundError(operation_id)
        if not allow_finished and OperationStatus(status) in TERMINAL_STATUSES:
            raise OperationFinishedError(operation_id, status)
        stored = 0
        if batch:
            ids = _series_ids(conn, is_sqlite, operation_id, {p.name for p in batch}, now_ms)
            full = [_stored_row(ids[p.name][0], p, now_ms) for p in batch]
            bases = {sid: base for sid, base in ids.values()}
            insert_points = (
                _insert(is_sqlite)(points)
                .on_conflict_do_nothing()
                .returning(points.c.series_id, points.c.step)
            )
            added = {(r[0], r[1]) for r in conn.execute(insert_points, _as_dicts(full, bases))}
            stored = len(added)
            if added:
                new_rows = [r for r in full if (r[0], r[1]) in added]
                if len(new_rows) > stored:  # the same (name, step) twice in one batch
                    new_rows = list({(r[0], r[1]): r for r in reversed(new_rows)}.values())
                conn.execute(_ADD_TO_SUMMARY, _summaries(new_rows))
                store_blocks(conn, new_rows)
        if progress_epoch is not None:
            conn.execute(
                update(operations)
                .where(operations.c.id == operation_id, operations.c.epochs_done < progress_epoch)
                .values(epochs_done=progress_epoch, heartbeat_at=time.time())
            )
        return AppendResult(len(batch), stored)

    return await db.run_write(transaction, small=len(batch) <= _SMALL_BATCH)


# An epoch's points, or a few hundred step points: stored on the event loop's thread (~0.1-0.5 ms).
_SMALL_BATCH = 256


def _append_sqlite(
    raw: Any,
    operation_id: str,
    batch: list[MetricPointIn],
    now_ms: int,
    allow_finished: bool,
    progress_epoch: int | None,
) -> AppendResult:
    """`append_points`' transaction on SQLite's own connection (inside the transaction the
    engine opened): the same statements as plain SQL, which sqlite3 keeps prepared. Building and
    compiling them through SQLAlchemy cost ~0.7 ms per epoch, three times what SQLite spends."""
    found = raw.execute("SELECT status FROM operations WHERE id = ?", (operation_id,)).fetchone()
    if found is None:
        raise OperationNotFoundError(operation_id)
    if not allow_finished and OperationStatus(found[0]) in TERMINAL_STATUSES:
        raise OperationFinishedError(operation_id, found[0])
    stored = 0
    if batch:
        ids = _sqlite_series_ids(raw, operation_id, sorted({p.name for p in batch}), now_ms)
        rows: list[StoredRow] = []  # what the summaries take: absolute ms, special codes
        flat_all: list[Any] = []  # what the table takes: value as stored, ms after the base
        for p in batch:
            sid, base = ids[p.name]
            value: float | None = p.value
            wall_ms = now_ms if p.wall_time is None else int(p.wall_time * 1000)
            if isfinite(p.value):
                rows.append((sid, p.step, p.epoch, p.value, 0, wall_ms))
            else:
                special = special_of(p.value)
                rows.append((sid, p.step, p.epoch, None, special, wall_ms))
                value = _STORED_SPECIAL[special]
            flat_all += (sid, p.step, p.epoch, value, wall_ms - base)
        added: set[tuple[int, int]] | None = None  # None while every row so far was new
        for start in range(0, len(rows), _SQLITE_ROWS):  # within SQLite's 32,766 parameters
            part = rows[start : start + _SQLITE_ROWS]
            values = ",".join(["(?,?,?,?,?)"] * len(part))
            flat = flat_all[start * 5 : (start + len(part)) * 5]
            if added is None:
                # The usual batch is all new: a plain INSERT, nothing to return. A duplicate
                # aborts only this statement (SQLite undoes it whole) and the part goes again
                # the careful way, which says what it stored.
                try:
                    raw.execute(_INSERT_NEW.format(values=values), flat)
                    continue
                except sqlite3.IntegrityError:
                    added = {(r[0], r[1]) for r in rows[:start]}
            found = raw.execute(_INSERT_POINTS.format(values=values), flat).fetchall()
            added.update((r[0], r[1]) for r in found)
        stored = len(rows) if added is None else len(added)
        if stored:
            new_rows = rows
            if added is not None and stored < len(rows):  # stored before, or sent twice
                seen: set[tuple[int, int]] = set()
                new_rows = []
                for row in rows:
                    key = (row[0], row[1])
                    if key in added and key not in seen:
                        seen.add(key)
                        new_rows.append(row)
            raw.executemany(_ADD_TO_SUMMARY.text, _summaries(new_rows))
            raw.executemany(UPSERT_BLOCKS_SQLITE, fold_rows(new_rows))
    if progress_epoch is not None:
        raw.execute(
            "UPDATE operations SET epochs_done = ?, heartbeat_at = ? "
            "WHERE id = ? AND epochs_done < ?",
            (progress_epoch, time.time(), operation_id, progress_epoch),
        )
    return AppendResult(len(batch), stored)


_SQLITE_ROWS = 5_000
_INSERT_NEW = "INSERT INTO points (series_id, step, epoch, value, wall_ms) VALUES {values}"
_INSERT_POINTS = (
    "INSERT INTO points (series_id, step, epoch, value, wall_ms) VALUES {values} "
    "ON CONFLICT DO NOTHING RETURNING series_id, step"
)
# A non-finite value as the table stores it (see storage.schema), by special code.
_STORED_SPECIAL: dict[int, float | None] = {1: None, 2: math.inf, 3: -math.inf}


def _sqlite_series_ids(
    raw: Any, operation_id: str, names: list[str], now_ms: int
) -> dict[str, tuple[int, int]]:
    marks = ",".join("?" * len(names))
    query = (
        f"SELECT name, id, wall_base_ms FROM series WHERE operation_id = ? AND name IN ({marks})"
    )
    found = raw.execute(query, (operation_id, *names)).fetchall()
    ids = {name: (sid, base) for name, sid, base in found}
    missing = [n for n in names if n not in ids]
    if missing:
        raw.executemany(
            "INSERT INTO series (operation_id, name, n_points, nonfinite, wall_base_ms) "
            "VALUES (?, ?, 0, 0, ?) ON CONFLICT DO NOTHING",
            [(operation_id, n, now_ms) for n in missing],
        )
        found = raw.execute(query, (operation_id, *names)).fetchall()
        ids = {name: (sid, base) for name, sid, base in found}
    return ids


# Keep each series' count, first step and latest point current without reading it first. In an
# UPDATE every right-hand side sees the old row, so the order of the assignments does not matter.
_NEWER = "(last_step IS NULL OR last_step < :hi)"
_ADD_TO_SUMMARY = text(
    f"""UPDATE series SET
    n_points = n_points + :added,
    nonfinite = nonfinite + :nonfinite,
    first_step = CASE WHEN first_step IS NULL OR first_step > :lo THEN :lo ELSE first_step END,
    last_value = CASE WHEN {_NEWER} THEN :value ELSE last_value END,
    last_special = CASE WHEN {_NEWER} THEN :special ELSE last_special END,
    last_wall_ms = CASE WHEN {_NEWER} THEN :wall_ms ELSE last_wall_ms END,
    last_step = CASE WHEN {_NEWER} THEN :hi ELSE last_step END
    WHERE id = :sid"""
)


StoredRow = tuple[int, int, int | None, float | None, int, int]  # a points row, column order


def _stored_row(sid: int, p: MetricPointIn, now_ms: int) -> StoredRow:
    special = special_of(p.value)
    wall_ms = now_ms if p.wall_time is None else int(p.wall_time * 1000)
    return (sid, p.step, p.epoch, None if special else p.value, special, wall_ms)


def _as_dicts(rows: list[StoredRow], bases: Mapping[int, int]) -> list[dict[str, Any]]:
    """Rows as the points table takes them: non-finite values as stored, ms after the base."""
    return [
        {
            "series_id": sid,
            "step": step,
            "epoch": epoch,
            "value": _STORED_SPECIAL[special] if special else value,
            "wall_ms": wall_ms - bases[sid],
        }
        for sid, step, epoch, value, special, wall_ms in rows
    ]


def _summaries(rows: list[StoredRow]) -> list[dict[str, Any]]:
    """Per series in a batch: points added, non-finite among them, lowest step, newest point."""
    # One pass: [added, nonfinite, lo, newest row] per series (the first row of a step wins).
    acc: dict[int, list[Any]] = {}
    for row in rows:
        sid, step = row[0], row[1]
        a = acc.get(sid)
        if a is None:
            acc[sid] = [1, 1 if row[4] else 0, step, row]
            continue
        a[0] += 1
        if row[4]:
            a[1] += 1
        if step < a[2]:
            a[2] = step
        if step > a[3][1]:
            a[3] = row
    return [
        {
            "sid": sid,
            "added": added,
            "nonfinite": nonfinite,
            "lo": lo,
            "hi": newest[1],
            "value": newest[3],
            "special": newest[4],
            "wall_ms": newest[5],
        }
        for sid, (added, nonfinite, lo, newest) in acc.items()
    ]


async def operation_with_series(db: Database, operation_id: str) -> tuple[Operation, list[Any]]:
    """The operation and the rows of its series, by name, in one read (one hop): what
    `GET /operations/{id}` answers with (`SeriesLatest.from_row`, the latest point of each) and
    every metrics read starts with, handing the rows on (`looked_up=` of `read_metrics`,
    `read_page`)."""

    def query(conn: Connection) -> tuple[Operation, list[Any]]:
        row = operation_row(conn, operation_id)
        if row is None:
            raise OperationNotFoundError(operation_id)
        return Operation.from_row(row), series_of(conn, row.id)

    return await db.run_read(query, small=True)


async def latest_values(db: Database, operation_id: str) -> list[SeriesLatest]:
    """The latest value of every metric of an operation, from the series summaries."""

    def query(conn: Connection) -> list[SeriesLatest]:
        return [SeriesLatest.from_row(r) for r in series_of(conn, operation_id)]

    return await db.run_read(query, small=True)


async def read_metrics(
    db: Database,
    operation_id: str,
    *,
    names: Sequence[str] | None = None,
    after_step: int | Mapping[str, int] | None = None,
    last: int | None = None,
    max_points: int | None = None,
    looked_up: Sequence[Any] | None = None,
) -> MetricsRead:
    """Read metrics. Per series: the points after `after_step` (one number for all series, or
    per name), then the `last` N of those, then at most `max_points`, downsampled in
    deterministic step buckets (whole 32-step blocks for a long, dense series: storage.blocks)
    that keep each bucket's min, max and last point, the first point, and any non-finite point.
    Every series reports total, matching and returned counts. A read that visits a few
    thousand points or summaries at most runs without a hop to a worker thread
    (`Database.run_read`), as the series' lookup before it; `looked_up`, the rows of all the
    operation's series just read (`operation_with_series`), saves that lookup."""
    if max_points is not None and max_points < MIN_SAMPLE_POINTS:
        raise ValueError(f"max_points: must be at least {MIN_SAMPLE_POINTS}")
    is_sqlite = db.is_sqlite
    rows = await series_to_read(db, operation_id, names, looked_up)
    found = {r.name: r for r in rows}

    def query(conn: Connection) -> MetricsRead:
        order = list(found)
        small = [
            n
            for n in order
            if last is None and (max_points is None or found[n].n_points <= max_points)
        ]
        fetched = _read_whole(conn, [found[n] for n in small], after_step)
        result: list[SeriesData] = []
        for name in order:
            row = found[name]
            if name in fetched:
                rows = fetched[name]
                result.append(
                    SeriesData.build(name, row.n_points, len(rows), rows, downsampled=False)
                )
                continue
            after = after_step.get(name) if isinstance(after_step, Mapping) else after_step
            result.append(_read_series(is_sqlite, conn, row, after, last, max_points))
        missing = [n for n in (names or []) if n not in found]
        return MetricsRead(operation_id=operation_id, series=result, missing=missing)

    visits = sum(_visits(r, last, max_points) for r in rows)
    return await db.run_read(query, small=visits <= SMALL_READ_POINTS)


def _visits(row: Any, last: int | None, max_points: int | None) -> int:
    """At most how many points (or block summaries) reading the series visits."""
    n = int(row.n_points)
    if last is not None:
        return min(n, last)
    if max_points is None or n <= max_points:
        return n
    nb = _bucket_count(max_points, row.nonfinite > 0)
    return n // BLOCK_STEPS + 2 if covers(n, row.first_step, row.last_step, nb) else n


def _read_whole(
    conn: Connection, rows: list[Any], after_step: int | Mapping[str, int] | None
) -> dict[str, list[Row]]:
    """Every point after the cursor of several series, in one query (the common, small case)."""
    if not rows:
        return {}
    by_id = {r.id: r.name for r in rows}
    query = select(points.c.series_id, points.c.step, points.c.value, POINT_SPECIAL).where(
        points.c.series_id.in_(list(by_id))
    )
    if isinstance(after_step, int):
        query = query.where(points.c.step > after_step)
    out: dict[str, list[Row]] = {name: [] for name in by_id.values()}
    cursors = after_step if isinstance(after_step, Mapping) else {}
    fetched = (conn.execute(query.order_by(points.c.series_id, points.c.step))).all()
    for sid, step, value, special in fetched:
        name = by_id[sid]
        if step > cursors.get(name, -1):
            out[name].append((step, value, special))
    return out


def _read_series(
    is_sqlite: bool,
    conn: Connection,
    row: Any,
    after: int | None,
    last: int | None,
    max_points: int | None,
) -> SeriesData:
    sid, total = row.id, row.n_points
    cols = select(points.c.step, points.c.value, POINT_SPECIAL).where(points.c.series_id == sid)
    if after is not None:
        cols = cols.where(points.c.step > after)
    if after is None or total == 0:
        matching = total
    else:
        matching = (
            conn.execute(
                select(func.count())
                .select_from(points)
                .where(points.c.series_id == sid, points.c.step > after)
            )
        ).scalar_one()
    if last is not None and last < matching:
        rows = (conn.execute(cols.order_by(points.c.step.desc()).limit(last))).all()
        selected: list[Row] = [(r[0], r[1], r[2]) for r in reversed(rows)]
        matching_in = last
    else:
        selected = []
        matching_in = matching
    if max_points is None or matching_in <= max_points:
        if not selected:
            rows = (conn.execute(cols.order_by(points.c.step))).all()
            selected = [(r[0], r[1], r[2]) for r in rows]
        return SeriesData.build(row.name, total, matching, selected, downsampled=False)
    if selected:  # last N, then downsampled in memory (N is already bounded by the caller)
        kept = downsample_rows(selected, max_points, nonfinite=row.nonfinite > 0)
    else:
        kept = _downsample_in_db(is_sqlite, conn, sid, after, row, matching, max_points)
    return SeriesData.build(row.name, total, matching, kept, downsampled=True)


def _bucket_count(max_points: int, nonfinite: bool) -> int:
    per_bucket = 4 if nonfinite else 3  # min, max, last (+ first non-finite)
    return max(1, (max_points - 1) // per_bucket)


def downsample_rows(rows: Sequence[Row], max_points: int, *, nonfinite: bool) -> list[Row]:
    """In-memory twin of `_downsample_in_db` with the same buckets (rows sorted by step)."""
    nb = _bucket_count(max_points, nonfinite)
    lo, hi = rows[0][0], rows[-1][0]
    if covers(len(rows), lo, hi, nb):  # buckets of whole blocks, from the rows' summaries
        return _picked(summarize_blocks(rows), rows[0], hi, nb, nonfinite)
    span = hi - lo + 1
    keep: dict[int, Row] = {rows[0][0]: rows[0]}
    buckets: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        buckets[((r[0] - lo) * nb) // span].append(r)
    for members in buckets.values():
        finite = [r for r in members if r[2] == 0]
        if finite:
            lowest = min(finite, key=lambda r: (r[1], r[0]))
            highest = max(finite, key=lambda r: (r[1], -r[0]))
            keep[lowest[0]] = lowest
            keep[highest[0]] = highest
        specials = [r for r in members if r[2] != 0]
        if specials:
            keep[specials[0][0]] = specials[0]
        keep[members[-1][0]] = members[-1]
    return [keep[s] for s in sorted(keep)]


_BUCKETS_SQL = """
WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i + 1 < :nb),
r AS (SELECT :lo + (i * :span + :nb - 1) / :nb AS a,
             :lo + ((i + 1) * :span + :nb - 1) / :nb - 1 AS z
      FROM b),
picked(s) AS (SELECT {pick_min} FROM r UNION ALL SELECT {pick_max} FROM r
  UNION ALL SELECT (SELECT max(step) FROM points WHERE series_id = :sid AND step BETWEEN a AND z)
  FROM r{pick_special})
SELECT step, value, {special} FROM points
WHERE series_id = :sid AND (step = :first OR step IN (SELECT s FROM picked))
ORDER BY step
"""
# SQLite returns the row of a lone min()/max() for bare columns: one pass, no sort.
_SQLITE_MIN = (
    "(SELECT step FROM (SELECT min(value), step FROM points "
    "WHERE series_id = :sid AND step BETWEEN a AND z{finite}))"
)
_PORTABLE_MIN = (
    "(SELECT step FROM points WHERE series_id = :sid AND step BETWEEN a AND z "
    f"AND {FINITE_SQL} ORDER BY value ASC, step ASC LIMIT 1)"
)
_SPECIAL = (
    " UNION ALL SELECT (SELECT min(step) FROM points WHERE series_id = :sid "
    f"AND step BETWEEN a AND z AND NOT coalesce({FINITE_SQL}, false)) FROM r"
)


def _downsample_in_db(
    is_sqlite: bool,
    conn: Connection,
    sid: int,
    after: int | None,
    row: Any,
    matching: int,
    max_points: int,
) -> list[Row]:
    nonfinite = row.nonfinite > 0
    nb = _bucket_count(max_points, nonfinite)
    lo = row.first_step if after is None else after + 1
    hi = row.last_step
    first = _first_point(is_sqlite, conn, sid, lo)
    lo = first_step = first[0]
    if covers(matching, lo, hi, nb):  # long and dense: the blocks' summaries, not the points
        summaries = read_blocks(conn, is_sqlite, sid, lo, hi, after)
        # Summaries that miss a point (one written by a version without blocks) or hold one
        # stored since the series row was read are not used: the same buckets from the points.
        if sum(s[10] for s in summaries) != matching:
            cols = select(points.c.step, points.c.value, POINT_SPECIAL)
            query = cols.where(points.c.series_id == sid, points.c.step.between(lo, hi))
            rows = [(r[0], r[1], r[2]) for r in conn.execute(query.order_by(points.c.step))]
            return downsample_rows(rows, max_points, nonfinite=nonfinite)
        return _picked(summaries, first, hi, nb, nonfinite)
    span = hi - lo + 1
    if is_sqlite:  # min() skips NULL (NaN) by itself; only a series with infinities needs more
        pick_min = _SQLITE_MIN.format(finite=f" AND {FINITE_SQL}" if nonfinite else "")
        pick_max = pick_min.replace("min(value)", "max(value)")
    else:
        pick_min = _PORTABLE_MIN
        pick_max = _PORTABLE_MIN.replace("value ASC", "value DESC")
    sql = _BUCKETS_SQL.format(
        pick_min=pick_min,
        pick_max=pick_max,
        pick_special=_SPECIAL if nonfinite else "",
        special=POINT_SPECIAL_SQL,
    )
    # The picked steps and their points in one statement: no second round trip, no list of
    # hundreds of steps to bind.
    params = {"nb": nb, "lo": lo, "span": span, "sid": sid, "first": first_step}
    return [(r[0], r[1], r[2]) for r in conn.execute(text(sql), params)]


def _picked(summaries: list[Summary], first: Row, hi: int, nb: int, nonfinite: bool) -> list[Row]:
    """The points the block buckets keep from `first` (the first point) to step `hi`, with the
    first point, by step: what both downsampling twins answer for a long, dense series."""
    k0 = first[0] // BLOCK_STEPS
    kept = pick(summaries, k0, hi // BLOCK_STEPS - k0 + 1, nb, nonfinite)
    kept[first[0]] = first
    return [kept[s] for s in sorted(kept)]


def _first_point(is_sqlite: bool, conn: Connection, sid: int, lo: int) -> Row:
    """The first stored point from step `lo` on (the caller knows there is one)."""
    if is_sqlite:
        raw = conn.connection.driver_connection
        assert raw is not None
        found: Row = raw.execute(_SQLITE_FIRST, (sid, lo)).fetchone()
        return found
    query = (
        select(points.c.step, points.c.value, POINT_SPECIAL)
        .where(points.c.series_id == sid, points.c.step >= lo)
        .order_by(points.c.step)
        .limit(1)
    )
    step, value, special = conn.execute(query).one()
    return (step, value, special)


_SQLITE_FIRST = (
    f"SELECT step, value, {POINT_SPECIAL_SQL} FROM points WHERE series_id = ? AND step >= ? "
    "ORDER BY step LIMIT 1"
)
