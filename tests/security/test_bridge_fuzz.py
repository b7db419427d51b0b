"""Schemathesis against a real bridge (uvicorn on loopback) from an OpenAPI document of its
contract (`host_bridge.protocol`): no 5xx but the documented 503 `busy`. Bounded like the REST
fuzz run: derandomised, a few dozen cases per route. What a valid case could start stays small:
the bridge trains one session at a time within a tight budget, and pushes only to loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok

from host_bridge.protocol import BridgeHealth, SessionInfo, SessionList, SessionRequest
from host_bridge.service import BridgeConfig, bridge_app
from host_bridge.sessions import SessionManager
from httpbase import ApiError
from trainer.budget import ResourceLimits

pytestmark = pytest.mark.anyio

EXAMPLES = 10
LIMITS = ResourceLimits(
    max_parameters=50_000,
    max_activation_bytes=64 * 1024**2,
    max_dataset_rows=5_000,
    max_checkpoint_bytes=16 * 1024**2,
)


def _document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def answer(model: type[BaseModel], *codes: int) -> dict[str, Any]:
        error = {"content": {"application/json": {"schema": ref(ApiError)}}}
        body = {"description": "ok", "content": {"application/json": {"schema": ref(model)}}}
        return {"200": body, **{str(c): {"description": "error", **error} for c in codes}}

    op_id = {"name": "operation_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "training-mcp bridge", "version": "1"},
        "paths": {
            "/health": {"get": {"responses": answer(BridgeHealth)}},
            "/sessions": {
                "get": {"responses": answer(SessionList)},
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": ref(SessionRequest)}},
                    },
                    "responses": {
                        **answer(SessionInfo, 403, 413, 415, 422, 503),
                        "201": {"description": "started"},
                    },
                },
            },
            "/sessions/{operation_id}": {
                "get": {"parameters": [op_id], "responses": answer(SessionInfo, 404)},
                "delete": {
                    "parameters": [
                        op_id,
                        {"name": "reason", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {**answer(SessionInfo, 404), "202": {"description": "ok"}},
                },
            },
        },
        "components": {"schemas": schemas},
    }


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[str]:
    config = BridgeConfig(data_dir=tmp_path, max_sessions=1, limits=LIMITS)
    manager = SessionManager(config.options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            bridge_app(config, manager), log_config=None, log_level="warning", lifespan="on"
        )
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
    sock.close()


def _fuzz(base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(_document())
    session = requests.Session()
    tried: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        strategy = st.one_of(
            [
                operation.as_strategy(generation_mode=mode)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ]
        )

        @given(case=strategy)
        @settings(
            max_examples=2 * EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check_route(case: Case[Any]) -> None:
            response = case.call(base_url=base_url, session=session, timeout=20)
            if response.status_code >= 500:
                body = response.content.decode(errors="replace")
                busy = response.status_code == 503 and json.loads(body)["error"]["code"] == "busy"
                assert busy, f"{case.method} {case.path}: {response.status_code} {body[:500]}"

        check_route()
        tried.append(operation.label)
    session.close()
    return tried


async def test_fuzzing_the_bridge_finds_no_5xx(bridge: str) -> None:
    with anyio.fail_after(120):
        tried = await anyio.to_thread.run_sync(_fuzz, bridge)
    assert len(tried) == 5
