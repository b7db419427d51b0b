"""The MCP session book's decisions on a given clock (the live replay is in tests/security)."""

from __future__ import annotations

import pytest

from mcp_server.mcp_sessions import SessionBook, SessionLimits


def book(per_client: int = 2, total: int = 3) -> SessionBook:
    return SessionBook(SessionLimits(per_client=per_client, total=total, idle_s=10.0))


def open_one(b: SessionBook, client: str, sid: str, now: float) -> None:
    assert b.refusal(client, now) is None
    b.opened(client, sid)
    b.end(sid, now, gone=False)


def test_a_client_past_its_cap_gets_429_and_others_still_open() -> None:
    b = book()
    open_one(b, "a", "s1", 0.0)
    open_one(b, "a", "s2", 0.0)
    refused = b.refusal("a", 1.0)
    assert refused is not None and refused[0] == 429 and "per-client 2" in refused[1]
    open_one(b, "b", "s3", 1.0)
    full = b.refusal("c", 1.0)
    assert full is not None and full[0] == 503 and "--max-mcp-sessions 3" in full[1]


def test_pending_openings_count_so_concurrent_initializes_cannot_pass_the_cap() -> None:
    b = book()
    assert b.refusal("a", 0.0) is None
    assert b.refusal("a", 0.0) is None  # two initialize requests in flight, not answered yet
    assert b.refusal("a", 0.0) is not None
    b.opened("a", None)  # one failed: nothing opened, its place is free again
    assert b.refusal("a", 0.0) is None


def test_idle_sessions_are_reclaimed_but_not_one_with_a_request_in_flight() -> None:
    b = book(per_client=2, total=10)
    open_one(b, "a", "idle", 0.0)
    open_one(b, "a", "streaming", 0.0)
    assert b.begin("streaming")  # e.g. its GET event stream stays open
    assert b.held("a", 9.9) == 2
    assert b.held("a", 10.0) == 1  # the idle one is gone, the streaming one is not
    b.end("streaming", 50.0, gone=False)
    assert b.held("a", 59.0) == 1 and b.held("a", 60.0) == 0
    assert not b.begin("idle")  # a reclaimed id is no longer booked


def test_a_closed_session_frees_its_place_at_once() -> None:
    b = book(per_client=1)
    open_one(b, "a", "s1", 0.0)
    assert b.refusal("a", 0.0) is not None
    assert b.begin("s1")
    b.end("s1", 0.0, gone=True)
    assert b.refusal("a", 0.0) is None


def test_limits_refuse_a_cap_of_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SessionLimits(per_client=0, total=1, idle_s=1.0)
