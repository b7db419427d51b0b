"""Script runs through the REST mirror: the entry points listed, bad parameters refused naming
the parameter, and a script that floods its output kept within its bounds (disk and the relay's
memory) with the end of its logs readable by tail and by cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_server.core.relay import read_json_file
from tests.scripts.conftest import ROOT
from tests.scripts.test_script_runs import Start, _declare, _wait

pytestmark = pytest.mark.anyio

FLOOD_LINES = 65_536  # about 64 MiB: 1 KiB a line, far past 3 files of 1 MiB per stream
FLOOD = f"""
import sys
line = b"x" * 1000 + b"\\n"
for i in range({FLOOD_LINES}):
    sys.stdout.buffer.write(b"%d " % i + line)
    if i % 64 == 0:
        sys.stderr.buffer.write(b"warning %d " % i + line)
print("the end", flush=True)
"""


async def test_the_entry_points_are_listed_and_bad_parameters_refused_by_name(
    start_server: Start,
) -> None:
    declared = ROOT / "examples/scripts/entry_points.toml"
    async with (
        start_server(declared) as server,
        httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as http,
    ):
        listed = (await http.get("/entry-points")).json()
        assert listed["file"] == str(declared)
        entry = {e["name"]: e for e in listed["entry_points"]}["plain_pytorch"]
        epochs = {p["name"]: p for p in entry["parameters"]}["epochs"]
        assert (epochs["type"], epochs["min"], epochs["max"], epochs["default"]) == (
            "int",
            1,
            200,
            5,
        )

        async def refused(body: dict[str, Any]) -> dict[str, Any]:
            answer = await http.post("/operations", json=body)
            assert answer.status_code == 422, answer.text
            error: dict[str, Any] = answer.json()["error"]
            return error

        plain = {"entry_point": "plain_pytorch"}
        error = await refused({**plain, "params": {"epochs": 201}})
        assert error["field"] == "params.epochs"
        assert "must be an integer between 1 and 200, got 201" in error["message"]
        error = await refused({**plain, "params": {"learning_rate": True}})
        assert error["field"] == "params.learning_rate"
        error = await refused({**plain, "params": {"batch": 3}})
        assert error["field"] == "params.batch"
        assert "allowed: learning_rate, epochs, hidden" in error["message"]
        assert (await refused({"entry_point": "nope"}))["field"] == "entry_point"
        assert (await refused({"params": {"epochs": 2}}))["field"] == "params"
        error = await refused({**plain, "epochs": 3})
        assert error["field"] == "epochs"  # an entry point takes its own parameters only
        assert (await http.get("/operations")).json()["returned"] == 0


async def test_a_flooding_script_keeps_its_logs_bounded_and_their_end_readable(
    tmp_path: Path, start_server: Start
) -> None:
    async with (
        start_server(_declare(tmp_path, {"flood": FLOOD})) as server,
        httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as http,
    ):
        started = await http.post("/operations", json={"entry_point": "flood"})
        assert started.status_code == 202, started.text
        op = started.json()["operation_id"]
        assert (await _wait(server.client, op))["status"] == "completed"

        folder = tmp_path / "data" / "logs" / op
        for stream in ("stdout", "stderr"):
            kept = sum(p.stat().st_size for p in folder.glob(f"{stream}.log*"))
            assert kept <= 3 * 1024 * 1024, (stream, kept)
        ended = read_json_file(folder / "exit.json") or {}
        # Some 70 MB went through the relay; it held a pipe buffer's worth at a time.
        assert ended["returncode"] == 0 and ended["relay_peak_kb"] < 48 * 1024, ended

        tail = (await http.get(f"/operations/{op}/logs", params={"tail": 2})).json()
        assert tail["lines"][0].startswith(f"{FLOOD_LINES - 1} xxx")
        assert tail["lines"][1] == "the end" and tail["truncated"]
        assert tail["next_cursor"] == FLOOD_LINES * 1001 + sum(
            len(str(i)) + 1 for i in range(FLOOD_LINES)
        ) + len("the end\n")
        since = await http.get(f"/operations/{op}/logs", params={"cursor": tail["next_cursor"] - 8})
        assert since.json()["lines"] == ["the end"] and not since.json()["truncated"]
        rotated = (await http.get(f"/operations/{op}/logs", params={"cursor": 0})).json()
        assert rotated["truncated"] and len(rotated["lines"]) <= 10_000
        stderr = await http.get(f"/operations/{op}/logs", params={"stream": "stderr", "tail": 1})
        last_warning = (FLOOD_LINES - 1) // 64 * 64
        assert stderr.json()["lines"][0].startswith(f"warning {last_warning} ")

        for params, field in (({"tail": 0}, "tail"), ({"stream": "stdin"}, "stream")):
            bad = await http.get(f"/operations/{op}/logs", params=params)
            assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
        missing = await http.get("/operations/op-nope/logs")
        assert missing.status_code == 404
        external = await http.post("/operations", json={"backend": "external"})
        other = external.json()["operation_id"]
        not_script = await http.get(f"/operations/{other}/logs")
        assert not_script.status_code == 422
        assert not_script.json()["error"]["field"] == "operation_id"
