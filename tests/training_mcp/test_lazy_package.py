"""`import training_mcp` stays light (the server imports it for `training_mcp.points` at every
start): the reporter and the run, which need httpx, load on first use, and every public name
resolves to the same object as its module's."""

from __future__ import annotations

import importlib
import subprocess
import sys

import training_mcp


def test_every_public_name_resolves_to_its_modules_object() -> None:
    modules = [
        importlib.import_module(f"training_mcp.{m}")
        for m in ("history", "reporter", "run", "checkpoints")
    ]
    modules.append(importlib.import_module("training_mcp.points"))
    for name in training_mcp.__all__:
        value = getattr(training_mcp, name)
        assert any(getattr(m, name, None) is value for m in modules), name
    assert callable(training_mcp.history)  # the function, not its module of the same name


def test_importing_the_package_does_not_import_httpx() -> None:
    script = "import sys, training_mcp.points; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
