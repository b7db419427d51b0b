"""The package walls in ARCHITECTURE.md, kept standing by reading every import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"trainer", "storage", "mcp_server", "host_bridge", "httpbase", "training_mcp"}
HEAVY = {"torch", "mcp", "sqlalchemy", "starlette", "matplotlib", "pydantic"}


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("trainer", OURS - {"trainer"} | {"sqlalchemy", "httpx", "starlette", "ray"}),
        # storage may use the metric point's home, `training_mcp.points`.
        ("storage", {"mcp_server", "host_bridge", "httpbase", "torch", "ray"}),
        ("host_bridge", {"storage", "mcp_server", "sqlalchemy"}),
        ("mcp_server", {"torch"}),
        # The light client: httpx and the standard library, nothing else.
        ("client/training_mcp", OURS - {"training_mcp"} | HEAVY),
        # The services' shared HTTP plumbing: starlette and pydantic, nothing of ours.
        ("httpbase", OURS - {"httpbase"} | {"torch", "mcp", "sqlalchemy", "httpx"}),
    ],
)
def test_a_package_imports_nothing_across_its_wall(package: str, forbidden: set[str]) -> None:
    crossings = {f: sorted(names & forbidden) for f, names in _imports(package).items()}
    assert {f: n for f, n in crossings.items() if n} == {}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("mcp_server/core", {"mcp", "starlette", "uvicorn"}),
        ("mcp_server/rest", {"mcp"}),
        ("mcp_server/dashboard", {"mcp"}),
    ],
)
def test_the_core_and_the_rest_door_import_no_other_door(folder: str, forbidden: set[str]) -> None:
    crossings = {f: sorted(names & forbidden) for f, names in _imports(folder).items()}
    assert {f: n for f, n in crossings.items() if n} == {}


def test_the_mcp_door_never_imports_the_rest_door() -> None:
    for name in ("server.py", "subscriptions.py", "prompt_files.py", "apps.py"):
        tree = ast.parse((ROOT / "mcp_server" / name).read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in modules if m.startswith("mcp_server.rest")}, name


def test_the_server_starts_without_importing_torch() -> None:
    code = (
        "import sys, mcp_server.server, mcp_server.app, mcp_server.cli; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_ray_is_imported_only_by_the_ray_worker_and_lazily_by_the_ray_backend() -> None:
    users = {
        f for pkg in ("mcp_server", "host_bridge") for f, n in _imports(pkg).items() if "ray" in n
    }
    assert users == {"host_bridge/ray_worker.py"}
    code = (
        "import sys, mcp_server.server, mcp_server.app, mcp_server.cli, "
        "mcp_server.core.ray_backend, host_bridge.ray_worker; print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_light_client_imports_none_of_the_heavy_libraries() -> None:
    code = "import sys, training_mcp; print(sorted(set(sys.modules) & set(sys.argv[1:])))"
    out = subprocess.run(
        [sys.executable, "-c", code, *sorted(HEAVY | OURS - {"training_mcp"})],
        cwd=ROOT / "client",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_the_http_guard_and_the_budgets_stand_alone() -> None:
    """The guard both HTTP apps share imports nothing of ours; the budgets only the trainer's
    torch-free spec and errors (the server checks them without torch)."""
    guard = _imports("httpbase")[str(Path("httpbase") / "guard.py")]
    assert guard & (OURS | {"torch"}) == set()
    for name in ("budget.py", "checkpoint_budget.py"):
        imported = _imports("trainer")[str(Path("trainer") / name)]
        assert imported & (OURS | {"torch"}) <= {"trainer"}, name


def test_the_script_relay_loads_only_the_standard_library_and_its_log_files() -> None:
    """One relay runs beside every script run (mcp_server/core/relay.py): it must stay small."""
    code = (
        "import sys, mcp_server.core.relay; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in set(sys.argv[1:])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *sorted(HEAVY | OURS | {"httpx", "anyio"})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(ast.literal_eval(out.stdout))
    assert loaded <= {
        "mcp_server",
        "mcp_server.core",
        "mcp_server.core.relay",
        "host_bridge",
        "host_bridge.rotating_log",
    }, loaded
