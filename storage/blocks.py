"""Block summaries: each series' min, max, last and first non-finite point of every
`BLOCK_STEPS` steps, kept at write time, so a downsampled read of a long series reads about one
summary per 32 points instead of the points (20,000 points sampled to 500: ~625 summaries).

A block is `step // BLOCK_STEPS`. Its summary is exact for the points stored in it: the writers
fold every new point in (`fold_rows`, `store_blocks`: in the points' own transaction, in
any order), points are never changed once stored (the first stored for a step wins), and the
blocks go with their series. A database from before blocks gets them built once when it opens
(`fill_blocks`, from `storage.migrations`). Each summary counts its points, and a read trusts the
summaries only when their counts add up to the points it expects: any point stored without its
summary (by an older version, say) sends the read to the points, bucketed the same way.

A long, dense series is downsampled in buckets of whole blocks (`covers` says when): bucket `i`
holds the blocks `k` with `(k - k0) * nb // nslots == i`, the step formula of the point buckets
with blocks for steps. `summarize` computes the same summaries from rows in memory, so
`storage.metrics.downsample_rows` and the database pick the same points by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select, text

from storage.schema import POINT_SPECIAL, POINT_SPECIAL_SQL, point_blocks, points

__all__ = [
    "BLOCK_STEPS",
    "UPSERT_BLOCKS",
    "UPSERT_BLOCKS_SQLITE",
    "Summary",
    "covers",
    "fill_blocks",
    "fold_rows",
    "pick",
    "read_blocks",
    "store_blocks",
    "summarize",
]

BLOCK_STEPS = 32
# Buckets of whole blocks need at least this many blocks each (so bucket widths differ by at
# most half), and the blocks this many points on average (a sparse series, e.g. `system/...`
# with ms steps, has about one point a block: its points are read as they are).
_MIN_BLOCKS_PER_BUCKET = 2
_MIN_POINTS_PER_BLOCK = 8

Point = tuple[int, float | None, int]  # (step, stored value, special code)
# (block, min_step, min_value, max_step, max_value, last_step, last_value, last_special,
#  special_step, special_code, n_points): min/max over the finite points (None when there are
# none), the lowest step winning a tie; the highest step; the lowest step with a non-finite
# value; how many points the block holds (what a read checks the summaries against).
Summary = tuple[
    int, int | None, float | None, int | None, float | None, int, float | None, int,
    int | None, int | None, int,
]  # fmt: skip


def covers(n: int, lo: int, hi: int, nb: int) -> bool:
    """Whether `n` points from step `lo` to `hi` are downsampled in `nb` buckets of blocks."""
    nslots = hi // BLOCK_STEPS - lo // BLOCK_STEPS + 1
    return nslots >= _MIN_BLOCKS_PER_BUCKET * nb and n >= _MIN_POINTS_PER_BLOCK * nslots


def summarize(rows: Iterable[Point]) -> list[Summary]:
    """The summaries of rows (one series, distinct steps, in any order), by block."""
    acc: dict[int, list[Any]] = {}
    for step, value, special in rows:
        block = step // BLOCK_STEPS
        a = acc.get(block)
        if a is None:
            if special:
                acc[block] = [None, None, None, None, step, None, special, step, special, 1]
            else:
                acc[block] = [step, value, step, value, step, value, 0, None, None, 1]
            continue
        a[9] += 1
        if special:
            if a[7] is None or step < a[7]:
                a[7], a[8] = step, special
        elif a[0] is None:
            a[0:4] = step, value, step, value
        else:
            if value < a[1] or (value == a[1] and step < a[0]):
                a[0], a[1] = step, value
            if value > a[3] or (value == a[3] and step < a[2]):
                a[2], a[3] = step, value
        if step > a[4]:
            a[4], a[5], a[6] = step, None if special else value, special
    return [(block, *acc[block]) for block in sorted(acc)]


def pick(
    summaries: Sequence[Summary], k0: int, nslots: int, nb: int, with_special: bool
) -> dict[int, Point]:
    """Each bucket's min, max and last point (and first non-finite one, `with_special`), by step,
    from the summaries of its blocks (sorted by block, all within `k0 .. k0 + nslots - 1`)."""
    keep: dict[int, Point] = {}
    bucket = -1
    best: list[Any] = []
    for s in summaries:
        i = ((s[0] - k0) * nb) // nslots
        if i != bucket:
            if best:
                _keep(keep, best, with_special)
            bucket, best = i, list(s)
            continue
        if s[1] is not None:
            if best[1] is None:
                best[1:5] = s[1:5]
            else:  # blocks come in step order: on a tie the earlier block's point stays
                if s[2] < best[2]:
                    best[1], best[2] = s[1], s[2]
                if s[4] > best[4]:
                    best[3], best[4] = s[3], s[4]
        best[5:8] = s[5:8]
        if best[8] is None:
            best[8:10] = s[8:10]
    if best:
        _keep(keep, best, with_special)
    return keep


def _keep(keep: dict[int, Point], s: list[Any], with_special: bool) -> None:
    if s[1] is not None:
        keep[s[1]] = (s[1], s[2], 0)
        keep[s[3]] = (s[3], s[4], 0)
    if with_special and s[8] is not None:
        keep[s[8]] = (s[8], None, s[9])
    keep[s[5]] = (s[5], s[6], s[7])


def read_blocks(
    conn: Connection, is_sqlite: bool, sid: int, lo: int, hi: int, after: int | None
) -> list[Summary]:
    """The stored summaries of the blocks from step `lo` to `hi`. Where a cursor `after` falls
    inside the first block, that block is summarised from its points past the cursor."""
    k0, k1 = lo // BLOCK_STEPS, hi // BLOCK_STEPS
    partial = after is not None and after // BLOCK_STEPS == k0
    start = k0 + 1 if partial else k0
    found: list[Summary]
    if is_sqlite:  # sqlite3 itself: SQLAlchemy's rows cost more than the read
        raw = conn.connection.driver_connection
        assert raw is not None
        found = raw.execute(_SQLITE_BLOCKS, (sid, start, k1)).fetchall()
        head = raw.execute(_SQLITE_POINTS, (sid, lo, (k0 + 1) * BLOCK_STEPS - 1)) if partial else []
    else:
        found = [tuple(r) for r in conn.execute(_BLOCKS.where(_of(sid, start, k1)))]
        head = conn.execute(_points(sid, lo, (k0 + 1) * BLOCK_STEPS - 1)) if partial else []
    if partial:
        found[:0] = summarize((r[0], r[1], r[2]) for r in head)
    return found


_COLUMNS = (
    "block, min_step, min_value, max_step, max_value, last_step, last_value, last_special, "
    "special_step, special_code, n_points"
)
_SQLITE_BLOCKS = (
    f"SELECT {_COLUMNS} FROM point_blocks WHERE series_id = ? AND block BETWEEN ? AND ? "
    "ORDER BY block"
)
_SQLITE_POINTS = (
    f"SELECT step, value, {POINT_SPECIAL_SQL} FROM points "
    "WHERE series_id = ? AND step BETWEEN ? AND ?"
)
_BLOCKS = select(*(point_blocks.c[name] for name in _COLUMNS.split(", "))).order_by(
    point_blocks.c.block
)


def _of(sid: int, start: int, end: int) -> Any:
    return (point_blocks.c.series_id == sid) & point_blocks.c.block.between(start, end)


def _points(sid: int, lo: int, hi: int) -> Any:
    return select(points.c.step, points.c.value, POINT_SPECIAL).where(
        points.c.series_id == sid, points.c.step.between(lo, hi)
    )


def fold_rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`UPSERT_BLOCKS_SQLITE`'s parameters (series id, then the summary) for newly stored
    points: rows that start (series id, step, epoch, value, special code), as `storage.metrics`
    builds them; the value None or as stored when the code is not 0."""
    by_series: dict[int, list[Point]] = {}
    for r in rows:
        by_series.setdefault(r[0], []).append((r[1], r[3], r[4]))
    folded: list[tuple[Any, ...]] = []
    for sid, found in by_series.items():
        if len(found) == 1 and not found[0][2]:  # an epoch's point: its own summary
            step, value, _ = found[0]
            block = step // BLOCK_STEPS
            folded.append((sid, block, step, value, step, value, step, value, 0, None, None, 1))
        else:
            folded += [(sid, *s) for s in summarize(found)]
    return folded


