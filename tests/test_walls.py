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
        # trainer may use the checkpoint index's home, `training_mcp.checkpoint_index` (below).
        (
            "trainer",
            OURS - {"trainer", "training_mcp"} | {"sqlalchemy", "httpx", "starlette", "ray"},
        ),
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
    # The client saves a torch state with torch.save where the script has torch (below).
    crossings.pop(str(Path("client/training_mcp/checkpoints.py")), None)
    assert {f: n for f, n in crossings.items() if n} == {}


def test_the_clients_checkpoints_import_torch_only_to_save_or_load_a_torch_state() -> None:
    path = ROOT / "client/training_mcp/checkpoints.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)} | {
        a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names
    }
    assert {m.split(".")[0] for m in top} & (HEAVY | OURS - {"training_mcp"}) == set()
    assert _imports("client/training_mcp")[str(path.relative_to(ROOT))] & HEAVY == {"torch"}
    code = "import sys, training_mcp.run, training_mcp.checkpoints; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "client", capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def _modules(path: Path) -> set[str]:
    """Every module `path` imports, by its full name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_trainer_uses_of_the_client_only_the_checkpoint_index() -> None:
    """One index format for the trainer's checkpoints and a script's: the client's module, on
    the standard library alone (so the trainer takes in no httpx)."""
    used = {m for p in (ROOT / "trainer").rglob("*.py") for m in _modules(p) if "training_mcp" in m}
    assert used == {"training_mcp.checkpoint_index"}
    index = _modules(ROOT / "client/training_mcp/checkpoint_index.py")
    assert {m.split(".")[0] for m in index} <= set(sys.stdlib_module_names) | {"__future__"}


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
