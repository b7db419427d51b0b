"""What `serve --http` imports before it answers: nothing it needs only later. httpx (the bridges'
client, ~70 ms with its command-line extras), PostgreSQL's SQLAlchemy dialect (~60 ms) and NVML
(25-80 ms) are loaded where they are first used; the MCP SDK once the server answers
(`mcp_server.lazy_mcp`). torch never (tests/test_walls.py)."""

from __future__ import annotations

import subprocess
import sys

LATER = ("httpx", "sqlalchemy.dialects.postgresql", "pynvml", "mcp", "torch")


def test_the_modules_a_server_starts_with_leave_out_what_it_needs_only_later() -> None:
    script = (
        "import sys\n"
        "import mcp_server.cli, mcp_server.core.service, mcp_server.app, uvicorn\n"
        f"print(','.join(m for m in {LATER!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
