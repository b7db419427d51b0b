#!/usr/bin/env bash
# Start a server and a GPU host bridge on loopback, train the default demo spec on cuda through the
# bridge, and print every epoch as it arrives at the server, with its throughput.
#
#   scripts/gpu_bridge_check.sh            cuda if the bridge has it; else says so and runs cpu
#   DEVICE=cpu scripts/gpu_bridge_check.sh the cpu path on purpose
#   DEVICE=cuda scripts/gpu_bridge_check.sh cuda or nothing: fails clearly without a GPU
#
# Needs the project installed (pip install -e .): it uses $PYTHON if set, else .venv/bin/python if
# there is one, else python3. Exit status: 0 when the run completed with every epoch stored.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1

if ! "$PYTHON" -c "import torch, mcp, starlette, uvicorn, sqlalchemy, aiosqlite, httpx" 2>/dev/null; then
  echo "gpu_bridge_check: $PYTHON lacks the project's dependencies; run: $PYTHON -m pip install -e ." >&2
  exit 2
fi

exec "$PYTHON" - "${DEVICE:-auto}" <<'PY'
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

wanted = sys.argv[1]
if wanted not in ("auto", "cuda", "cpu"):
    sys.exit(f"gpu_bridge_check: DEVICE must be cuda, cpu or unset, got {wanted!r}")


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gpu_bridge_check: {url} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"gpu_bridge_check: {url} did not answer in 120 s:\n{log.read_text()[-3000:]}")


tmp = Path(tempfile.mkdtemp(prefix="gpu-bridge-check-"))
token = secrets.token_urlsafe(16)
bridge_url, server_url = f"http://127.0.0.1:{port()}", f"http://127.0.0.1:{port()}"
cli = [sys.executable, "-m", "mcp_server.cli"]
commands = {
    "bridge": [*cli, "bridge", "--port", bridge_url.rsplit(":", 1)[1], "--token", token,
               "--data-dir", str(tmp / "bridge"), "--log-level", "WARNING"],
    "server": [*cli, "serve", "--http", "--port", server_url.rsplit(":", 1)[1],
               "--data-dir", str(tmp / "server"), "--bridge", f"{bridge_url}#{token}",
               "--log-level", "WARNING"],
}
procs: dict[str, subprocess.Popen[bytes]] = {}
status = 1
try:
    for name, command in commands.items():
        with (tmp / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait(f"{bridge_url}/health", procs["bridge"], tmp / "bridge.log")
    wait(f"{server_url}/api/v1/health", procs["server"], tmp / "server.log")
    health = httpx.get(f"{bridge_url}/health").json()
    gpus = ", ".join(f"{d['name']} ({d['total_memory_bytes'] / 2**30:.0f} GiB)" for d in health["devices"])
    print(f"bridge {bridge_url}: torch {health['torch_version']}, cuda "
          f"{'yes: ' + gpus if health['cuda_available'] else 'no'}")
    device = wanted
    if wanted == "auto":
        device = "cuda" if health["cuda_available"] else "cpu"
        if device == "cpu":
            print("cuda: not available on this machine; running the cpu path instead")
    body = {"device": device, "backend": "bridge", "name": f"gpu bridge check ({device})"}
    started = httpx.post(f"{server_url}/api/v1/operations", json=body, timeout=30)
    if started.status_code != 202:
        sys.exit(f"gpu_bridge_check: the server refused the run: {started.json()['error']['message']}")
    op = started.json()["operation_id"]
    print(f"server {server_url}: run {op} dispatched to the bridge, device {device}; "
          "the default demo spec (noisy_spirals, MLP 3x256, 20 epochs)")
    print(f"{'epoch':>5} {'arrived s':>9} {'train_loss':>10} {'val_loss':>9} "
          f"{'samples/s':>10} {'epoch s':>8}")
    began = time.monotonic()
    throughputs: list[float] = []
    with httpx.stream("GET", f"{server_url}/api/v1/operations/{op}/events", timeout=None) as events:
        kind = ""
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "epoch":
                e = json.loads(line.removeprefix("data: "))
                v = e["values"]
                val = v.get("val_loss")
                throughputs.append(v["samples_per_s"])
                print(f"{e['epoch']:>5} {time.monotonic() - began:>9.2f} {v['train_loss']:>10.4f} "
                      f"{float('nan') if val is None else val:>9.4f} {v['samples_per_s']:>10.0f} "
                      f"{v['epoch_duration_s']:>8.3f}")
    final = httpx.get(f"{server_url}/api/v1/operations/{op}").json()
    metrics = httpx.get(f"{server_url}/api/v1/operations/{op}/metrics",
                        params={"metrics": "train_loss", "max_points": 10000}).json()
    steps = metrics["series"][0]["steps"] if metrics["series"] else []
    complete = steps == list(range(1, final["epochs_done"] + 1))
    mean = sum(throughputs) / len(throughputs) if throughputs else 0.0
    print(f"{final['status']} on {final['device']}: {final['epochs_done']} epochs in "
          f"{time.monotonic() - began:.1f} s, mean {mean:.0f} samples/s; every epoch stored once: "
          f"{'yes' if complete else 'NO'}" + (f"; error: {final['error']}" if final["error"] else ""))
    status = 0 if final["status"] == "completed" and complete else 1
finally:
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if status == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}", file=sys.stderr)
sys.exit(status)
PY
