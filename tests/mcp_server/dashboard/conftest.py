from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mcp_server.dashboard.browser import SCREENSHOTS


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests' screenshots go: docs/ with UPDATE_SCREENSHOTS=1 (the README shows
    them), else the test's temporary folder."""
    return SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
