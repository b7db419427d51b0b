"""The browser dashboard against a real server on loopback, in headless Chromium: runs listed,
curves growing while a real run trains, smoothing, overlays, stop with and without the token,
long runs drawn from downsampled reads, and no request beyond loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.core.queries import MetricsQuery, WaitQuery
from mcp_server.core.service import TrainingService
from storage import MetricPointIn, OperationStatus
from tests.mcp_server.conftest import TINY
from tests.mcp_server.dashboard.browser import chromium, needs_browser
from tests.mcp_server.rest.support import live_server

pytestmark = [pytest.mark.anyio, needs_browser]

# Trains for far longer than any test waits: the tests stop it.
LONG = {"dataset": "blobs", "epochs": 20_000, "hidden_sizes": [16], "batch_size": 64}


PUSH_TOKENS: dict[str, str | None] = {}  # external runs' push credentials


async def _start(base: str, body: dict[str, Any], token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        started = await http.post("/api/v1/operations", json=body)
        assert started.status_code == 202, started.text
        operation_id: str = started.json()["operation_id"]
        PUSH_TOKENS[operation_id] = started.json()["push_token"]
        return operation_id


async def _points(page: Any, operation_id: str, metric: str = "val_loss") -> int:
    count: int = await page.evaluate(
        "([id, m]) => window.TM.dashboard.drawnPoints(id, m)", [operation_id, metric]
    )
    return count


async def _wait_points(page: Any, operation_id: str, more_than: int) -> None:
    await page.wait_for_function(
        "([id, n]) => window.TM.dashboard.drawnPoints(id, 'val_loss') > n",
        arg=[operation_id, more_than],
    )


async def test_the_page_lists_runs_and_its_curve_grows_while_a_real_run_trains_until_stopped(
    service: TrainingService,
) -> None:
    async with live_server(service) as base, chromium() as browser:
        done = await _start(base, TINY)
        await service.wait_for_operation(done, WaitQuery(until="end", timeout_s=30))
        running = await _start(base, LONG)
        page = browser.page
        await page.goto(f"{base}/runs/{running}")
        await page.wait_for_selector(f"#runs tr[data-run={done}] .status-completed")
        await page.wait_for_selector(f"#runs tr[data-run={running}] .status-running")
        assert await page.locator("#runs tbody tr").count() == 2

        await _wait_points(page, running, 2)
        seen = await _points(page, running)
        await _wait_points(page, running, seen + 2)  # epochs arrive through the event stream

        # Smoothing changes the drawn line (the raw points stay as stored).
        drawn = "(id) => window.TM.dashboard.curves.drawn.lines.find(l => l.run === id).values"
        await page.fill("#smoothing", "0")
        await page.wait_for_function("() => window.TM.dashboard.weight === 0")
        await page.wait_for_function(
            "(id) => { const l = window.TM.dashboard.curves.drawn.lines.find(l => l.run === id);"
            " return l && l.values.every((v, i) => v === l.raw[i]); }",
            arg=running,
        )
        raw = await page.evaluate(drawn, running)
        await page.fill("#smoothing", "0.9")
        await page.wait_for_function("() => window.TM.dashboard.weight === 0.9")
        await page.wait_for_function(
            "(id) => { const l = window.TM.dashboard.curves.drawn.lines.find(l => l.run === id);"
            " return l && l.values.some((v, i) => v !== null && v !== l.raw[i]); }",
            arg=running,
        )
        smooth = await page.evaluate(drawn, running)
        assert smooth[: len(raw)] != raw
        assert smooth[0] == raw[0]  # debiased: the first point is the value itself

        await page.click(f"button.stop[data-run={running}]")
        await page.wait_for_selector(f"#runs tr[data-run={running}] .status-cancelled")
        op = await service.get_operation(running)
        assert op.status is OperationStatus.CANCELLED
        assert op.reason == "stopped from the dashboard"
        assert await page.locator("#message").text_content() == f"Stopped {running}."


async def test_two_runs_overlay_with_their_best_epochs_and_spec_differences(
    service: TrainingService, screenshots: Path
) -> None:
    async with live_server(service) as base, chromium() as browser:
        first = await _start(base, {**TINY, "epochs": 6, "name": "narrow"})
        second = await _start(base, {**TINY, "epochs": 6, "hidden_sizes": [64, 64], "name": "wide"})
        for oid in (first, second):
            await service.wait_for_operation(oid, WaitQuery(until="end", timeout_s=30))
        page = browser.page
        await page.goto(f"{base}/runs/{first}")
        await _wait_points(page, first, 5)
        await page.check(f"#runs tr[data-run={second}] input[type=checkbox]")
        await _wait_points(page, second, 5)
        await page.wait_for_selector("#differences table")

        drawn = await page.evaluate("() => window.TM.dashboard.curves.drawn")
        lines = {(line["run"], line["metric"]) for line in drawn["lines"]}
        assert lines == {(r, m) for r in (first, second) for m in ("train_loss", "val_loss")}
        marked = {m["run"]: m["step"] for m in drawn["markers"]}
        for oid in (first, second):
            analysis = await service.analyze(oid)
            assert marked[oid] == analysis.best_epoch
        differences = await page.locator("#differences tbody tr").all_text_contents()
        assert any("model.hidden_sizes" in row and "[64,64]" in row for row in differences)
        assert await page.locator("canvas").count() >= 1
        offered = await page.eval_on_selector_all(
            "#metric-toggles input", "(boxes) => boxes.map(b => b.value)"
        )
        assert {"train_loss", "val_loss", "grad_norm", "learning_rate"} <= set(offered)
        await page.screenshot(path=str(screenshots / "dashboard.png"))


async def test_the_stop_button_needs_the_token_and_the_token_stays_in_the_tab(
    service: TrainingService,
) -> None:
    token = "dashboard-secret"
    async with live_server(service, token=token) as base, chromium() as browser:
        running = await _start(base, LONG, token)
        page = browser.page
        await page.goto(base + "/")
        await page.wait_for_selector("#token-form:not([hidden])")
        assert await page.locator("#runs tbody tr").count() == 0  # nothing without the token

        await page.fill("#token", token)
        await page.click("#token-form button[type=submit]")
        await page.wait_for_selector(f"#runs tr[data-run={running}] .status-running")
        stored = await page.evaluate(
            "() => [sessionStorage.getItem('training-mcp-token'), localStorage.length]"
        )
        assert stored == [token, 0]

        await page.click("#forget-token")  # now the page has no token: stop is refused
        await page.click(f"button.stop[data-run={running}]")
        await page.wait_for_selector("#message.error")
        assert "Stop refused" in (await page.locator("#message").text_content() or "")
        assert (await service.get_operation(running)).status is OperationStatus.RUNNING

        await page.fill("#token", token)
        await page.click("#token-form button[type=submit]")
        await page.click(f"button.stop[data-run={running}]")
        await page.wait_for_selector(f"#runs tr[data-run={running}] .status-cancelled")
        assert (await service.get_operation(running)).status is OperationStatus.CANCELLED


async def test_a_100000_epoch_run_is_drawn_from_a_downsampled_read(
    service: TrainingService,
) -> None:
    async with live_server(service) as base, chromium() as browser:
        oid = await _start(base, {"backend": "external", "name": "long", "epochs": 100_000})
        for start in range(1, 100_001, 10_000):
            points = [
                MetricPointIn(name="val_loss", step=s, value=1.0 / s)
                for s in range(start, start + 10_000)
            ]
            await service.push_metrics(oid, points)
        page = browser.page
        sizes: list[int] = []
        read = anyio.Event()

        async def on_response(response: Any) -> None:
            if "/metrics?" in response.url and "metrics=all" in response.url:
                sizes.append(len(await response.body()))
                read.set()

        page.on("response", on_response)
        await page.goto(f"{base}/runs/{oid}")
        await _wait_points(page, oid, 100)
        drawn = await page.evaluate("() => window.TM.dashboard.curves.drawn.xs")
        assert 100 < len(drawn) <= 500
        assert drawn[-1] == 100_000
        with anyio.fail_after(10):
            await read.wait()  # the response handler runs as a task of its own
        assert sizes[0] < 30_000  # bytes: 500 points, not 100,000
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post(
                f"/api/v1/operations/{oid}/status",
                json={"status": "completed"},
                headers={PUSH_TOKEN_HEADER: PUSH_TOKENS[oid] or ""},
            )


async def test_the_per_step_loss_is_drawn_on_request(service: TrainingService) -> None:
    async with live_server(service) as base, chromium() as browser:
        oid = await _start(base, {**TINY, "log_every_n_steps": 1})
        await service.wait_for_operation(oid, WaitQuery(until="end", timeout_s=30))
        stored = await service.get_metrics(
            oid, MetricsQuery(metrics=["step/train_loss"], max_points=1000)
        )
        (steps,) = stored.series
        page = browser.page
        await page.goto(f"{base}/runs/{oid}")
        await _wait_points(page, oid, 2)
        assert await page.locator("#steps-chart").is_hidden()
        await page.check("#show-steps")
        # Drawing happens on the next animation frame after the data arrives: wait for it.
        await page.wait_for_function(
            "() => { const d = window.TM.dashboard.stepCurves.drawn; return d && d.xs.length > 0; }"
        )
        drawn = await page.evaluate("() => window.TM.dashboard.stepCurves.drawn")
        assert drawn["xs"] == steps.steps  # every stored step, on its own axis
        assert [line["metric"] for line in drawn["lines"]] == ["step/train_loss"]
        assert await page.locator("#steps-chart canvas").count() == 1


async def test_system_metrics_are_drawn_on_request_in_a_chart_per_unit(
    service: TrainingService,
) -> None:
    async with live_server(service) as base, chromium() as browser:
        oid = await _start(base, {"backend": "external", "name": "gpu run", "epochs": 3})
        t0 = 1_764_633_600_000  # a sample's step is its time in ms
        samples = {"cpu_percent": 97.5, "gpu_util": 88.0, "rss_mb": 812.4}
        points = [MetricPointIn(name="val_loss", step=e, value=1.0 / e) for e in (1, 2, 3)]
        points += [
            MetricPointIn(name=f"system/{name}", step=t0 + 10_000 * i, value=value + i)
            for name, value in samples.items()
            for i in range(3)
        ]
        await service.push_metrics(oid, points)
        page = browser.page
        await page.goto(f"{base}/runs/{oid}")
        await _wait_points(page, oid, 2)
        assert await page.locator("#system").is_hidden()
        toggles = await page.locator("#metric-toggles input").evaluate_all(
            "boxes => boxes.map(b => b.value)"
        )
        assert not [name for name in toggles if name.startswith("system/")], toggles
        await page.check("#show-system")
        await page.wait_for_function(
            "() => { const c = window.TM.dashboard.systemCurves;"
            " return c.mb.drawn && c.mb.drawn.xs.length > 0; }"
        )
        drawn = await page.evaluate(
            "() => Object.fromEntries(Object.entries(window.TM.dashboard.systemCurves)"
            ".map(([unit, c]) => [unit, c.drawn]))"
        )
        assert [line["metric"] for line in drawn["percent"]["lines"]] == [
            "system/cpu_percent",
            "system/gpu_util",
        ]
        assert [line["metric"] for line in drawn["mb"]["lines"]] == ["system/rss_mb"]
        assert drawn["mb"]["xs"] == [0, 10, 20]  # seconds since the run's first sample
        assert drawn["mb"]["lines"][0]["values"] == [812.4, 813.4, 814.4]  # unsmoothed
        assert await page.locator("#system canvas").count() == 2
        legend = await page.locator("#system-mb-legend").inner_text()
        assert legend.strip() == "gpu run rss_mb", legend
