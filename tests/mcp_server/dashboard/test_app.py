"""The MCP App: the `ui` links on the right tools, the `ui://` resource, the view-only update tool,
and the view itself in Chromium inside a test page that plays the host's side of the protocol
(ui/initialize, tool input and result, the view's tools/call answered by a real MCP client)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent, TextResourceContents

from mcp_server.apps import DASHBOARD_URI
from mcp_server.core.queries import WaitQuery
from mcp_server.core.service import TrainingService
from storage import MetricPointIn, OperationStatus
from tests.mcp_server.conftest import TINY
from tests.mcp_server.dashboard.browser import chromium, needs_browser

pytestmark = pytest.mark.anyio

APP_MIME = "text/html;profile=mcp-app"
LONG = {"dataset": "blobs", "epochs": 20_000, "hidden_sizes": [16], "batch_size": 64}


def _text(block: object) -> str:
    assert isinstance(block, TextContent | TextResourceContents)
    return block.text


async def _run(client: Client, args: dict[str, Any]) -> str:
    started = await client.call_tool("start_training", args)
    assert started.structured_content is not None
    operation_id: str = started.structured_content["operation_id"]
    return operation_id


async def test_tools_list_links_the_dashboard_from_show_training_plot_metrics_and_the_view_tool(
    client: Client,
) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    linked = {name: t.meta["ui"] for name, t in tools.items() if t.meta and "ui" in t.meta}
    assert linked == {
        "show_training": {"resourceUri": DASHBOARD_URI},
        "plot_metrics": {"resourceUri": DASHBOARD_URI},
        "dashboard_updates": {"resourceUri": DASHBOARD_URI, "visibility": ["app"]},
    }
    assert tools["show_training"].annotations is not None
    assert tools["show_training"].annotations.read_only_hint is True


async def test_resources_read_returns_the_app_inline_with_its_mime_type_and_default_csp(
    client: Client,
) -> None:
    listed = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert listed[DASHBOARD_URI].mime_type == APP_MIME
    read = await client.read_resource(DASHBOARD_URI)
    (content,) = read.contents
    assert content.mime_type == APP_MIME
    assert content.meta == {"ui": {"csp": {}, "prefersBorder": True}}
    html: str = _text(content)
    assert html.startswith("<!doctype html>")
    assert "ui/initialize" in html and "uPlot" in html
    # Everything inline: the only URL an element names is the empty data: favicon.
    urls = re.findall(r"<[a-z]+\s[^>]*?(?:src|href)=['\"]([^'\"]*)", html)
    assert urls == ["data:,"]


async def test_show_training_answers_hosts_without_apps_with_one_line_per_run(
    client: Client, service: TrainingService
) -> None:
    first = await _run(client, TINY)
    second = await _run(client, {**TINY, "hidden_sizes": [32]})
    for oid in (first, second):
        await service.wait_for_operation(oid, WaitQuery(until="end", timeout_s=30))
    shown = await client.call_tool("show_training", {"operation_ids": [first, second]})
    assert not shown.is_error
    (text,) = shown.content
    lines = _text(text).splitlines()
    assert lines[0].startswith(f"{first} ") and "completed, epoch 3/3; best val_loss" in lines[0]
    assert lines[1].startswith(f"{second} ")
    assert lines[2] == "differs in: model.hidden_sizes"
    data = shown.structured_content
    assert data is not None and data["active"] is False
    assert [r["metrics"]["operation_id"] for r in data["runs"]] == [first, second]
    assert {s["name"] for s in data["runs"][0]["metrics"]["series"]} >= {"train_loss", "val_loss"}

    missing = await client.call_tool("show_training", {"operation_ids": ["op-nope"]})
    assert missing.is_error
    assert "op-nope" in _text(missing.content[0])


async def test_dashboard_updates_returns_only_what_is_past_the_cursor_downsampled(
    client: Client, service: TrainingService
) -> None:
    # 20,000 epochs here (the page's test draws 100,000): enough to show the downsampling.
    started = await client.call_tool(
        "start_training", {"backend": "external", "name": "long", "epochs": 20_000}
    )
    assert started.structured_content is not None
    oid = started.structured_content["operation_id"]
    for begin in range(1, 20_001, 10_000):
        await service.push_metrics(
            oid,
            [
                MetricPointIn(name="val_loss", step=s, value=1 / s)
                for s in range(begin, begin + 10_000)
            ],
        )
    whole = await client.call_tool("dashboard_updates", {"operation_ids": [oid]})
    assert whole.structured_content is not None
    (run,) = whole.structured_content["runs"]
    (series,) = run["metrics"]["series"]
    assert series["total_points"] == 20_000 and series["returned_points"] <= 500
    assert series["steps"][-1] == 20_000
    assert len(json.dumps(whole.structured_content)) < 40_000

    await service.push_metrics(oid, [MetricPointIn(name="val_loss", step=20_001, value=0.5)])
    cursor = run["metrics"]["next_cursor"]
    new = await client.call_tool(
        "dashboard_updates", {"operation_ids": [oid], "cursors": {oid: cursor}}
    )
    assert new.structured_content is not None
    (series,) = new.structured_content["runs"][0]["metrics"]["series"]
    assert (series["steps"], series["values"]) == ([20_001], [0.5])

    wrong = await client.call_tool(
        "dashboard_updates", {"operation_ids": [oid], "cursors": {"op-other": "e1"}}
    )
    assert wrong.is_error and "cursors" in _text(wrong.content[0])


# The host's side of the protocol, as a page: the view in a sandboxed frame (as hosts do), its
# requests answered here; tools/call goes to the Python side (a real MCP client) through
# window.callServerTool.
HOST_PAGE = """<!doctype html><html><body style="margin:0">
<iframe id="view" sandbox="allow-scripts" style="width:980px;height:720px;border:0"></iframe>
<script>
const frame = document.getElementById("view");
window.host = { log: [], sizes: [], calls: [], ready: false };
function send(message) {
  frame.contentWindow.postMessage(Object.assign({jsonrpc: "2.0"}, message), "*");
}
window.deliver = (method, params) => send({ method: method, params: params });
const answers = new Map();
window.ask = (method, params) => new Promise(resolve => {
  const id = "host-" + (answers.size + 1);
  answers.set(id, resolve);
  send({ id: id, method: method, params: params });
});
window.addEventListener("message", async (event) => {
  if (event.source !== frame.contentWindow) return;
  const m = event.data;
  window.host.log.push(m.method || "response");
  if (!m.method && answers.has(m.id)) {
    answers.get(m.id)(m);
  } else if (m.method === "ui/initialize") {
    send({ id: m.id, result: { protocolVersion: "2026-01-26",
      hostInfo: { name: "test host", version: "1" },
      hostCapabilities: { serverTools: {} },
      hostContext: { theme: "light", displayMode: "inline" } } });
  } else if (m.method === "ui/notifications/initialized") {
    window.host.ready = true;
  } else if (m.method === "ui/notifications/size-changed") {
    window.host.sizes.push(m.params);
  } else if (m.method === "tools/call") {
    window.host.calls.push(m.params.name);
    const args = JSON.stringify(m.params.arguments || {});
    const result = JSON.parse(await window.callServerTool(m.params.name, args));
    send({ id: m.id, result: result });
  }
});
</script></body></html>"""


@needs_browser
async def test_the_app_renders_a_tool_result_keeps_it_live_and_its_stop_reaches_the_server(
    client: Client, service: TrainingService, screenshots: Path
) -> None:
    done = await _run(client, {**TINY, "name": "finished"})
    await service.wait_for_operation(done, WaitQuery(until="end", timeout_s=30))
    running = await _run(client, {**LONG, "name": "training"})
    read = await client.read_resource(DASHBOARD_URI)
    app_html = _text(read.contents[0])

    async def call_server_tool(name: str, arguments: str) -> str:
        result = await client.call_tool(name, json.loads(arguments))
        return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    async with chromium() as browser:
        page = browser.page
        await page.expose_function("callServerTool", call_server_tool)
        await page.set_content(HOST_PAGE)
        await page.evaluate(
            "(html) => { document.getElementById('view').srcdoc = html; }", app_html
        )
        await page.wait_for_function("() => window.host.ready")
        view = page.frames[1]

        ids = [done, running]
        await service.wait_for_operation(running, WaitQuery(until="epochs", epochs=2, timeout_s=30))
        shown = await client.call_tool("show_training", {"operation_ids": ids})
        result = shown.model_dump(mode="json", by_alias=True, exclude_none=True)
        await page.evaluate(
            "([ids, result]) => { deliver('ui/notifications/tool-input',"
            " { arguments: { operation_ids: ids } });"
            " deliver('ui/notifications/tool-result', result); }",
            [ids, result],
        )
        await view.wait_for_selector(f"#runs tr[data-run={done}] .status-completed")
        await view.wait_for_function(
            "(id) => window.TM.dashboard.drawnPoints(id, 'val_loss') >= 3", arg=done
        )
        drawn = await view.evaluate("() => window.TM.dashboard.curves.drawn")
        assert {line["run"] for line in drawn["lines"]} == {done, running}
        assert done in {m["run"] for m in drawn["markers"]}
        # Only the metrics the view was given are offered (not every name the run stored).
        offered = await view.eval_on_selector_all(
            "#metric-toggles input", "(boxes) => boxes.map(b => b.value)"
        )
        assert set(offered) <= {
            "train_loss",
            "val_loss",
            "train_accuracy",
            "val_accuracy",
            "learning_rate",
        }
        assert {"train_loss", "val_loss"} <= set(offered)
        first = await view.evaluate(
            "(id) => window.TM.dashboard.drawnPoints(id, 'val_loss')", running
        )
        # Live: the view polls the view-only tool through the host and its curve grows.
        await view.wait_for_function(
            "([id, n]) => window.TM.dashboard.drawnPoints(id, 'val_loss') > n", arg=[running, first]
        )
        assert "dashboard_updates" in await page.evaluate("() => window.host.calls")
        assert await page.evaluate("() => window.host.sizes.length") >= 1
        await view.wait_for_selector("#differences table")
        await page.screenshot(path=str(screenshots / "mcp-app.png"))

        await view.click(f"button.stop[data-run={running}]")
        await view.wait_for_selector(f"#runs tr[data-run={running}] .status-cancelled")
        op = await service.get_operation(running)
        assert op.status is OperationStatus.CANCELLED
        assert op.reason == "stopped from the dashboard"
        assert "stop_training" in await page.evaluate("() => window.host.calls")


@needs_browser
async def test_the_app_draws_the_curves_of_a_plot_metrics_call(
    client: Client, service: TrainingService
) -> None:
    oid = await _run(client, TINY)
    await service.wait_for_operation(oid, WaitQuery(until="end", timeout_s=30))
    read = await client.read_resource(DASHBOARD_URI)

    async def call_server_tool(name: str, arguments: str) -> str:
        result = await client.call_tool(name, json.loads(arguments))
        return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    async with chromium() as browser:
        page = browser.page
        await page.expose_function("callServerTool", call_server_tool)
        await page.set_content(HOST_PAGE)
        await page.evaluate(
            "(html) => { document.getElementById('view').srcdoc = html; }",
            _text(read.contents[0]),
        )
        await page.wait_for_function("() => window.host.ready")
        plotted = await client.call_tool("plot_metrics", {"operation_ids": [oid]})
        assert [c.type for c in plotted.content] == ["text", "image"]  # hosts without Apps
        await page.evaluate(
            "([ids, result]) => { deliver('ui/notifications/tool-input',"
            " { arguments: { operation_ids: ids } });"
            " deliver('ui/notifications/tool-result', result); }",
            [[oid], plotted.model_dump(mode="json", by_alias=True, exclude_none=True)],
        )
        view = page.frames[1]
        await view.wait_for_function(
            "(id) => window.TM.dashboard.drawnPoints(id, 'val_loss') === 3", arg=oid
        )
        assert await page.evaluate("() => window.host.calls") == ["dashboard_updates"]
        # The host changes the theme, then tears the view down: the view answers.
        await page.evaluate(
            "() => deliver('ui/notifications/host-context-changed', {theme: 'dark'})"
        )
        await view.wait_for_function("() => document.documentElement.classList.contains('dark')")
        answer = await page.evaluate("() => ask('ui/resource-teardown', {})")
        assert answer == {"jsonrpc": "2.0", "id": "host-1", "result": {}}
