"""The live dashboard: one small web app served two ways, as browser pages by the HTTP server
(`routes.py`) and as the MCP App's `ui://` view (`mcp_server/apps.py`), built from the same
`static/` files with the uPlot charting library inlined (`assets.py`)."""

from mcp_server.dashboard.assets import ChartLibrary, load_chart_library, render_page
from mcp_server.dashboard.routes import PAGE_PATHS, PAGE_PREFIXES, dashboard_routes

__all__ = [
    "PAGE_PATHS",
    "PAGE_PREFIXES",
    "ChartLibrary",
    "dashboard_routes",
    "load_chart_library",
    "render_page",
]