def store_blocks(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Fold newly stored points (as `fold_rows` takes them) into their blocks, on any database."""
    folded = fold_rows(rows)
    if folded:
        conn.execute(UPSERT_BLOCKS, [dict(zip(_NAMES, f, strict=True)) for f in folded])


_NAMES = ("sid", *_COLUMNS.split(", "))
# Fold a batch's summary of a block into the stored one. Every right-hand side sees the old row.
_LOWER = (
    "excluded.min_step IS NOT NULL AND (point_blocks.min_step IS NULL "
    "OR excluded.min_value < point_blocks.min_value OR (excluded.min_value = "
    "point_blocks.min_value AND excluded.min_step < point_blocks.min_step))"
)
_HIGHER = (
    "excluded.max_step IS NOT NULL AND (point_blocks.max_step IS NULL "
    "OR excluded.max_value > point_blocks.max_value OR (excluded.max_value = "
    "point_blocks.max_value AND excluded.max_step < point_blocks.max_step))"
)
_LATER = "excluded.last_step > point_blocks.last_step"
_EARLIER = (
    "excluded.special_step IS NOT NULL AND (point_blocks.special_step IS NULL "
    "OR excluded.special_step < point_blocks.special_step)"
)


def _if(condition: str, *names: str) -> str:
    return ", ".join(
        f"{n} = CASE WHEN {condition} THEN excluded.{n} ELSE point_blocks.{n} END" for n in names
    )


_UPSERT = (
    f"INSERT INTO point_blocks (series_id, {_COLUMNS}) VALUES ({{values}}) "
    "ON CONFLICT (series_id, block) DO UPDATE SET "
    + ", ".join(
        (
            _if(_LOWER, "min_step", "min_value"),
            _if(_HIGHER, "max_step", "max_value"),
            _if(_LATER, "last_step", "last_value", "last_special"),
            _if(_EARLIER, "special_step", "special_code"),
            "n_points = point_blocks.n_points + excluded.n_points",
        )
    )
)
UPSERT_BLOCKS = text(_UPSERT.format(values=", ".join(f":{n}" for n in _NAMES)))
# The same for sqlite3 itself, positional: binding by name cost more than the statement.
UPSERT_BLOCKS_SQLITE = _UPSERT.format(values=", ".join("?" * len(_NAMES)))


def fill_blocks(conn: Connection, chunk: int = 50_000) -> bool:
    """Build the summaries of every stored point when there are points and no summaries at all
    (a database from before blocks); returns whether it did."""
    if conn.execute(select(point_blocks.c.series_id).limit(1)).first() is not None:
        return False
    sids = [r[0] for r in conn.execute(select(points.c.series_id).distinct())]
    for sid in sids:
        after = -1
        while True:  # keyset chunks: a block cut in two is folded together by the upsert
            found = conn.execute(
                select(points.c.series_id, points.c.step, points.c.epoch, points.c.value)
                .add_columns(POINT_SPECIAL)
                .where(points.c.series_id == sid, points.c.step > after)
                .order_by(points.c.step)
                .limit(chunk)
            ).all()
            if not found:
                break
            store_blocks(conn, found)
            after = found[-1][1]
    return bool(sids)
