"""A database made by an earlier version (points with a `special` column and absolute wall-clock
ms, series without a base) opens, is moved to the current layout, and reads exactly as before."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from storage import (
    Backend,
    append_points,
    connect,
    iter_history,
    latest_values,
    migrations,
    read_metrics,
    read_page,
)
from storage.schema import operations

pytestmark = pytest.mark.anyio

_OLD = MetaData()
_OLD_OPERATIONS = operations.to_metadata(_OLD)
_OLD_SERIES = Table(
    "series",
    _OLD,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String(16), ForeignKey("operations.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("n_points", Integer, nullable=False),
    Column("nonfinite", Integer, nullable=False),
    Column("first_step", BigInteger),
    Column("last_step", BigInteger),
    Column("last_value", Float),
    Column("last_special", SmallInteger),
    Column("last_wall_ms", BigInteger),
    UniqueConstraint("operation_id", "name"),
)
_OLD_POINTS = Table(
    "points",
    _OLD,
    Column("series_id", Integer, ForeignKey("series.id"), primary_key=True),
    Column("step", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch", Integer),
    Column("value", Float),
    Column("special", SmallInteger, nullable=False),
    Column("wall_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

WALL_MS = 1_700_000_000_000
# (step, value, special) as the old layout stored them: NaN and the infinities had value NULL.
OLD_POINTS = [(1, 0.5, 0), (2, None, 1), (3, None, 2), (4, None, 3), (5, 0.25, 0)]


async def _old_database(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_OLD.create_all)
        await conn.execute(
            _OLD_OPERATIONS.insert(),
            {
                "id": "op1",
                "name": "old",
                "status": "running",
                "backend": Backend.EXTERNAL.value,
                "spec": {},
                "tags": {},
                "created_at": time.time(),
                "epochs_done": 5,
            },
        )
        await conn.execute(
            _OLD_SERIES.insert(),
            {
                "id": 1,
                "operation_id": "op1",
                "name": "loss",
                "n_points": 5,
                "nonfinite": 3,
                "first_step": 1,
                "last_step": 5,
                "last_value": 0.25,
                "last_special": 0,
                "last_wall_ms": WALL_MS + 5,
            },
        )
        await conn.execute(
            _OLD_POINTS.insert(),
            [
                {"series_id": 1, "step": s, "epoch": s, "value": v, "special": c}
                | {"wall_ms": WALL_MS + s}
                for s, v, c in OLD_POINTS
            ],
        )
    await engine.dispose()
    return "op1"


EXPECTED = [0.5, math.nan, math.inf, -math.inf, 0.25]


def _same(got: list[float], want: list[float]) -> bool:
    return all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want, strict=True))


@pytest.fixture(params=["drop column", "rebuild"])
def migration_path(
    request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Both ways the old `special` column goes: DROP COLUMN, and (SQLite before 3.35) the
    table rebuilt."""
    if request.param == "rebuild":
        if not db_url.startswith("sqlite"):
            pytest.skip("only SQLite rebuilds the table")
        monkeypatch.setattr(migrations, "sqlite_drops_columns", lambda: False)
    return str(request.param)


async def test_an_old_database_is_migrated_and_reads_as_before(
    db_url: str, migration_path: str
) -> None:
    op = await _old_database(db_url)
    async with connect(db_url) as db:
        read = (await read_metrics(db, op)).series[0]
        assert read.steps == [1, 2, 3, 4, 5] and _same(read.floats(), EXPECTED)
        assert read.non_finite == {"2": "nan", "3": "inf", "4": "-inf"}
        page = (await read_page(db, op)).series[0]
        assert _same(page.floats(), EXPECTED)
        rows = [row async for chunk in iter_history(db, op) for row in chunk]
        assert [(r[1], r[4], r[5]) for r in rows] == [(s, c, WALL_MS + s) for s, _, c in OLD_POINTS]
        sampled = (await read_metrics(db, op, max_points=4)).series[0]
        assert set(sampled.steps) <= {1, 2, 3, 4, 5} and sampled.non_finite
        # New points of the old series count from its base 0; new series from their own base.
        later = {"name": "loss", "step": 6, "value": math.inf, "wall_time": (WALL_MS + 6) / 1000}
        await append_points(db, op, [later, {"name": "acc", "step": 6, "value": 1.0}])
        repeat = await append_points(db, op, [later])  # the (series, step) key holds, rebuilt too
        assert (repeat.received, repeat.stored) == (1, 0)
        rows = [row async for chunk in iter_history(db, op, names=["loss"]) for row in chunk]
        assert rows[-1][1:] == (6, None, math.inf, 2, WALL_MS + 6)
        latest = {s.name: s for s in await latest_values(db, op)}
        assert latest["loss"].non_finite == "inf" and latest["acc"].value == 1.0

        def columns(conn: object) -> set[str]:
            return {c["name"] for c in inspect(conn).get_columns("points")}

        assert await db.run_read(columns) == {"series_id", "step", "epoch", "value", "wall_ms"}
    async with connect(db_url) as db:  # opening again changes nothing
        again = (await read_metrics(db, op, names=["loss"])).series[0]
    assert again.steps == [1, 2, 3, 4, 5, 6] and _same(again.floats(), [*EXPECTED, math.inf])
