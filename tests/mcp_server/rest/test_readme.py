"""The README's REST mirror examples, run as written against `training-mcp serve --http`.

The curl blocks run in bash (`set -euo pipefail`) with only the port changed (8765 -> a free one)
and `--fail-with-body` added to each curl, except on the one line that shows a 401. The server is
the installed command started as the README starts it; its port and data directory come from the
environment variables the CLI reads.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SERVE = "training-mcp serve --http"


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## REST mirror\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(data_dir: Path, port: int, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINING_MCP_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TRAINING_MCP_DATA_DIR=str(data_dir),
        TRAINING_MCP_PORT=str(port),
    )
    if token is not None:
        env["TRAINING_MCP_TOKEN"] = token
    return env


@asynccontextmanager
async def _server(data_dir: Path, token: str | None = None) -> AsyncIterator[int]:
    """`training-mcp serve --http`, as the README runs it; yields its port once it listens."""
    port = _free_port()
    command = shlex.split(SERVE)
    command[0] = str(BIN / command[0])
    log: list[str] = []
    async with (
        await anyio.open_process(
            command, env=_env(data_dir, port, token), stdout=subprocess.DEVNULL
        ) as process,
        anyio.create_task_group() as tg,
    ):
        started = anyio.Event()

        async def read_log() -> None:
            assert process.stderr is not None
            async for chunk in TextReceiveStream(process.stderr):
                log.append(chunk)
                # Listening from this line on ("Application startup complete" comes before the
                # socket is bound, and the MCP app's build in the background can widen the gap).
                if "Uvicorn running on" in "".join(log):
                    started.set()

        tg.start_soon(read_log)
        try:
            with anyio.fail_after(60):
                await started.wait()
            yield port
        finally:
            process.terminate()
            with anyio.fail_after(30):
                await process.wait()


def _runnable(block: str, port: int) -> str:
    lines = []
    for line in block.replace("8765", str(port)).splitlines():
        if "401" not in line:
            line = re.sub(r"(^|\$\()curl ", r"\1curl --fail-with-body --max-time 120 ", line)
        lines.append(line)
    return "set -euo pipefail\n" + "\n".join(lines)


async def _bash(script: str, env: dict[str, str], cwd: Path) -> str:
    result = await anyio.run_process(["bash", "-c", script], env=env, cwd=cwd, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, f"{script}\n--- stdout\n{out}\n--- stderr\n{result.stderr!r}"
    return out


async def test_the_readme_curl_examples_work_against_the_real_server(tmp_path: Path) -> None:
    blocks = _blocks("bash")
    auth = [b for b in blocks if "TRAINING_MCP_TOKEN" in b]
    plain = [b for b in blocks if b not in auth]
    assert len(plain) == 2 and len(auth) == 1
    async with _server(tmp_path / "data") as port:
        env = _env(tmp_path / "data", port, None)
        out = await _bash(_runnable("\n".join(plain), port), env, tmp_path)
    assert '"status":"ok"' in out
    assert out.count("event: epoch") == 5 and '"status":"completed"' in out
    assert '"verdict"' in out and '"recommendation"' in out
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert '{"next_cursor":"e1","has_more":true}' in out  # an exact page of one point
    assert "name,step,epoch,value,wall_time\r\ntrain_loss,1,,0.9," in out  # the export
    assert "\r\nval_loss,1,,nan," in out
    assert out.rstrip().endswith('"1": "nan"\n}')  # the NaN token, stored and flagged


async def test_the_readme_auth_example_works_as_written(tmp_path: Path) -> None:
    (block,) = [b for b in _blocks("bash") if "TRAINING_MCP_TOKEN" in b]
    setup, serve, client = re.split(r"^(training-mcp serve[^\n]*)$", block, flags=re.M)
    assert serve.split("#")[0].strip() == SERVE
    token = (await _bash(f"{setup}\necho $TRAINING_MCP_TOKEN", os.environ.copy(), tmp_path)).strip()
    assert len(token) >= 40
    async with _server(tmp_path / "data", token=token) as port:
        out = await _bash(_runnable(client, port), _env(tmp_path / "data", port, token), tmp_path)
    decoder = json.JSONDecoder()
    authorised, end = decoder.raw_decode(out)
    refused, _ = decoder.raw_decode(out, end)
    assert authorised["returned"] == 0
    assert refused["error"]["code"] == "unauthorized"


async def test_the_readme_reporter_example_runs_as_written(tmp_path: Path) -> None:
    (code,) = _blocks("python")
    async with _server(tmp_path / "data") as port:
        script = code.replace("8765", str(port))
        await anyio.run_process([sys.executable, "-c", script], cwd=ROOT)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1") as http:
            runs = (await http.get("/operations")).json()["operations"]
    (run,) = runs
    assert (run["name"], run["status"], run["epochs_done"]) == ("my loop", "completed", 10)
