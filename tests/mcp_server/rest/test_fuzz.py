"""An OpenAPI-driven fuzz run (schemathesis) against the served document and a real uvicorn:
no 5xx, and no answer that breaks the document (status, media type, body schema).

Bounded: derandomised, 12 positive and 12 negative cases per route and kind of id (about 500
requests, a few seconds). Valid `POST /operations` bodies would start real trainings; their size
is capped before sending (at most 2 epochs, 2 layers of 16 units, no `spec`) and the server trains
one run at a time, so what the fuzzer starts stays small. Everything else is sent as generated.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import anyio
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.service import open_service
from mcp_server.rest.routes import rest_endpoints
from tests.mcp_server.rest.support import live_server

pytestmark = pytest.mark.anyio

EXAMPLES_PER_ROUTE_AND_MODE = 12


def _bounded(case: Case[Any]) -> None:
    """Keep what a fuzzed POST /operations may start small (see the module docstring)."""
    if case.method != "POST" or case.path != "/api/v1/operations":
        return
    if not isinstance(case.body, dict):
        return
    body = dict(case.body)
    body.pop("spec", None)
    epochs = body.get("epochs")
    if epochs is None or (type(epochs) is int and epochs > 2):
        body["epochs"] = 2
    sizes = body.get("hidden_sizes")
    if isinstance(sizes, list):
        body["hidden_sizes"] = [min(h, 16) if type(h) is int else h for h in sizes[:2]]
    case.body = body


def _no_server_error(response: schemathesis.Response) -> None:
    """No 5xx, except the documented 503 `unavailable` (a run asked for a GPU bridge that this
    server does not have), which is a refusal with its own stable code, not a crash."""
    if response.status_code < 500:
        return
    body = response.content.decode(errors="replace")
    documented = response.status_code == 503 and json.loads(body)["error"]["code"] == "unavailable"
    assert documented, f"{response.status_code}: {body[:500]}"


def _seed(session: requests.Session, base_url: str) -> tuple[str, str]:
    """Two external runs with a few epochs: one running, one completed."""
    ids, tokens = [], []
    for _ in range(2):
        started = session.post(f"{base_url}/api/v1/operations", json={"backend": "external"})
        operation_id = started.json()["operation_id"]
        tokens.append({PUSH_TOKEN_HEADER: started.json()["push_token"]})
        points: list[dict[str, Any]] = [
            {"name": name, "step": epoch, "value": value / epoch}
            for epoch in range(1, 6)
            for name, value in (("train_loss", 1.0), ("val_loss", 1.2))
        ]
        session.post(
            f"{base_url}/api/v1/operations/{operation_id}/metrics",
            json={"points": points},
            headers=tokens[-1],
        )
        ids.append(operation_id)
    session.post(
        f"{base_url}/api/v1/operations/{ids[1]}/status",
        json={"status": "completed"},
        headers=tokens[1],
    )
    session.headers.update(tokens[0])  # the fuzzer's pushes to the running run are its source's
    return ids[0], ids[1]


def _fuzz(base_url: str) -> list[str]:
    """Fuzz every documented route; returns the routes it tried. Routes with an operation id get
    half their cases with a random id and half with a seeded run: the running one, except where
    a valid case would end it (cancel, status) or stream until it ends (events)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    session = requests.Session()
    running, finished = _seed(session, base_url)
    tried: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        fixed: list[dict[str, str] | None] = [None]
        if "{operation_id}" in operation.path:
            ends_it = operation.path.endswith(("/cancel", "/status", "/events"))
            fixed.append({"operation_id": finished if ends_it else running})
        strategy = st.one_of(
            [
                operation.as_strategy(generation_mode=mode, path_parameters=params)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                for params in fixed
            ]
        )

        @given(case=strategy)
        @settings(
            max_examples=2 * len(fixed) * EXAMPLES_PER_ROUTE_AND_MODE,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check_route(case: Case[Any]) -> None:
            _bounded(case)
            response = case.call(base_url=base_url, session=session, timeout=20)
            _no_server_error(response)
            case.validate_response(response, checks=checks)

        check_route()
        tried.append(operation.label)
    session.close()
    return tried


async def test_fuzzing_from_the_openapi_document_finds_no_5xx_and_no_schema_break(
    config: ServerConfig,
) -> None:
    # Trainings the fuzzer starts import torch (and numpy) in a worker thread; hypothesis looks
    # numpy up in sys.modules as it generates, and must never find it half imported.
    importlib.import_module("trainer.loop")
    one_at_a_time = dataclasses.replace(config, max_concurrent_runs=1)
    async with open_service(one_at_a_time) as service, live_server(service) as base_url:
        with anyio.fail_after(120):
            tried = await anyio.to_thread.run_sync(_fuzz, base_url)
        documented = {f"{e.method} /api/v1{e.path}" for e in rest_endpoints(service)}
    # schemathesis leaves out the document it was loaded from
    assert set(tried) == documented - {"GET /api/v1/openapi.json"}
