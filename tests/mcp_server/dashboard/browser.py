"""Headless Debian Chromium driven by Playwright (never `playwright install`), every request the
page makes recorded, and the browser closed whatever happens."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mcp_server.dashboard.assets import UPLOT_DIR, load_chart_library

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
# Nothing but loopback resolves, and Chromium's own background traffic is off.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs"

try:
    from playwright.async_api import Page, async_playwright
except ImportError:  # the optional `browser` extra
    PLAYWRIGHT = False
else:
    PLAYWRIGHT = True

needs_browser = pytest.mark.skipif(
    not PLAYWRIGHT or not CHROMIUM.exists() or load_chart_library().missing is not None,
    reason="browser tests need the `browser` extra (playwright), Debian's chromium "
    f"(apt-get install chromium) and uPlot under {UPLOT_DIR} (make setup, with npm)",
)


@dataclass
class Browser:
    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def off_loopback(self) -> list[str]:
        """Every request that went (or tried to go) anywhere but loopback."""
        allowed = {"127.0.0.1", "localhost", "[::1]"}
        return [
            url
            for url in self.requests
            if not url.startswith(("about:", "data:", "blob:"))
            and urlsplit(url).hostname not in allowed
        ]


@asynccontextmanager
async def chromium(width: int = 1100, height: int = 760) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            page.set_default_timeout(20_000)
            seen = Browser(page)
            context.on("request", lambda r: seen.requests.append(r.url))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            yield seen
            assert seen.errors == []
            assert seen.off_loopback() == []
        finally:
            await browser.close()
