"""The dashboard's HTTP side without a browser: the pages (open, strict CSP, one self-contained
document), the compare route they read, and what the pages say when uPlot is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mcp_server.core.queries import WaitQuery
from mcp_server.core.service import TrainingService
from mcp_server.dashboard import load_chart_library, render_page
from tests.mcp_server.conftest import TINY
from tests.mcp_server.rest.support import asgi_client

pytestmark = pytest.mark.anyio

TOKEN = "page-token"


async def test_the_pages_are_served_without_the_token_but_their_data_is_not(
    service: TrainingService,
) -> None:
    async with asgi_client(service, token=TOKEN) as http:
        for path in ("/", "/runs/op-anything"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            assert "window.TM_CONFIG" in page.text and "token-form" in page.text
        assert (await http.get("/api/v1/operations")).status_code == 401
        assert (await http.get("/runs")).status_code == 401  # only the page paths are open
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/v1/operations", headers=auth)).status_code == 200


async def test_compare_returns_the_spec_differences_and_names_a_bad_field(
    service: TrainingService,
) -> None:
    async with asgi_client(service) as http:
        ids = []
        for sizes in ([16], [32]):
            started = await http.post("/api/v1/operations", json={**TINY, "hidden_sizes": sizes})
            ids.append(started.json()["operation_id"])
        for oid in ids:
            await service.wait_for_operation(oid, WaitQuery(until="end", timeout_s=30))
        compared = await http.get("/api/v1/compare", params={"operation_ids": ",".join(ids)})
        assert compared.status_code == 200, compared.text
        (difference,) = compared.json()["differences"]
        assert difference == {
            "path": "model.hidden_sizes",
            "values": {ids[0]: [16], ids[1]: [32]},
        }
        one = await http.get("/api/v1/compare", params={"operation_ids": ids[0]})
        assert one.status_code == 422
        assert one.json()["error"]["field"] == "operation_ids"
        unknown = await http.get("/api/v1/compare", params={"operation_ids": f"{ids[0]},op-x"})
        assert unknown.status_code == 404


def test_without_uplot_the_pages_say_so_and_the_log_says_where_it_was_looked_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mcp_server.dashboard.assets"):
        library = load_chart_library(tmp_path / "nowhere")
    assert library.missing is not None and "make setup" in library.missing
    assert str(tmp_path / "nowhere") in caplog.text
    for kind in ("browser", "app"):
        html = render_page(kind, library=library, title="t")
        assert library.missing in html  # shown where the charts would be
        assert "window.TM_CONFIG" in html


def test_the_installed_uplot_is_inlined_whole() -> None:
    library = load_chart_library()
    if library.missing:
        pytest.skip(library.missing)
    html = render_page("app", library=library, title="t")
    assert library.script in html and len(library.script) > 40_000
    assert "</script" not in library.script  # nothing could end the inline script early
