"""The dashboard's pages as single self-contained HTML documents.

Everything a page needs is inlined: its own script and style from `static/`, and the uPlot
charting library, which `make setup` installs from npm into `node_modules/` beside this file
(declared in `package.json`, never copied into the repository). A page needs no network beyond
its own server (the browser page) or none at all (the MCP App, whose default CSP forbids it).

When uPlot is missing (npm was not available at set-up) the pages still load, list runs and stop
them, and show a clear message where the charts would be; the server logs the same once.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from training_mcp.points import STEP_LOSS_METRIC

__all__ = ["UPLOT_DIR", "ChartLibrary", "load_chart_library", "render_page"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
UPLOT_DIR = _HERE / "node_modules" / "uplot" / "dist"

PageKind = Literal["browser", "app"]


@dataclass(frozen=True, slots=True)
class ChartLibrary:
    """uPlot's script and style, or why they could not be had."""

    script: str
    style: str
    missing: str | None = None  # a message for the page and the log when not found


@cache
def _cached_library(folder: Path) -> ChartLibrary:
    script, style = folder / "uPlot.iife.min.js", folder / "uPlot.min.css"
    try:
        return ChartLibrary(script.read_text(encoding="utf-8"), style.read_text(encoding="utf-8"))
    except OSError:
        message = (
            f"Charts are unavailable: the uPlot library was not found at {script}. "
            "Run `make setup` (it needs npm) to install it; runs can still be listed and stopped."
        )
        log.warning("dashboard: %s", message)
        return ChartLibrary("", "", missing=message)


def load_chart_library(folder: Path = UPLOT_DIR) -> ChartLibrary:
    """uPlot from `folder` (read once per folder and kept)."""
    return _cached_library(folder.resolve())


def _static(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _script(text: str) -> str:
    # Inline scripts end at the first "</script": keep any such sequence out of the source.
    return "<script>" + text.replace("</script", "<\\/script") + "</script>"


def render_page(kind: PageKind, *, library: ChartLibrary | None = None, title: str) -> str:
    """One HTML document for `kind`: the browser page (REST + event stream) or the MCP App view
    (the host's postMessage protocol)."""
    lib = library if library is not None else load_chart_library()
    config = {"kind": kind, "chartsMissing": lib.missing, "stepMetric": STEP_LOSS_METRIC}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title>",
        "<link rel='icon' href='data:,'>",  # no favicon request
        f"<style>{lib.style}</style>",
        f"<style>{_static('dashboard.css')}</style>",
        "</head><body>",
        _static(f"{kind}.html"),
        _script("window.TM_CONFIG = " + json.dumps(config) + ";"),
        _script(lib.script) if lib.script else "",
        _script(_static("chart.js")),
        _script(_static(f"{kind}.js")),
        "</body></html>",
    ]
    return "".join(parts)
