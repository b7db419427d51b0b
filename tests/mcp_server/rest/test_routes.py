"""The REST mirror through httpx.ASGITransport: every client mistake gets its JSON error and
status, ingestion is all-or-nothing and idempotent, auth guards all but /health."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.core.service import TrainingService
from tests.mcp_server.rest.support import asgi_client, parse_events
from training_mcp.points import METRIC_NAME_PATTERN, METRIC_NAME_RULE

pytestmark = pytest.mark.anyio

API = "/api/v1"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def api(service: TrainingService) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(service) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    message: str = error["message"]
    return message


def _epoch_points(epoch: int, **values: float) -> list[dict[str, Any]]:
    return [{"name": n, "step": epoch, "value": v, "epoch": epoch} for n, v in values.items()]


async def _external_run(api: httpx.AsyncClient, **fields: Any) -> str:
    response = await api.post(f"{API}/operations", json={"backend": "external", **fields})
    assert response.status_code == 202, response.text
    operation_id: str = response.json()["operation_id"]
    api.headers[PUSH_TOKEN_HEADER] = response.json()["push_token"]  # this run's pushes
    assert response.headers["location"] == f"{API}/operations/{operation_id}"
    return operation_id


async def test_health_answers_version_database_and_active_runs(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{API}/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": "0.1.0",
        "database": True,
        "runs_active": 0,
    }


async def test_an_external_run_is_registered_and_read_back_from_its_location(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api, name="elsewhere", epochs=5, tags={"team": "a"})
    op = (await api.get(f"{API}/operations/{operation_id}")).json()
    assert (op["backend"], op["status"], op["name"]) == ("external", "running", "elsewhere")
    assert (op["epochs_total"], op["tags"]) == (5, {"team": "a"})
    listed = (await api.get(f"{API}/operations", params={"status": "running"})).json()
    assert [o["operation_id"] for o in listed["operations"]] == [operation_id]


async def test_the_same_batch_pushed_twice_is_stored_once(api: httpx.AsyncClient) -> None:
    operation_id = await _external_run(api)
    points = {"points": [p for e in (1, 2) for p in _epoch_points(e, train_loss=1 / e, acc=e)]}
    url = f"{API}/operations/{operation_id}/metrics"
    first = (await api.post(url, json=points)).json()
    again = (await api.post(url, json=points)).json()
    assert first == {"received": 4, "stored": 4, "duplicates": 0}
    assert again == {"received": 4, "stored": 0, "duplicates": 4}
    read = (await api.get(url, params={"metrics": "train_loss,acc"})).json()
    assert [(s["name"], s["total_points"]) for s in read["series"]] == [
        ("train_loss", 2),
        ("acc", 2),
    ]


async def test_nan_and_infinity_tokens_are_stored_and_read_back_flagged(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api)
    body = (
        b'{"points": [{"name": "loss", "step": 1, "value": NaN},'
        b' {"name": "loss", "step": 2, "value": Infinity},'
        b' {"name": "loss", "step": 3, "value": -Infinity},'
        b' {"name": "loss", "step": 4, "value": 0.5}]}'
    )
    pushed = await api.post(f"{API}/operations/{operation_id}/metrics", content=body, headers=JSON)
    assert pushed.json()["stored"] == 4
    series = (await api.get(f"{API}/operations/{operation_id}/metrics?metrics=loss")).json()
    (loss,) = series["series"]
    assert loss["values"] == [None, None, None, 0.5]
    assert loss["non_finite"] == {"1": "nan", "2": "inf", "3": "-inf"}


async def test_a_batch_with_one_bad_point_names_it_and_stores_nothing(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api)
    url = f"{API}/operations/{operation_id}/metrics"
    good = _epoch_points(1, train_loss=0.5, val_loss=0.6)
    cases = [
        ({"name": "2fast", "step": 1, "value": 1.0}, "points[2].name"),
        ({"name": "loss\n", "step": 1, "value": 1.0}, "points[2].name"),
        ({"name": "loss", "step": -1, "value": 1.0}, "points[2].step"),
        ({"name": "loss", "step": 1, "value": "low"}, "points[2].value"),
        ({"name": "loss", "step": 1}, "points[2].value"),
        ({"name": "loss", "step": 1, "value": 1.0, "colour": "red"}, "points[2].colour"),
    ]
    for bad, field in cases:
        message = _error(
            await api.post(url, json={"points": [*good, bad]}), 422, "invalid_input", field
        )
        assert message.startswith(field)
        if field.endswith("name"):  # the rule in words, not the regular expression
            assert METRIC_NAME_RULE in message
    assert METRIC_NAME_PATTERN  # the documented rule the name check enforces
    read = (await api.get(url, params={"metrics": "all"})).json()
    assert read["available"] == [] and read["series"] == []


async def test_a_malformed_envelope_gets_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    operation_id = await _external_run(api)
    url = f"{API}/operations/{operation_id}/metrics"
    _error(await api.post(url, content=b"{not json", headers=JSON), 422, "invalid_input", "body")
    _error(await api.post(url, content=b"", headers=JSON), 422, "invalid_input", "body")
    _error(await api.post(url, content=b"\xff\xfe", headers=JSON), 422, "invalid_input", "body")
    _error(await api.post(url, content=b"[" * 100_000, headers=JSON), 422, "invalid_input", "body")
    _error(await api.post(url, json=[1, 2]), 422, "invalid_input", "body")
    _error(await api.post(url, json={"points": "many"}), 422, "invalid_input", "points")
    _error(await api.post(url, json={"points": [], "extra": 1}), 422, "invalid_input", "extra")


async def test_oversized_batches_are_refused_with_413_before_anything_is_stored(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api)
    url = f"{API}/operations/{operation_id}/metrics"
    too_many = {"points": [{"name": "a", "step": s, "value": 1} for s in range(10_001)]}
    _error(await api.post(url, json=too_many), 413, "payload_too_large", "points")
    big = b'{"points": [' + b" " * (1024 * 1024) + b"]}"
    _error(await api.post(url, content=big, headers=JSON), 413, "payload_too_large", "body")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"points": ['
        for _ in range(70):
            yield b" " * 16_384
        yield b"]}"

    _error(await api.post(url, content=chunked(), headers=JSON), 413, "payload_too_large", "body")
    read = (await api.get(url, params={"metrics": "all"})).json()
    assert read["available"] == []
    exactly = {"points": [{"name": "a", "step": s, "value": 1} for s in range(10_000)]}
    assert (await api.post(url, json=exactly)).json()["stored"] == 10_000


async def test_a_finished_run_takes_no_more_metrics_and_no_second_ending(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api)
    url = f"{API}/operations/{operation_id}"
    await api.post(f"{url}/metrics", json={"points": _epoch_points(1, loss=0.1)})
    done = await api.post(f"{url}/status", json={"status": "completed", "reason": "all epochs"})
    assert (done.json()["status"], done.json()["reason"]) == ("completed", "all epochs")
    late = await api.post(f"{url}/metrics", json={"points": _epoch_points(2, loss=0.1)})
    _error(late, 409, "conflict", "operation_id")
    _error(await api.post(f"{url}/status", json={"status": "failed"}), 409, "conflict", "status")
    _error(await api.post(f"{url}/cancel"), 409, "conflict", "operation_id")


async def test_unknown_operations_get_404_on_every_route(api: httpx.AsyncClient) -> None:
    url = f"{API}/operations/op-nothere"
    for method, path, body in [
        ("GET", "", None),
        ("POST", "/cancel", None),
        ("POST", "/status", {"status": "completed"}),
        ("GET", "/metrics", None),
        ("POST", "/metrics", {"points": _epoch_points(1, loss=0.1)}),
        ("GET", "/analysis", None),
        ("GET", "/plot.png", None),
        ("GET", "/events", None),
    ]:
        response = await api.request(method, url + path, json=body)
        _error(response, 404, "not_found", "operation_id")


async def test_routing_mistakes_get_json_404_and_405_with_allow(api: httpx.AsyncClient) -> None:
    _error(await api.get(f"{API}/nowhere"), 404, "not_found", None)
    response = await api.delete(f"{API}/operations")
    _error(response, 405, "method_not_allowed", None)
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_query_mistakes_get_422_naming_the_parameter(api: httpx.AsyncClient) -> None:
    operation_id = await _external_run(api)
    ops = f"{API}/operations"
    cases = [
        (f"{ops}?limit=0", "limit"),
        (f"{ops}?limit=ten", "limit"),
        (f"{ops}?limit=1&limit=2", "limit"),
        (f"{ops}?status=sleeping", "status"),
        (f"{ops}?colour=red", "colour"),
        (f"{ops}/{operation_id}?verbose=1", "verbose"),
        (f"{ops}/{operation_id}/metrics?cursor=yesterday", "cursor"),
        (f"{ops}/{operation_id}/metrics?max_points=3", "max_points"),
        (f"{ops}/{operation_id}/metrics?include_steps=maybe", "include_steps"),
        (f"{ops}/{operation_id}/analysis?patience=0", "patience"),
        (f"{ops}/{operation_id}/analysis?window=NaN", "window"),
        (f"{ops}/{operation_id}/analysis?mode=sideways", "mode"),
    ]
    for url, field in cases:
        _error(await api.get(url), 422, "invalid_input", field)


async def test_start_training_arguments_are_validated_like_the_tool(
    api: httpx.AsyncClient,
) -> None:
    url = f"{API}/operations"
    _error(await api.post(url, json={"epochs": "many"}), 422, "invalid_input", "epochs")
    _error(await api.post(url, json={"epochs": 0}), 422, "invalid_input", "epochs")
    _error(await api.post(url, json={"optimiser": "adam"}), 422, "invalid_input", "optimiser")
    _error(
        await api.post(url, json={"dataset": "mnist"}),
        422,
        "invalid_input",
        "dataset.synthetic.name",
    )
    _error(await api.post(url, content=b"{,}", headers=JSON), 422, "invalid_input", "body")
    _error(await api.post(url, json="blobs"), 422, "invalid_input", "body")
    response = await api.post(
        url, json={"dataset": "csv", "csv_path": "/etc/passwd", "target_column": "x"}
    )
    _error(response, 422, "invalid_input", "dataset.path")
    assert (await api.get(url)).json()["returned"] == 0


async def test_a_finished_run_replays_as_events_then_says_there_is_nothing_more(
    api: httpx.AsyncClient,
) -> None:
    operation_id = await _external_run(api)
    url = f"{API}/operations/{operation_id}"
    points = [p for e in (1, 2, 3) for p in _epoch_points(e, train_loss=1 / e, val_loss=math.inf)]
    await api.post(f"{url}/metrics", content=json.dumps({"points": points}), headers=JSON)
    await api.post(f"{url}/status", json={"status": "completed"})
    response = await api.get(f"{url}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    assert [(e.id, e.event) for e in events] == [
        ("e1", "epoch"),
        ("e2", "epoch"),
        ("e3", "epoch"),
        ("e3-completed", "status"),
    ]
    third = json.loads(events[2].data)
    assert third["values"] == {"train_loss": pytest.approx(1 / 3), "val_loss": None}
    assert third["non_finite"] == {"val_loss": "inf"}
    assert json.loads(events[3].data)["status"] == "completed"
    resumed = await api.get(f"{url}/events", headers={"Last-Event-ID": "e1"})
    assert [e.id for e in parse_events(resumed.text)] == ["e2", "e3", "e3-completed"]
    assert (
        await api.get(f"{url}/events", headers={"Last-Event-ID": "e3-completed"})
    ).status_code == 204
    bad = await api.get(f"{url}/events", headers={"Last-Event-ID": "yesterday"})
    _error(bad, 422, "invalid_input", "Last-Event-ID")


async def test_a_token_guards_every_route_but_health(service: TrainingService) -> None:
    async with asgi_client(service, token="s3cret-token") as api:
        assert (await api.get(f"{API}/health")).status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-token"},
            {"Authorization": "s3cret-token"},
        ):
            for path in ("/operations", "/openapi.json", "/docs", "/operations/op-x/events"):
                response = await api.get(API + path, headers=headers)
                _error(response, 401, "unauthorized", "Authorization")
                assert response.headers["www-authenticate"] == "Bearer"
        ok = await api.get(f"{API}/operations", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200


async def test_the_openapi_document_describes_every_route_from_the_shared_models(
    api: httpx.AsyncClient,
) -> None:
    doc = (await api.get(f"{API}/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    routes = {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}
    assert routes >= {
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/operations"),
        ("POST", "/api/v1/operations"),
        ("GET", "/api/v1/operations/{operation_id}"),
        ("POST", "/api/v1/operations/{operation_id}/cancel"),
        ("POST", "/api/v1/operations/{operation_id}/status"),
        ("GET", "/api/v1/operations/{operation_id}/metrics"),
        ("POST", "/api/v1/operations/{operation_id}/metrics"),
        ("GET", "/api/v1/operations/{operation_id}/analysis"),
        ("GET", "/api/v1/operations/{operation_id}/plot.png"),
        ("GET", "/api/v1/operations/{operation_id}/events"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/docs"),
    }
    schemas = doc["components"]["schemas"]
    assert {"StartTrainingArgs", "OperationMetrics", "LossAnalysis", "MetricPointIn"} <= set(
        schemas
    )
    assert schemas["MetricPointIn"]["properties"]["name"]["pattern"] == METRIC_NAME_PATTERN
    analysis = doc["paths"]["/api/v1/operations/{operation_id}/analysis"]["get"]
    assert {p["name"] for p in analysis["parameters"]} >= {"monitor", "patience", "window"}
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []


async def test_the_docs_page_is_self_contained(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{API}/docs")
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "src=" not in page and "<link" not in page and "@import" not in page
    assert "/api/v1/operations/{operation_id}/events" in page
