"""Whole histories over REST and MCP: exact pages that follow next_cursor, and the streaming export
in every format, NaN and infinities included."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp import Client

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.core.service import TrainingService
from mcp_server.server import build_mcp_server
from tests.mcp_server.rest.support import asgi_client

pytestmark = pytest.mark.anyio

API = "/api/v1"
SPECIAL = {997: math.nan, 1999: math.inf, 2999: -math.inf}


@pytest.fixture
async def api(service: TrainingService) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(service) as client:
        yield client


def _value(step: int) -> float:
    for every, special in SPECIAL.items():
        if step and step % every == 0:
            return special
    return 1.0 / (step + 1) + step * 1e-9


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


async def _run_with(api: httpx.AsyncClient, points: list[dict[str, Any]]) -> str:
    response = await api.post(f"{API}/operations", json={"backend": "external"})
    op: str = response.json()["operation_id"]
    owner = response.json()["push_token"]  # the run's own pushes
    for start in range(0, len(points), 10_000):
        # json.dumps writes NaN / Infinity tokens, which the route accepts.
        body = json.dumps({"points": points[start : start + 10_000]})
        pushed = await api.post(
            f"{API}/operations/{op}/metrics",
            content=body,
            headers={"content-type": "application/json", PUSH_TOKEN_HEADER: owner},
        )
        assert pushed.status_code == 200, pushed.text
    return op


def _series(name: str, steps: range) -> list[dict[str, Any]]:
    return [{"name": name, "step": s, "epoch": s, "value": _value(s)} for s in steps]


def _floats(series: dict[str, Any]) -> list[float]:
    restore = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    return [
        v if v is not None else restore[series["non_finite"][str(step)]]
        for step, v in zip(series["steps"], series["values"], strict=True)
    ]


async def test_a_25000_point_history_read_through_rest_pages_is_exact(
    api: httpx.AsyncClient,
) -> None:
    op = await _run_with(api, _series("val_loss", range(25_000)))
    steps: list[int] = []
    values: list[float] = []
    cursor = ""
    for _ in range(10):
        response = await api.get(
            f"{API}/operations/{op}/metrics",
            params={"metrics": "val_loss", "page_size": 10_000, "cursor": cursor},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        (series,) = body["series"]
        assert not series["downsampled"] and series["total_points"] == 25_000
        steps += series["steps"]
        values += _floats(series)
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert steps == list(range(25_000))
    assert all(_same(v, _value(s)) for s, v in zip(steps, values, strict=True))
    assert cursor == "e24999"


async def test_the_tool_reads_exact_pages_too(
    api: httpx.AsyncClient, service: TrainingService
) -> None:
    op = await _run_with(api, _series("train_loss", range(1, 251)))
    async with Client(build_mcp_server(service)) as client:
        first = await client.call_tool(
            "get_operation_metrics", {"operation_id": op, "page_size": 200}
        )
        assert first.structured_content is not None
        rest = await client.call_tool(
            "get_operation_metrics",
            {
                "operation_id": op,
                "page_size": 200,
                "cursor": first.structured_content["next_cursor"],
            },
        )
        assert rest.structured_content is not None
        both = await client.call_tool(
            "get_operation_metrics", {"operation_id": op, "page_size": 5, "last_epochs": 3}
        )
    page1, page2 = first.structured_content, rest.structured_content
    assert page1["series"][0]["steps"] == list(range(1, 201)) and page1["has_more"]
    assert page2["series"][0]["steps"] == list(range(201, 251)) and not page2["has_more"]
    assert both.is_error


async def test_page_size_out_of_range_or_with_last_epochs_is_refused_by_name(
    api: httpx.AsyncClient,
) -> None:
    op = await _run_with(api, _series("val_loss", range(3)))
    for params in ({"page_size": 0}, {"page_size": 100_001}, {"page_size": 5, "last_epochs": 2}):
        response = await api.get(f"{API}/operations/{op}/metrics", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "page_size"


def _export_points(api_rows: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    return [(r["name"], int(r["step"]), float(r["value"])) for r in api_rows]


async def test_the_jsonl_export_round_trips_nan_and_infinities_and_pushes_back_as_is(
    api: httpx.AsyncClient,
) -> None:
    written = _series("val_loss", range(3_000)) + _series("train_loss", range(1, 6))
    op = await _run_with(api, written)
    response = await api.get(f"{API}/operations/{op}/metrics/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert f'filename="{op}-metrics.jsonl"' in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [(r["name"], r["step"]) for r in lines] == [("train_loss", s) for s in range(1, 6)] + [
        ("val_loss", s) for s in range(3_000)
    ]
    assert all(_same(r["value"], _value(r["step"])) for r in lines)
    assert {"nan", "inf", "-inf"} <= {str(r["value"]) for r in lines}
    assert all(r["epoch"] == r["step"] and r["wall_time"] > 1e9 for r in lines)
    # Each line is a point the metrics route takes: push the export into a second run.
    again = await _run_with(api, lines)
    second = await api.get(f"{API}/operations/{again}/metrics/export")
    assert second.text == response.text


async def test_the_csv_export_round_trips_nan_and_infinities(api: httpx.AsyncClient) -> None:
    op = await _run_with(api, _series("val_loss", range(3_000)))
    response = await api.get(
        f"{API}/operations/{op}/metrics/export", params={"format": "csv", "metrics": "val_loss"}
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["name", "step", "epoch", "value", "wall_time"]
    got = _export_points(rows)
    assert [s for _, s, _ in got] == list(range(3_000))
    assert all(_same(v, _value(s)) for _, s, v in got)


async def test_the_parquet_export_round_trips_nan_and_infinities(api: httpx.AsyncClient) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    op = await _run_with(api, _series("val_loss", range(45_000)))
    response = await api.get(f"{API}/operations/{op}/metrics/export", params={"format": "parquet"})
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == ["name", "step", "epoch", "value", "wall_time"]
    steps = table.column("step").to_pylist()
    values = table.column("value").to_pylist()
    assert steps == list(range(45_000))
    assert all(_same(v, _value(s)) for s, v in zip(steps, values, strict=True))


async def test_the_arrow_export_round_trips_nan_and_infinities(api: httpx.AsyncClient) -> None:
    pa = pytest.importorskip("pyarrow")
    written = _series("val_loss", range(45_000)) + _series("train_loss", range(1, 4))
    op = await _run_with(api, written)
    response = await api.get(f"{API}/operations/{op}/metrics/export", params={"format": "arrow"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column_names == ["name", "step", "epoch", "value", "wall_time"]
    rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert [(n, s) for n, s, *_ in rows] == [("train_loss", s) for s in range(1, 4)] + [
        ("val_loss", s) for s in range(45_000)
    ]
    assert all(_same(v, _value(s)) and e == s and w > 1e9 for _, s, e, v, w in rows)
    jsonl = await api.get(f"{API}/operations/{op}/metrics/export")  # the same points, the same
    lines = [json.loads(line) for line in jsonl.text.splitlines()]  # wall-clock times
    assert [r["wall_time"] for r in lines] == [w for *_, w in rows]


async def test_export_mistakes_get_json_errors_naming_the_field(api: httpx.AsyncClient) -> None:
    missing = await api.get(f"{API}/operations/op-missing/metrics/export")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    op = await _run_with(api, _series("val_loss", range(3)))
    for params, field in (({"format": "xml"}, "format"), ({"sample": "1"}, "sample")):
        response = await api.get(f"{API}/operations/{op}/metrics/export", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field


async def test_the_openapi_document_describes_pages_and_the_export(api: httpx.AsyncClient) -> None:
    doc = (await api.get(f"{API}/openapi.json")).json()
    paths = doc["paths"]
    read = paths["/api/v1/operations/{operation_id}/metrics"]["get"]
    page_size = next(p for p in read["parameters"] if p["name"] == "page_size")
    assert page_size["schema"]["anyOf"][0]["maximum"] == 100_000
    assert "has_more" in doc["components"]["schemas"]["OperationMetrics"]["properties"]
    export = paths["/api/v1/operations/{operation_id}/metrics/export"]["get"]
    assert {p["name"] for p in export["parameters"]} == {"operation_id", "metrics", "format"}
    assert set(export["responses"]["200"]["content"]) == {
        "application/x-ndjson",
        "text/csv; charset=utf-8",
        "application/vnd.apache.parquet",
        "application/vnd.apache.arrow.stream",
    }
