"""Push credentials: the secret that lets one source, and only it, push into a run.

The server makes one when it registers an external run (and hands it back once) or dispatches a
run to a bridge (inside the session request). Only its SHA-256 is stored. A run stored before
credentials existed has none, and `push_credential_matches` accepts any pusher for it, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Connection, select

from storage.database import Database
from storage.schema import push_credentials

__all__ = ["issue_push_credential", "push_credential_matches"]


def _digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


async def issue_push_credential(db: Database, operation_id: str) -> str:
    """A new credential for `operation_id` (replacing any earlier one); returned, never stored."""
    credential = secrets.token_urlsafe(24)
    digest = _digest(credential)

    def write(conn: Connection) -> None:
        conn.execute(
            push_credentials.delete().where(push_credentials.c.operation_id == operation_id)
        )
        conn.execute(push_credentials.insert().values(operation_id=operation_id, digest=digest))

    await db.run_write(write)
    return credential


async def push_credential_matches(db: Database, operation_id: str, given: str | None) -> bool:
    """Whether `given` may push into the run: it matches the run's credential (constant time),
    or the run has none."""

    def read(conn: Connection) -> str | None:
        query = select(push_credentials.c.digest).where(
            push_credentials.c.operation_id == operation_id
        )
        value: str | None = conn.execute(query).scalar_one_or_none()
        return value

    stored = await db.run_read(read, small=True)
    if stored is None:
        return True
    return given is not None and hmac.compare_digest(_digest(given), stored)
