"""Finding 1: a web page could drive the REST mirror and the bridge (no Host or Origin check, any
Content-Type parsed as JSON), and the bridge pushed to any `server_url` (SSRF). Replayed against
real `serve --http` and `bridge` processes."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from httpbase.guard import GuardPolicy, server_url_allowed

EVIL = "http://evil.example"
TEXT = {"Content-Type": "text/plain"}
SESSION = {
    "operation_id": "op-ssrf",
    "spec": {"epochs": 1, "dataset": {"kind": "synthetic", "name": "blobs"}},
    "server_url": "http://169.254.169.254/latest",
}


def _error(response: httpx.Response, status: int, code: str, field: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field), error
    message: str = error["message"]
    return message


def test_a_cross_site_simple_post_starts_nothing(server_url: str) -> None:
    api = f"{server_url}/api/v1"
    body = '{"backend":"external"}'
    headers = {**TEXT, "Origin": EVIL}
    _error(
        httpx.post(f"{api}/operations", content=body, headers=headers),
        403,
        "forbidden_origin",
        "Origin",
    )
    # Without an Origin (not a browser) text/plain is still no JSON.
    _error(
        httpx.post(f"{api}/operations", content=body, headers=TEXT),
        415,
        "unsupported_media_type",
        "Content-Type",
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    _error(
        httpx.post(f"{api}/operations", content="a=1", headers=form),
        415,
        "unsupported_media_type",
        "Content-Type",
    )
    listed = httpx.get(f"{api}/operations").json()
    assert listed["operations"] == []


@pytest.mark.parametrize(
    "path", ["/api/v1/operations", "/api/v1/docs", "/api/v1/health", "/mcp", "/"]
)
def test_a_rebound_host_name_reads_nothing(server_url: str, path: str) -> None:
    port = server_url.rsplit(":", 1)[1]
    response = httpx.get(f"{server_url}{path}", headers={"Host": f"evil.example:{port}"})
    _error(response, 421, "misdirected_request", "Host")


def test_the_servers_own_pages_and_allowed_origins_pass(server_url: str) -> None:
    api = f"{server_url}/api/v1"
    same = httpx.post(
        f"{api}/operations", json={"backend": "external"}, headers={"Origin": server_url}
    )
    assert same.status_code == 202, same.text
    allowed = httpx.get(f"{api}/operations", headers={"Origin": "http://dashboard.example:8080"})
    assert allowed.status_code == 200
    other_port = server_url.rsplit(":", 1)[0] + ":1"
    _error(
        httpx.get(f"{api}/operations", headers={"Origin": other_port}),
        403,
        "forbidden_origin",
        "Origin",
    )
    _error(
        httpx.get(f"{api}/operations", headers={"Origin": "null"}),
        403,
        "forbidden_origin",
        "Origin",
    )


def test_mcp_refuses_a_foreign_origin(server_url: str) -> None:
    response = httpx.post(
        f"{server_url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Origin": EVIL, "Accept": "application/json, text/event-stream"},
    )
    _error(response, 403, "forbidden_origin", "Origin")


def test_the_bridge_refuses_cross_site_requests(bridge_url: str) -> None:
    body = json.dumps({**SESSION, "server_url": "http://127.0.0.1:9"})
    _error(
        httpx.post(f"{bridge_url}/sessions", content=body, headers={**TEXT, "Origin": EVIL}),
        403,
        "forbidden_origin",
        "Origin",
    )
    _error(
        httpx.post(f"{bridge_url}/sessions", content=body, headers=TEXT),
        415,
        "unsupported_media_type",
        "Content-Type",
    )
    port = bridge_url.rsplit(":", 1)[1]
    _error(
        httpx.get(f"{bridge_url}/sessions", headers={"Host": f"evil.example:{port}"}),
        421,
        "misdirected_request",
        "Host",
    )
    allowed = httpx.get(f"{bridge_url}/health", headers={"Host": f"gpu.example:{port}"})
    assert allowed.status_code == 200
    assert httpx.get(f"{bridge_url}/sessions").json() == {"sessions": []}


def test_the_bridge_pushes_only_to_servers_the_operator_allowed(bridge_url: str) -> None:
    message = _error(
        httpx.post(f"{bridge_url}/sessions", json=SESSION), 403, "forbidden", "server_url"
    )
    assert "--allowed-server" in message
    for url in ("http://10.0.0.1:8765", "http://localhost.evil.example:8765", "ftp://127.0.0.1"):
        refused = httpx.post(f"{bridge_url}/sessions", json={**SESSION, "server_url": url})
        assert refused.status_code in (403, 422), (url, refused.text)
    assert httpx.get(f"{bridge_url}/sessions").json() == {"sessions": []}


def test_the_bridge_stops_reading_a_body_past_its_limit(bridge_url: str) -> None:
    """A chunked 100 MB body: the answer (413) comes after the first MiB, while the client has
    sent only 2 MiB of it; a bridge that read the whole body first would never answer."""
    host, port = bridge_url.removeprefix("http://").split(":")
    chunk = b"x" * 65_536
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(
            b"POST /sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(32):  # 2 MiB of the announced 100
            sock.sendall(b"10000\r\n" + chunk + b"\r\n")
        answer = b""
        while b'"field"' not in answer:
            received = sock.recv(65_536)
            assert received, answer
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b'"field":"body"' in answer


def test_server_url_policy() -> None:
    assert server_url_allowed("http://127.0.0.1:8765", ())
    assert server_url_allowed("http://[::1]:8765/x", ())
    assert not server_url_allowed("http://10.1.2.3:8765", ())
    allowed = ("https://trainer.lan:8765",)
    assert server_url_allowed("https://trainer.lan:8765", allowed)
    assert not server_url_allowed("http://trainer.lan:8765", allowed)
    assert not server_url_allowed("https://trainer.lan:9999", allowed)
    assert not server_url_allowed("http://127.0.0.1:8765", allowed)  # the list replaces loopback
    assert server_url_allowed("https://a.lan/base/x", ("https://a.lan/base",))
    assert not server_url_allowed("https://a.lan/basement", ("https://a.lan/base",))
    policy = GuardPolicy.for_server("0.0.0.0", ["gpu.lan"], ["http://localhost:*"])
    assert policy.host_allowed("gpu.lan:8766") and not policy.host_allowed("0.0.0.0:8766")
    assert policy.origin_allowed("http://localhost:6274", "127.0.0.1:8765", "http")
    assert not policy.origin_allowed("http://127.0.0.1:6274", "127.0.0.1:8765", "http")
