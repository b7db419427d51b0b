"""Waiting for a sweep to end, woken by its changes (no polling sleeps)."""

from __future__ import annotations

import anyio

from mcp_server.core.service import TrainingService
from mcp_server.core.sweeps import Sweep


async def until_sweep_done(service: TrainingService, sweep_id: str, timeout_s: float) -> Sweep:
    """The sweep once it is no longer running; fails after `timeout_s`."""
    with anyio.fail_after(timeout_s):
        while True:
            changed = service.changed(sweep_id)
            sweep = await service.get_sweep(sweep_id)
            if sweep.status != "running":
                return sweep
            with anyio.move_on_after(5):
                await changed.wait()
