"""A declared script's process on a thread-based host (the bridge, a Ray actor): real processes.

A script must not outlive its host: once the host is gone (killed -9 included) nothing reports
its end or can stop it, so it would hold its GPU for nothing. Yet it must outlive the thread that
happened to start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from host_bridge.scripts import ScriptProcess
from tests.host_bridge.processes import exits_within

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="prctl's parent-death signal")

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


def test_a_script_dies_with_its_host_killed_9() -> None:
    host = textwrap.dedent(
        f"""
        import os, sys, threading
        from host_bridge.scripts import ScriptProcess
        script = ScriptProcess({SLEEPER!r}, ".", dict(os.environ))
        print(script.pid, flush=True)
        threading.Event().wait()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", host], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        script = int(process.stdout.readline())
        assert not exits_within(script, 0.0), "the script is running"
        process.kill()
        process.wait()
        assert exits_within(script, 10.0), "the script outlived its host"


def test_a_script_outlives_the_thread_that_started_it() -> None:
    box: list[ScriptProcess] = []
    starter = threading.Thread(target=lambda: box.append(ScriptProcess(SLEEPER, ".", os.environ)))
    starter.start()
    starter.join()
    script = box[0]
    script.stop(grace_s=5.0)
    returncode, _tail = script.result()
    # Ended by the stop's SIGINT (Python re-raises an uncaught KeyboardInterrupt's signal, or
    # exits 1 if it is still starting), not by the parent-death SIGTERM its starting thread's
    # end would have sent.
    assert returncode in (-signal.SIGINT, 1), returncode


def test_a_command_that_cannot_start_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        ScriptProcess(["/nonexistent/train"], ".", os.environ)


def test_a_start_that_fails_otherwise_raises_instead_of_waiting_forever() -> None:
    with pytest.raises(ValueError, match="null byte"):
        ScriptProcess([sys.executable, "-c", "pass\x00"], ".", os.environ)
