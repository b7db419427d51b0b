"""The light client is a distribution of its own: it builds from client/ alone, holds only the
`training_mcp` package and needs only httpx."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_builds_alone_into_a_wheel_that_needs_only_httpx(tmp_path: Path) -> None:
    source = tmp_path / "client"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = Parser().parsestr(
            archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
        )
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"training_mcp"}
    assert {"training_mcp/points.py", "training_mcp/run.py", "training_mcp/py.typed"} <= set(names)
    assert metadata["Name"] == "training-mcp-client"
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert required == ["httpx>=0.27"]
    assert set(metadata.get_all("Provides-Extra") or []) == {"lightning", "transformers", "gpu"}
