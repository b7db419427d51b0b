"""The bridge's durable spool: one SQLite file holding every session and every metric point the
server has not yet confirmed.

A point leaves the spool only once the server has answered for it (`SpoolQueue.ack`), so a server
outage or restart, or this process being killed, loses nothing: what is left is sent when the
server (or the bridge) is back. The file runs in WAL mode with `synchronous=NORMAL`: a commit is an
append to the log without an fsync, cheap enough for the training thread, and survives the
process dying (not the machine losing power mid-write).

The file also keeps each session's request (with the server's token, so an interrupted delivery
can resume after a bridge restart); it is created readable by its owner only.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from host_bridge.protocol import SessionInfo, SessionRequest, SessionStatus
from training_mcp import MetricPoint

__all__ = ["SPOOL_FILENAME", "Spool", "SpoolQueue"]

SPOOL_FILENAME = "spool.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    operation_id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    device TEXT,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    epochs_total INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    reason TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS points (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL,
    epoch INTEGER,
    wall_time REAL
);
CREATE INDEX IF NOT EXISTS points_by_session ON points (operation_id, seq);
"""

_UPDATABLE = frozenset(
    {
        "status",
        "device",
        "epochs_done",
        "started_at",
        "finished_at",
        "error",
        "reason",
        "cancel_requested",
        "delivered",
    }
)


class Spool:
    """The spool file. Thread-safe: every access holds one lock (SQLite writes are serial)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o600)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path) -> Spool:
        return cls(data_dir / SPOOL_FILENAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- sessions -----------------------------------------------------------------------------

    def create(self, request: SessionRequest, device: str | None = None) -> SessionInfo:
        """Record a new running session. Raises `sqlite3.IntegrityError` if the id exists."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO sessions (operation_id, request, status, device, epochs_total, "
                "created_at) VALUES (?, ?, 'running', ?, ?, ?)",
                (
                    request.operation_id,
                    request.model_dump_json(),
                    device,
                    request.epochs_total,
                    time.time(),
                ),
            )
        info = self.get(request.operation_id)
        assert info is not None
        return info

    def restart(self, request: SessionRequest, device: str | None = None) -> SessionInfo:
        """An ended session runs again (a resume) under `request`: running, nothing delivered
        yet; its epochs done stay until the resumed training moves them on."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE sessions SET request = ?, status = 'running', device = ?, "
                "epochs_total = ?, started_at = NULL, finished_at = NULL, error = NULL, "
                "reason = NULL, cancel_requested = 0, delivered = 0 WHERE operation_id = ?",
                (request.model_dump_json(), device, request.epochs_total, request.operation_id),
            )
        info = self.get(request.operation_id)
        assert info is not None
        return info

    def get(self, operation_id: str) -> SessionInfo | None:
        with self._lock:
            row = self._db.execute(
                _SELECT + " WHERE s.operation_id = ?", (operation_id,)
            ).fetchone()
        return None if row is None else _info(row)

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            rows = self._db.execute(_SELECT + " ORDER BY s.created_at").fetchall()
        return [_info(r) for r in rows]

    def request(self, operation_id: str) -> SessionRequest:
        with self._lock:
            row = self._db.execute(
                "SELECT request FROM sessions WHERE operation_id = ?", (operation_id,)
            ).fetchone()
        if row is None:
            raise KeyError(operation_id)
        return SessionRequest.model_validate_json(row[0])

    def update(self, operation_id: str, **values: Any) -> None:
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"not a session field: {sorted(unknown)}")
        if not values:
            return
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                f"UPDATE sessions SET {columns} WHERE operation_id = ?",  # names checked above
                (*values.values(), operation_id),
            )

    def finish(
        self,
        operation_id: str,
        status: SessionStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
        device: str | None = None,
    ) -> None:
        """The run ended: its final status waits here until the server has it."""
        values: dict[str, Any] = {
            "status": status,
            "finished_at": time.time(),
            "error": error,
            "reason": reason,
        }
        if device is not None:
            values["device"] = device
        self.update(operation_id, **values)

    def undelivered(self) -> list[SessionInfo]:
        """Sessions whose final status (or a running status) has not reached the server."""
        return [s for s in self.sessions() if not s.delivered]

    def queue(self, operation_id: str) -> SpoolQueue:
        return SpoolQueue(self, operation_id)

    # -- points, for SpoolQueue ---------------------------------------------------------------

    def _count(self, operation_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM points WHERE operation_id = ?", (operation_id,)
            ).fetchone()
        return int(row[0])

    def _put(self, operation_id: str, points: Sequence[MetricPoint]) -> None:
        rows = [
            (
                operation_id,
                p.name,
                p.step,
                None if math.isnan(p.value) else p.value,  # SQLite stores NaN as NULL anyway
                p.epoch,
                p.wall_time,
            )
            for p in points
        ]
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO points (operation_id, name, step, value, epoch, wall_time) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _peek(self, operation_id: str, limit: int) -> list[MetricPoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, step, value, epoch, wall_time FROM points "
                "WHERE operation_id = ? ORDER BY seq LIMIT ?",
                (operation_id, limit),
            ).fetchall()
        return [
            MetricPoint(name, step, math.nan if value is None else value, epoch, wall_time)
            for name, step, value, epoch, wall_time in rows
        ]

    def _ack(self, operation_id: str, count: int) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM points WHERE seq IN (SELECT seq FROM points WHERE operation_id = ? "
                "ORDER BY seq LIMIT ?)",
                (operation_id, count),
            )


class SpoolQueue:
    """One session's points in the spool: the `training_mcp.PointQueue` the session's
    `MetricsReporter` sends from. Its length is kept in memory (the reporter asks often)."""

    def __init__(self, spool: Spool, operation_id: str) -> None:
        self._spool = spool
        self._operation_id = operation_id
        self._len = spool._count(operation_id)

    def put(self, points: Sequence[MetricPoint]) -> None:
        self._spool._put(self._operation_id, points)
        self._len += len(points)

    def peek(self, limit: int) -> list[MetricPoint]:
        return self._spool._peek(self._operation_id, limit)

    def ack(self, count: int) -> None:
        count = min(count, self._len)
        if count:
            self._spool._ack(self._operation_id, count)
            self._len -= count

    def __len__(self) -> int:
        return self._len


_SELECT = (
    "SELECT s.operation_id, s.status, s.device, s.epochs_done, s.epochs_total, s.created_at, "
    "s.finished_at, s.error, s.reason, s.cancel_requested, s.delivered, s.started_at, "
    "(SELECT count(*) FROM points p WHERE p.operation_id = s.operation_id) FROM sessions s"
)


def _info(row: tuple[Any, ...]) -> SessionInfo:
    return SessionInfo(
        operation_id=row[0],
        status=row[1],
        device=row[2],
        epochs_done=row[3],
        epochs_total=row[4],
        created_at=row[5],
        finished_at=row[6],
        error=row[7],
        reason=row[8],
        cancel_requested=bool(row[9]),
        delivered=bool(row[10]),
        started_at=row[11],
        points_pending=row[12],
    )
