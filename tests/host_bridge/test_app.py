"""The bridge's HTTP app in this process (httpx.ASGITransport): the token, health, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.datastructures import Secret

from host_bridge.app import build_bridge_app
from host_bridge.protocol import BridgeHealth
from host_bridge.service import BridgeConfig, host_health, run_bridge
from host_bridge.sessions import BridgeOptions, SessionManager

pytestmark = pytest.mark.anyio


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    manager = SessionManager(BridgeOptions(data_dir=tmp_path))
    app = build_bridge_app(manager, lambda: host_health(manager), token=Secret("btok"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8766") as c:
            yield c
    finally:
        manager.close()


def _session(operation_id: str = "op-a") -> dict[str, object]:
    return {
        "operation_id": operation_id,
        "spec": {"epochs": 2, "device": "cpu"},
        "server_url": "http://127.0.0.1:9",
    }


async def test_health_is_open_and_describes_the_host(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/health")
    assert response.status_code == 200
    health = BridgeHealth.model_validate_json(response.content)
    assert health.torch_version and health.best_device in ("cpu", "cuda", "mps")
    assert health.sessions_running == 0 and health.token_accepted is None


async def test_health_tells_a_server_whether_its_token_would_do(bridge: httpx.AsyncClient) -> None:
    good = await bridge.get("/health", headers={"authorization": "Bearer btok"})
    bad = await bridge.get("/health", headers={"authorization": "Bearer nope"})
    assert good.json()["token_accepted"] is True
    assert bad.json()["token_accepted"] is False


async def test_a_wrong_or_missing_token_gets_401_and_trains_nothing(
    bridge: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "btok"}):
        response = await bridge.post("/sessions", json=_session(), headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    listed = await bridge.get("/sessions", headers={"authorization": "Bearer btok"})
    assert listed.json() == {"sessions": []}
    assert (await bridge.get("/health")).json()["sessions_running"] == 0


async def test_a_bad_request_is_refused_naming_the_field(bridge: httpx.AsyncClient) -> None:
    auth = {"authorization": "Bearer btok"}
    bad_spec = {**_session(), "spec": {"epochs": 0}}
    response = await bridge.post("/sessions", json=bad_spec, headers=auth)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "spec.epochs"
    response = await bridge.post("/sessions", json={**_session(), "extra": 1}, headers=auth)
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": "extra: unknown field",
        "field": "extra",
    }
    missing = await bridge.get("/sessions/op-none", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await bridge.delete("/sessions/op-none", headers=auth)).status_code == 404


def test_the_bridge_refuses_to_listen_off_loopback_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_bridge(BridgeConfig(host="0.0.0.0", data_dir=tmp_path)) == 2
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err
