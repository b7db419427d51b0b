"""`training-mcp delete OP_ID...`: delete ended runs from a server's data directory (or `--db`),
with their metrics, push credentials, checkpoints and logs, as `DELETE /api/v1/operations/{id}`
does. It opens only the database, so it may run beside a live server of the same data; a run
still queued or running is refused, naming its status."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mcp_server.config import ServerConfig
from mcp_server.core.deletion import delete_run_everywhere
from mcp_server.core.errors import ServiceError
from storage import DB_FILENAME, open_database

__all__ = ["delete_runs"]


async def delete_runs(config: ServerConfig, operation_ids: Sequence[str]) -> int:
    """Delete each run; one JSON line per deleted run on stdout, one line per refusal on stderr.
    The exit status: 0 when every run was deleted, 1 otherwise."""
    if config.db_url is None and not (config.data_dir / DB_FILENAME).is_file():
        print(f"training-mcp delete: no database in {config.data_dir}", file=sys.stderr)
        return 1
    db = await open_database(config.database_url)
    failed = 0
    try:
        for operation_id in operation_ids:
            try:
                deleted = await delete_run_everywhere(db, config, operation_id)
            except ServiceError as exc:
                failed += 1
                print(f"training-mcp delete: {exc.message}", file=sys.stderr)
                continue
            print(deleted.model_dump_json())
    finally:
        await db.close()
    return 1 if failed else 0
