"""The database: an async SQLAlchemy engine from a URL, the schema created idempotently at start."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.checkpoints import AUTOCHECKPOINT_OFF, WalCheckpointer
from storage.errors import StorageError
from storage.migrations import migrate
from storage.schema import metadata

T = TypeVar("T")

__all__ = ["DB_FILENAME", "SMALL_READ_POINTS", "Database", "default_database_url", "open_database"]

DB_FILENAME = "training-mcp.db"
# A read of at most this many points is `small` (see `Database.run_read`): ~1 ms of SQLite at most.
SMALL_READ_POINTS = 4096


def default_database_url(data_dir: Path) -> str:
    """A SQLite file in the data directory."""
    return f"sqlite+aiosqlite:///{(data_dir / DB_FILENAME).resolve()}"


class _Pending(Generic[T]):
    """A write waiting for its group's transaction."""

    __slots__ = ("body", "done", "error", "result")

    def __init__(self, body: Callable[[Connection], T]) -> None:
        self.body = body
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


def _run_group(conn: Connection, group: list[_Pending[Any]]) -> None:
    for item in group:
        try:
            item.result = item.body(conn)
        except StorageError as exc:  # refused before writing: the others go on
            item.error = exc
        item.done = True


@dataclass(eq=False)
class Database:
    """An open database. Writes go through `write()` or `run_write()`, which serialise writers in
    this process (SQLite takes one writer at a time; queuing here is cheaper than lock retries)."""

    engine: AsyncEngine
    url: str
    sync_engine: Engine | None = None  # SQLite files: hot writes run whole in one worker thread
    checkpointer: WalCheckpointer | None = None  # SQLite files: WAL checkpoints off the writes
    inline_engine: Engine | None = None  # SQLite files: small writes on the event loop's thread
    _write_lock: anyio.Lock = field(default_factory=anyio.Lock)
    _pending: list[_Pending[Any]] = field(default_factory=list)

    async def run_write(self, body: Callable[[Connection], T], *, small: bool = False) -> T:
        """Run `body` (plain synchronous SQLAlchemy) in a write transaction.

        A `small` body (a few hundred rows at most: an epoch's points) on a SQLite file, when no
        write is running or waiting, runs right here on the event loop's thread: ~0.1 ms of
        SQLite, where the hop to a worker thread and back cost as much again and, on a busy
        machine, two more chances to wait for a CPU (the write's p99). Its connection never
        waits for the file's lock: when another process holds it, the body goes the usual way.

        On a SQLite file the whole transaction runs in one hop to a worker thread: aiosqlite
        would hop to its thread several times per statement (~0.1 ms each), which dominated the
        cost of storing an epoch. Elsewhere (asyncpg) it runs through the async connection.

        Group commit: bodies that arrive while another transaction runs are committed together
        in the next one. A body may raise a `StorageError` only before it writes anything (it is
        then refused alone); any other error rolls the group back and each body is retried in a
        transaction of its own.
        """
        idle = not self._write_lock.locked() and not self._pending
        if small and idle and self.inline_engine is not None:
            try:  # nothing can run on this thread meanwhile: no lock to take
                return self._inline(body)
            except _Busy:
                pass  # another writer (Optuna's engine, another process): a worker thread waits
        item: _Pending[T] = _Pending(body)
        self._pending.append(item)
        async with self._write_lock:
            if not item.done:
                group, self._pending = self._pending, []
                await self._commit_group(group)
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]  # set whenever error is None

    async def _commit_group(self, group: list[_Pending[Any]]) -> None:
        try:
            await self._transaction(lambda conn: _run_group(conn, group))
        except Exception:  # the group failed as a whole: run each body on its own
            for item in group:
                item.done, item.error = False, None
                try:
                    item.result = await self._transaction(item.body)
                except Exception as exc:
                    item.error = exc
                item.done = True

    async def _transaction(self, body: Callable[[Connection], T]) -> T:
        if self.sync_engine is not None:
            return await anyio.to_thread.run_sync(self._in_thread, body)
        async with self.engine.begin() as conn:
            result = await conn.run_sync(body)
        self._wrote()
        return result

    async def run_read(self, body: Callable[[Connection], T], *, small: bool = False) -> T:
        """Run `body` (plain synchronous SQLAlchemy) on one connection, in one hop to a worker
        thread on a SQLite file (see `run_write`).

        A `small` body (`SMALL_READ_POINTS` rows at most) on a SQLite file runs right here on the
        event loop's thread, as a small write does: the hop to a worker thread and back cost
        ~0.15 ms, more than the read. WAL readers never wait for a writer; in the rare case the
        file answers busy, the body runs again the usual way."""
        if small and self.inline_engine is not None:
            try:
                with self.inline_engine.connect() as conn:
                    return body(conn)
            except (OperationalError, sqlite3.OperationalError) as exc:
                if not _busy(exc):
                    raise
        if self.sync_engine is not None:
            return await anyio.to_thread.run_sync(self._read_in_thread, body)
        async with self.engine.connect() as conn:
            return await conn.run_sync(body)

    def _read_in_thread(self, body: Callable[[Connection], T]) -> T:
        assert self.sync_engine is not None
        with self.sync_engine.connect() as conn:
            return body(conn)

    def _in_thread(self, body: Callable[[Connection], T]) -> T:
        assert self.sync_engine is not None
        return self._commit_on(self.sync_engine, body)

    def _inline(self, body: Callable[[Connection], T]) -> T:
        assert self.inline_engine is not None
        try:
            return self._commit_on(self.inline_engine, body)
        except (OperationalError, sqlite3.OperationalError) as exc:
            if _busy(exc):  # rolled back, the body runs again
                raise _Busy from exc
            raise

    def _commit_on(self, engine: Engine, body: Callable[[Connection], T]) -> T:
        with engine.connect() as conn:
            with conn.begin():
                result = body(conn)
            if self.checkpointer is not None:  # still this process's only writer
                self.checkpointer.after_commit(conn.connection.driver_connection)
        self._wrote()
        return result

    def _wrote(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.wrote()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock:
            async with self.engine.begin() as conn:
                yield conn
            self._wrote()

    async def close(self) -> None:
        await self.engine.dispose()
        for engine in (self.sync_engine, self.inline_engine):
            if engine is not None:
                engine.dispose()
        if self.checkpointer is not None:  # after the engines: no reader holds the WAL
            await anyio.to_thread.run_sync(self.checkpointer.close)


def _busy(exc: Exception) -> bool:
    """Whether SQLite refused for another connection's lock (SQLITE_BUSY: 'database is
    locked'), not for something wrong with the statement."""
    return "locked" in str(exc)


class _Busy(Exception):
    """The file's write lock is another process's: an inline write goes the usual way."""


def _no_waiting(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=0")  # after _sqlite_pragmas' 10 s


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute(AUTOCHECKPOINT_OFF)  # storage.checkpoints checkpoints in its own thread
    cursor.close()


async def open_database(url: str) -> Database:
    """Open (and create if needed) the database at `url`; the caller closes it.

    SQLite URLs get their parent directory created, WAL mode and foreign keys.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = await anyio.Path(parsed.database).expanduser()
        await path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    sync_engine = inline_engine = checkpointer = None
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if parsed.database not in (None, "", ":memory:"):
            sync_engine = create_engine(parsed.set(drivername="sqlite"))
            event.listen(sync_engine, "connect", _sqlite_pragmas)
            inline_engine = create_engine(parsed.set(drivername="sqlite"), pool_size=1)
            event.listen(inline_engine, "connect", _sqlite_pragmas)
            event.listen(inline_engine, "connect", _no_waiting)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(migrate)
    if sync_engine is not None:
        checkpointer = WalCheckpointer(str(await anyio.Path(parsed.database or "").resolve()))
    return Database(
        engine=engine,
        url=url,
        sync_engine=sync_engine,
        checkpointer=checkpointer,
        inline_engine=inline_engine,
    )


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Database]:
    """`open_database` as a context manager."""
    db = await open_database(url)
    try:
        yield db
    finally:
        await db.close()
