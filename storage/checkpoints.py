"""WAL checkpoints off the write path, for a SQLite file.

SQLite's own auto-checkpoint runs inside the commit that pushes the WAL past 1,000 pages: that
commit copies the pages back and syncs the database file, and its writer waits (~3-5 ms here,
once every ~100 six-metric epochs: the write's p99). So every connection of ours turns the
auto-checkpoint off (`PRAGMA wal_autocheckpoint=0`) and this thread checkpoints instead, with
its own connection, a short while after writes happen: PASSIVE, so it never waits for nor
blocks a reader or a writer. A checkpoint that copied every frame
lets the next writer start the log again from its beginning; one that ran while writes went on
leaves their frames, so under a steady stream of writes the log would only grow. Once it holds
`_MAX_FRAMES`, the next writer checkpoints after its commit while this process's other writers
wait (a few frames are left to copy by then, nothing can outrun it): the WAL stays bounded at
the cost of one slower write per ~32 MB of log, where SQLite's own cost one per 4 MB.
`journal_size_limit` trims the file after a reset; closing checkpoints what is left.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

__all__ = ["AUTOCHECKPOINT_OFF", "WalCheckpointer"]

log = logging.getLogger(__name__)

AUTOCHECKPOINT_OFF = "PRAGMA wal_autocheckpoint=0"
# How long after a write the checkpoint waits for company: a run writing an epoch every few
# milliseconds gets one checkpoint per this many seconds, not one per commit; or sooner, once
# this many commits are waiting (~5 pages each for an epoch: the WAL stays within a few MB).
_DELAY_S = 0.5
_COMMITS = 250
# A WAL file larger than this is cut back to it once a checkpoint has emptied it.
_WAL_LIMIT_BYTES = 16 * 1024 * 1024
# A log this long (in pages; ~32 MB at 4 KiB) is caught up by the next writer.
_MAX_FRAMES = 8_192


class WalCheckpointer:
    """A daemon thread that checkpoints the WAL of the database file at `path` after writes.

    Writers call `wrote()` after each commit (a counter under a lock). `close()` stops the thread
    and runs a last checkpoint that truncates the WAL."""

    def __init__(self, path: str, *, delay_s: float = _DELAY_S, commits: int = _COMMITS) -> None:
        self._path = path
        self._delay_s = delay_s
        self._commits = commits
        self._waiting = 0  # commits since the last checkpoint began
        self._wake = threading.Condition()
        self._stop = False
        self.checkpoints = 0  # how many ran
        self.catch_ups = 0  # of which a writer ran (`after_commit`)
        self.ran = threading.Event()  # set after each checkpoint (what a test waits on)
        self.catch_up_due = False  # the log reached max_frames: the next writer checkpoints
        self.max_frames = _MAX_FRAMES
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        with self._wake:
            self._waiting += 1
            if self._waiting == 1 or self._waiting >= self._commits:
                self._wake.notify()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=10)
        conn.execute(AUTOCHECKPOINT_OFF)
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        return conn

    def _loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                with self._wake:
                    self._wake.wait_for(lambda: self._stop or self._waiting > 0)
                    self._wake.wait_for(
                        lambda: self._stop or self._waiting >= self._commits, self._delay_s
                    )
                    if self._stop:  # closing: the last checkpoint is close()'s
                        return
                    self._waiting = 0
                self._background(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: Any, mode: str) -> tuple[int, int, int] | None:
        """(busy, frames in the log, frames copied), or None when it failed."""
        try:
            found = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
        except sqlite3.Error as exc:  # a busy or closing database: the next one catches up
            log.warning("WAL checkpoint (%s) of %s failed: %s", mode, self._path, exc)
            return None
        self.checkpoints += 1
        return found  # type: ignore[no-any-return]  # the pragma's one row

    def _background(self, conn: sqlite3.Connection) -> None:
        found = self._checkpoint(conn, "PASSIVE")
        # found[1] is the log as the checkpoint began: it only grows while writes outrun every
        # checkpoint (a new log starts from zero), so a long one is due to be caught up.
        self.catch_up_due = found is not None and found[1] >= self.max_frames
        self.ran.set()

    def after_commit(self, conn: Any) -> None:
        """Called by a writer after its commit with its sqlite3 connection, while this
        process's other writers wait for it: when the log is due, a checkpoint that no write can
        outrun (it copies what the background one left; the next writer then starts the log
        again). Readers still on older frames are not waited for."""
        if self.catch_up_due:
            self.catch_up_due = False
            self.catch_ups += 1
            self._checkpoint(conn, "PASSIVE")

    def close(self) -> None:
        """Stop the thread and checkpoint whatever the WAL still holds (TRUNCATE: it is then
        empty on disk). Call after the last write, once the engines are closed."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()
        conn = self._connect()
        try:
            self._checkpoint(conn, "TRUNCATE")
        finally:
            conn.close()
