"""Findings 4 and 8-12: file errors that echoed contents, and the bad inputs that got a 500, were
silently accepted or broke a plot. Each is now a client mistake with an error naming the field."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.session import ClientSession

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from mcp_server.server import build_mcp_server
from tests.mcp_server.rest.support import live_server, read_events

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
SECRET = "root:x:0:0:root:/root:/bin/bash"
TINY = {"dataset": "blobs", "epochs": 2, "hidden_sizes": [8], "batch_size": 64}


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", data_roots=(tmp_path,))


@pytest.fixture
async def served(config: ServerConfig) -> AsyncIterator[tuple[httpx.AsyncClient, Client]]:
    async with (
        open_service(config) as service,
        live_server(service) as base,
        httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30) as http,
        Client(build_mcp_server(service)) as mcp,
    ):
        yield http, mcp


def _error(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def _tool_error(mcp: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await mcp.call_tool(tool, arguments)
    assert result.is_error, result
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def test_file_errors_name_the_file_never_its_contents(
    served: tuple[httpx.AsyncClient, Client], tmp_path: Path
) -> None:
    http, _ = served
    (tmp_path / "passwd").write_text(f"{SECRET}\nbin:x:1:1:bin:/bin:/sbin/nologin\n")
    (tmp_path / "one-line.csv").write_text("a," * 600_000 + "y\n1,0\n")
    for path in ("passwd", "one-line.csv"):
        body = {"dataset": "csv", "csv_path": path, "target_column": "y"}
        error = _error(await http.post("/operations", json=body))
        assert path in error["message"], error
        assert SECRET not in error["message"] and "bin:x" not in error["message"]
        assert len(error["message"]) < 300


async def test_a_stdio_server_does_not_read_its_working_directory_unless_asked(
    tmp_path: Path,
) -> None:
    (tmp_path / "passwd.csv").write_text(f"{SECRET},y\n1,0\n")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server.cli", "serve", "--data-dir", str(tmp_path / "data")],
        cwd=str(tmp_path),
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        texts = []
        for path in ("passwd.csv", str(tmp_path / "passwd.csv")):
            body = {"dataset": "csv", "csv_path": path, "target_column": "y"}
            result = await session.call_tool("start_training", body)
            assert result.is_error
            texts.append(result.content[0].text)  # type: ignore[union-attr]
    relative, absolute = texts
    assert "no such file" in relative and str(tmp_path / "data") in relative  # not the cwd
    assert "outside the allowed data roots" in absolute
    assert SECRET not in relative + absolute


async def test_the_factory_pre_flight_writes_nothing_onto_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server.cli", "serve", "--data-dir", str(tmp_path), "--allow-factory"],
        cwd=str(ROOT),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        spec = {"dataset": {"kind": "factory", "factory": "tests.security.printing_factory:make"}}
        await session.call_tool("start_training", {"spec": spec, "epochs": 1})
        # the channel still carries only JSON-RPC: the next call parses
        listed = await session.call_tool("list_operations", {})
    assert not listed.is_error


async def test_numbers_past_what_storage_holds_and_nul_bytes_are_refused(
    served: tuple[httpx.AsyncClient, Client],
) -> None:
    http, mcp = served
    ext = (await http.post("/operations", json={"backend": "external"})).json()["operation_id"]
    big = f"e{2**63}"
    assert (
        _error(await http.get(f"/operations/{ext}/metrics", params={"cursor": big}))["field"]
        == "cursor"
    )
    assert "cursor" in await _tool_error(
        mcp, "get_operation_metrics", {"operation_id": ext, "cursor": big}
    )
    for epochs in (2**63, -5, 0):
        body = {"backend": "external", "epochs": epochs}
        assert _error(await http.post("/operations", json=body))["field"] == "epochs"
        assert "epochs" in await _tool_error(mcp, "start_training", body)
    nul = {"dataset": "csv", "csv_path": "a\x00b.csv", "target_column": "y"}
    assert _error(await http.post("/operations", json=nul))["field"] == "csv_path"
    assert "csv_path" in await _tool_error(mcp, "start_training", nul)


async def test_a_huge_step_and_step_zero_travel_the_event_stream(
    served: tuple[httpx.AsyncClient, Client],
) -> None:
    http, _ = served
    started = (await http.post("/operations", json={"backend": "external"})).json()
    ext, owner = started["operation_id"], {PUSH_TOKEN_HEADER: started["push_token"]}
    points = [
        {"name": "val_loss", "step": 0, "value": 1.0},
        {"name": "val_loss", "step": 2**62, "value": 0.5},
    ]
    pushed = await http.post(f"/operations/{ext}/metrics", json={"points": points}, headers=owner)
    assert pushed.status_code == 200
    await http.post(f"/operations/{ext}/status", json={"status": "completed"}, headers=owner)
    async with http.stream("GET", f"/operations/{ext}/events") as stream:
        events = [e async for e in read_events(stream)]
    epochs = [e for e in events if e.event == "epoch"]
    assert [e.id for e in epochs] == ["e0", f"e{2**62}"]
    last = events[-1].id
    again = await http.get(f"/operations/{ext}/events", headers={"Last-Event-ID": last or ""})
    assert again.status_code == 204  # its own id is accepted: nothing more to send


async def test_arguments_a_tool_or_route_does_not_take_are_refused(
    served: tuple[httpx.AsyncClient, Client],
) -> None:
    http, mcp = served
    assert "epoch" in await _tool_error(mcp, "start_training", {"epoch": 2})
    for body in (b"[]", b"0", b"false", b'""'):
        response = await http.post(
            "/operations", content=body, headers={"content-type": "application/json"}
        )
        assert _error(response)["field"] == "body"
    assert "name" in await _tool_error(mcp, "start_training", {"name": "n" * 201})
    assert _error(await http.post("/operations", json={"name": "n" * 201}))["field"] == "name"
    assert (await http.get("/operations")).json()["operations"] == []
    wide = {**TINY, "epochs": 1, "hidden_sizes": [1] * 64, "batch_size": 256}
    started = await http.post("/operations", json=wide)
    assert started.status_code == 202 and len(started.json()["name"]) <= 200


async def test_plots_comparisons_and_analyses_refuse_what_they_cannot_answer(
    served: tuple[httpx.AsyncClient, Client],
) -> None:
    http, mcp = served
    started = (await http.post("/operations", json={"backend": "external", "name": "$x^{$"})).json()
    ext, owner = started["operation_id"], {PUSH_TOKEN_HEADER: started["push_token"]}
    points = [{"name": "train_loss", "step": e, "value": 1 / e} for e in range(1, 4)]
    await http.post(f"/operations/{ext}/metrics", json={"points": points}, headers=owner)
    plot = await http.get(f"/operations/{ext}/plot.png", params={"metrics": "train_loss"})
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    both = await http.get(f"/operations/{ext}/plot.png", params={"metrics": "train_loss,nope"})
    error = _error(both, 404)
    assert error["field"] == "metrics" and "nope" in error["message"]
    assert "nope" in await _tool_error(
        mcp, "plot_metrics", {"operation_ids": [ext], "metrics": ["train_loss", "nope"]}
    )
    too_many = [f"m{i}" for i in range(300)]
    assert "metrics" in await _tool_error(
        mcp, "plot_metrics", {"operation_ids": [ext], "metrics": too_many}
    )
    assert "operation_ids" in await _tool_error(
        mcp, "compare_operations", {"operation_ids": [ext, ext]}
    )
    analysis = await http.get(f"/operations/{ext}/analysis", params={"monitor": "val_los"})
    assert _error(analysis)["field"] == "monitor"
    assert "monitor" in await _tool_error(
        mcp, "analyze_loss", {"operation_id": ext, "monitor": "val_los"}
    )
