"""Deleting an ended run with everything it left: its stored metrics and push credential
(`storage.deletion`), its checkpoints (`artifacts/<id>/`) and a script run's logs (`logs/<id>/`).

The database goes first: once the row is gone no reader can reach the run, so the files can be
removed after it without a reader seeing a run whose checkpoints vanish under it. A run forked
from this one keeps working: its history was copied into it and its starting checkpoint
hard-linked into its own folder when it was forked.
"""

from __future__ import annotations

import shutil

import anyio
from pydantic import BaseModel, Field

from mcp_server.config import ServerConfig
from mcp_server.core.errors import ConflictError, translate
from storage import Database, OperationStatus
from storage.deletion import OperationActiveError, delete_operation
from trainer.checkpoint_budget import delete_run

__all__ = ["DeletedOperation", "delete_run_everywhere"]


class DeletedOperation(BaseModel):
    operation_id: str
    status: OperationStatus = Field(description="The status it had when it was deleted")
    points_deleted: int
    checkpoint_bytes_freed: int


def _remove_files(config: ServerConfig, operation_id: str) -> int:
    freed = delete_run(config.artifacts_dir, operation_id)
    logs = config.logs_dir / operation_id
    if logs.parent == config.logs_dir and logs.is_dir():  # never a path outside logs/
        shutil.rmtree(logs, ignore_errors=True)
    return freed


async def delete_run_everywhere(
    db: Database, config: ServerConfig, operation_id: str
) -> DeletedOperation:
    """Delete an ended run (ConflictError naming its status while it is queued or running)."""
    try:
        deleted = await delete_operation(db, operation_id)
    except OperationActiveError as exc:
        raise ConflictError(str(exc), field="operation_id") from exc
    except Exception as exc:
        raise translate(exc) from exc
    freed = await anyio.to_thread.run_sync(_remove_files, config, operation_id)
    return DeletedOperation(
        operation_id=operation_id,
        status=deleted.status,
        points_deleted=deleted.points,
        checkpoint_bytes_freed=freed,
    )
