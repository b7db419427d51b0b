"""training-mcp against the MLflow tracking server, side by side, with the same client and loads.

Run: .venv/bin/python bench/mlflow_side_by_side.py [--runs 3] [--skip-mlflow]

MLflow is a baseline here, never a dependency: the first run installs it (pip, from PyPI) into a
throwaway virtual environment under .cache/bench/mlflow-venv, which later runs reuse. Each server
starts fresh on a loopback port with a SQLite store in a temporary directory (`mlflow server` with
1 and with 4 workers; `training-mcp serve --http`) and is stopped before the next starts. The
same clients drive them all over kept-alive connections (httpx; for the 8 concurrent writers a
minimal asyncio HTTP/1.1 client, `_Connection`: httpx's async client cost more CPU a request
than training-mcp's server did): an external run fed by 100 six-metric epoch POSTs, 20,000
points in batches of 1,000, 8 concurrent writers, a 100-point history read,
a 20,000-point history read whole, the same 20,000 sampled to 500 points, the bytes the store
grows by for 100 epochs x 6 metrics, the time from start to healthy and the resident memory. A
keep-alive `GET /health` round trip on each server is the floor a write cannot go below, and a
fresh interpreter importing the libraries training-mcp's server is built on (SQLAlchemy's
asyncio, aiosqlite, pydantic, Starlette, uvicorn) the floor its start cannot go below. Then
training-mcp alone (MLflow has no export): 1,000,000 points streamed whole in each export format
(JSON lines, CSV, Parquet, Arrow); the project's `export` extra is installed into this
environment first when it is missing. Every loop is bounded; a run takes a few minutes, most of
it MLflow starting and installing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_VENV = ROOT / ".cache" / "bench" / "mlflow-venv"
MLFLOW_SPEC = "mlflow>=3"
METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "learning_rate", "grad_norm")
API = "/api/v1"
MLF = "/api/2.0/mlflow"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{response.url}: {response.status_code} {response.text[:300]}")
    return response


# A server that drops a connection without an answer (a loaded machine can make MLflow's workers
# time out and restart) gets the request again, up to twice; every such retry is counted and
# printed with the table, so a figure that needed one says so.
RETRIES: dict[str, int] = {}
_DROPPED = (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError)


class _Retrying(httpx.HTTPTransport):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(3):
            try:
                return super().handle_request(request)
            except _DROPPED:
                if attempt == 2:
                    raise
                RETRIES[self.label] = RETRIES.get(self.label, 0) + 1
        raise AssertionError("unreachable")


class _AsyncRetrying(httpx.AsyncHTTPTransport):
    def __init__(self, label: str, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self.label = label

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(3):
            try:
                return await super().handle_async_request(request)
            except _DROPPED:
                if attempt == 2:
                    raise
                RETRIES[self.label] = RETRIES.get(self.label, 0) + 1
        raise AssertionError("unreachable")


# -- the two APIs behind one client ------------------------------------------------------------


class Api(Protocol):
    """What the workloads need from a tracking server."""

    def new_run(self, http: httpx.Client) -> str: ...
    def log_url(self, run: str) -> str: ...
    def log_headers(self, run: str) -> dict[str, str]: ...
    def log_body(self, run: str, points: list[tuple[str, int, float]]) -> dict[str, Any]: ...
    def history(self, http: httpx.Client, run: str, key: str) -> int: ...
    def sampled(self, http: httpx.Client, run: str, key: str, n: int) -> int: ...
    def health_path(self) -> str: ...


class TrainingMcpApi:
    def __init__(self) -> None:
        self._push: dict[str, dict[str, str]] = {}  # each run's push credential header

    def new_run(self, http: httpx.Client) -> str:
        response = _check(http.post(f"{API}/operations", json={"backend": "external"}))
        run: str = response.json()["operation_id"]
        self._push[run] = {"X-Training-Push-Token": response.json()["push_token"]}
        return run

    def log_headers(self, run: str) -> dict[str, str]:
        return self._push[run]

    def log_url(self, run: str) -> str:
        return f"{API}/operations/{run}/metrics"

    def log_body(self, run: str, points: list[tuple[str, int, float]]) -> dict[str, Any]:
        return {"points": [{"name": k, "step": s, "value": v} for k, s, v in points]}

    def history(self, http: httpx.Client, run: str, key: str) -> int:
        """The whole history, exact: pages of up to 100,000 points, following next_cursor."""
        got, cursor = 0, ""
        while True:
            params: dict[str, str | int] = {"metrics": key, "page_size": 100_000, "cursor": cursor}
            body = _check(http.get(f"{API}/operations/{run}/metrics", params=params)).json()
            got += sum(s["returned_points"] for s in body["series"])
            cursor = str(body["next_cursor"])
            if not body["has_more"]:
                return int(got)

    def sampled(self, http: httpx.Client, run: str, key: str, n: int) -> int:
        params: dict[str, str | int] = {"metrics": key, "max_points": n}
        body = _check(http.get(f"{API}/operations/{run}/metrics", params=params)).json()
        return sum(int(s["returned_points"]) for s in body["series"])

    def health_path(self) -> str:
        return f"{API}/health"


class MlflowApi:
    def __init__(self) -> None:
        self._experiment: str | None = None

    def new_run(self, http: httpx.Client) -> str:
        if self._experiment is None:
            name = f"bench-{time.time_ns()}"
            created = _check(http.post(f"{MLF}/experiments/create", json={"name": name}))
            self._experiment = created.json()["experiment_id"]
        body = {"experiment_id": self._experiment, "start_time": int(time.time() * 1000)}
        run: str = _check(http.post(f"{MLF}/runs/create", json=body)).json()["run"]["info"][
            "run_id"
        ]
        return run

    def log_url(self, run: str) -> str:
        return f"{MLF}/runs/log-batch"

    def log_headers(self, run: str) -> dict[str, str]:
        return {}

    def log_body(self, run: str, points: list[tuple[str, int, float]]) -> dict[str, Any]:
        now = int(time.time() * 1000)
        metrics = [{"key": k, "value": v, "timestamp": now, "step": s} for k, s, v in points]
        return {"run_id": run, "metrics": metrics}

    def history(self, http: httpx.Client, run: str, key: str) -> int:
        got, token = 0, None
        while True:
            params = {"run_id": run, "metric_key": key}
            if token:
                params["page_token"] = token
            body = _check(http.get(f"{MLF}/metrics/get-history", params=params)).json()
            got += len(body.get("metrics", []))
            token = body.get("next_page_token")
            if not token:
                return got

    def sampled(self, http: httpx.Client, run: str, key: str, n: int) -> int:
        # What MLflow's own UI calls for a long curve.
        params: dict[str, str | int] = {"run_ids": run, "metric_key": key, "max_results": n}
        url = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
        return len(_check(http.get(url, params=params)).json().get("metrics", []))

    def health_path(self) -> str:
        return "/health"


# -- the servers -------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    api: Api
    base: str
    process: subprocess.Popen[bytes]
    store: Path
    started_s: float

    def rss_mb(self) -> float:
        """Resident memory of the server and all its worker processes, summed."""
        total, todo = 0, [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += next(
                    int(ln.split()[1]) for ln in status.splitlines() if ln[:6] == "VmRSS:"
                )
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, StopIteration):
                continue
        return total / 1024


def _wait_healthy(base: str, path: str, process: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:  # a benchmark may poll; tests wait on events instead
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.01)  # ~1 % of our start: a 50 ms poll was up to a tenth of it
    raise RuntimeError(f"{base} was not healthy within {limit_s:.0f} s")


@contextmanager
def _serve(label: str, command: list[str], api: Api, store: Path, port: int) -> Iterator[Server]:
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TRAINING_MCP_TOKEN": "", "PYTHONUNBUFFERED": "1"}
    log = store.parent / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            _wait_healthy(base, api.health_path(), process, 180)
        except RuntimeError:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        yield Server(label, api, base, process, store, time.perf_counter() - started)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


# What training-mcp's server is built on (the user fixed these): importing them alone is the floor
# its start cannot go below, as the /health round trip is a request's.
STACK_IMPORT = "import sqlalchemy.ext.asyncio, aiosqlite, pydantic, starlette.applications, uvicorn"


def stack_import_s(n: int = 5) -> float:
    """The median wall time of a fresh interpreter importing `STACK_IMPORT` and exiting."""
    runs = _timed(lambda: subprocess.run([sys.executable, "-c", STACK_IMPORT], check=True), n)
    return _p(runs, 0.5) / 1000


def _training_mcp(tmp: Path) -> Any:
    port = _free_port()
    data = tmp / "training-mcp"
    command = [sys.executable, "-m", "mcp_server.cli", "serve", "--http", "--port", str(port)]
    command += ["--data-dir", str(data), "--log-level", "warning"]
    return _serve("training-mcp", command, TrainingMcpApi(), data / "training-mcp.db", port)


def _mlflow(tmp: Path, workers: int) -> Any:
    port = _free_port()
    data = tmp / f"mlflow-{workers}"
    store = data / "mlflow.db"
    command = [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    command += ["--backend-store-uri", f"sqlite:///{store}"]
    command += ["--default-artifact-root", str(data / "artifacts")]
    label = f"MLflow, {workers} worker{'s' if workers > 1 else ''}"
    return _serve(label, command, MlflowApi(), store, port)


def ensure_mlflow() -> str:
    """MLflow in its own throwaway environment (installed once; never a project dependency)."""
    python = MLFLOW_VENV / "bin" / "python"
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        print(f"installing {MLFLOW_SPEC} into {MLFLOW_VENV} (once) ...", file=sys.stderr)
        shutil.rmtree(MLFLOW_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MLFLOW_SPEC], check=True)
    version = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return version.stdout.strip()


# -- the workloads -----------------------------------------------------------------------------


@dataclass
class Figures:
    label: str
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _epoch(epoch: int) -> list[tuple[str, int, float]]:
    return [(m, epoch, 1.0 / epoch + i) for i, m in enumerate(METRICS)]


def _store_bytes(store: Path) -> int:
    """Bytes of database pages in use (WAL content included: a reader sees committed state)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    return int((pages - free) * size)


class _Connection:
    """One kept-alive HTTP/1.1 connection on asyncio's streams, for the concurrent writers.

    httpx's async client spent ~1.8 ms of CPU a request, twice what the training-mcp server
    spent answering it, so on two CPUs the 8-writer figure measured the client. This one
    writes the request's bytes and reads the answer's (Content-Length or chunked), nothing
    more. A connection the server dropped is opened again and the request sent again, up to
    twice, counted with the other retries."""

    def __init__(self, label: str, base: str) -> None:
        url = httpx.URL(base)
        self.label, self.host, self.port = label, url.host, url.port or 80
        self._streams: tuple[Any, Any] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "Content-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for attempt in range(3):
            try:
                return await self._exchange(request)
            except (OSError, asyncio.IncompleteReadError):
                self._streams = None
                if attempt == 2:
                    raise
                RETRIES[self.label] = RETRIES.get(self.label, 0) + 1
        raise AssertionError("unreachable")

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(request)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        if "content-length" in fields:
            payload = await reader.readexactly(int(fields["content-length"]))
        else:  # chunked
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            payload = b"".join(parts)
        if fields.get("connection", "").lower() == "close":
            writer.close()
            self._streams = None
        return status, payload

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


def _fetch(base: str, path: str) -> tuple[int, bytes]:
    """GET on a plain socket, read to the end (Connection: close), the body de-chunked: httpx's
    iter_raw took ~0.3 s of CPU for the ~94 MB of a 1,000,000-point JSON lines export, as much
    as the server spent writing it."""
    url = httpx.URL(base)
    with socket.create_connection((url.host, url.port or 80)) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        parts = []
        while chunk := sock.recv(1 << 20):
            parts.append(chunk)
    head, _, rest = b"".join(parts).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if not any(ln.lower().startswith("transfer-encoding: chunked") for ln in lines):
        return status, rest
    body: list[bytes] = []
    at = 0
    while True:
        end = rest.index(b"\r\n", at)
        size = int(rest[at:end].split(b";")[0], 16)
        if size == 0:
            return status, b"".join(body)
        body.append(rest[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


async def _writers(server: Server, writers: int, epochs: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    with httpx.Client(base_url=server.base, transport=_Retrying(server.label), timeout=60) as sync:
        runs = [server.api.new_run(sync) for _ in range(writers)]

    async def writer(run: str) -> None:
        http = _Connection(server.label, server.base)
        path, headers = server.api.log_url(run), server.api.log_headers(run)
        try:
            for epoch in range(1, epochs + 1):
                body = json.dumps(server.api.log_body(run, _epoch(epoch))).encode()
                t = time.perf_counter()
                status, payload = await http.post(path, body, headers)
                latencies.append((time.perf_counter() - t) * 1000)
                if status not in (200, 202):
                    raise RuntimeError(f"{server.label} {path}: {status} {payload[:300]!r}")
        finally:
            http.close()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(writer, run)
    elapsed = time.perf_counter() - started
    return writers * epochs / elapsed, latencies


EXPORT_POINTS = 1_000_000
EXPORT_FORMATS = ("jsonl", "csv", "parquet", "arrow")


def ensure_export_extra() -> None:
    """The project's `export` extra (pyarrow, ADBC's SQLite driver) in this environment: the
    server the bench starts runs on it, and the columnar exports need it."""
    if all(importlib.util.find_spec(m) for m in ("pyarrow", "adbc_driver_sqlite")):
        return
    with (ROOT / "pyproject.toml").open("rb") as f:
        wanted = tomllib.load(f)["project"]["optional-dependencies"]["export"]
    print(f"installing the export extra ({', '.join(wanted)}) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *wanted], check=True)


def compile_project() -> None:
    """Bytecode for training-mcp's own packages, as pip writes it for an installed package
    (MLflow's, in its environment, has it): an editable checkout run with
    PYTHONDONTWRITEBYTECODE set, as on these machines, compiled ~100 modules from source at every
    start (~0.25 s of the start-to-healthy figure), which no installed server does."""
    packages = ["mcp_server", "storage", "trainer", "host_bridge", "httpbase", "client"]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(str(ROOT / p) for p in packages)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _export_rates(server: Server, n: int) -> dict[str, float]:
    """Points per second of the whole-history export of an `n`-point metric in each format:
    the time to receive every byte, then the points in it counted (lines, or rows read back
    with pyarrow). First, the server's first export (1,000 points as JSON lines) is timed on its
    own, key `first_ms`: it pays the one-time set-up (importing pyarrow, its allocator's first
    blocks), which is no part of a stream's rate. Each format is then streamed twice: the
    first stream (key `cold_FMT`, printed under the table) also grows the server's memory to
    the size of a 1,000,000-point chunk pipeline; the second is the format's figure."""
    rates = {}
    with httpx.Client(base_url=server.base, transport=_Retrying(server.label), timeout=300) as http:

        def fill(points: int) -> str:
            run = server.api.new_run(http)
            url = server.api.log_url(run)
            for start in range(0, points, 10_000):
                part = [("m", s, math.cos(s)) for s in range(start, min(points, start + 10_000))]
                body = server.api.log_body(run, part)
                _check(http.post(url, json=body, headers=server.api.log_headers(run)))
            return f"{API}/operations/{run}/metrics/export"

        def export(url: str, fmt: str, points: int) -> float:
            started = time.perf_counter()
            status, body = _fetch(server.base, f"{url}?format={fmt}")
            elapsed = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"export as {fmt}: {status} {body[:300]!r}")
            got = _exported_points(body, fmt)
            if got != points:
                raise RuntimeError(f"export as {fmt}: {got} points of {points}")
            return elapsed

        rates["first_ms"] = export(fill(1_000), "jsonl", 1_000) * 1000
        url = fill(n)
        for fmt in EXPORT_FORMATS:  # the second stream: the first grows the server's memory
            rates[f"cold_{fmt}"] = n / export(url, fmt, n)
            rates[fmt] = n / export(url, fmt, n)
    return rates


def _exported_points(body: bytes, fmt: str) -> int:
    if fmt in ("jsonl", "csv"):
        return body.count(b"\n") - (1 if fmt == "csv" else 0)  # CSV's header line
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "arrow":
        return int(pa.ipc.open_stream(body).read_all().num_rows)
    return int(pq.read_metadata(io.BytesIO(body)).num_rows)


def measure(server: Server) -> Figures:
    api, out = server.api, Figures(server.label)
    out.values["start_s"] = server.started_s
    if isinstance(api, TrainingMcpApi):  # measured while the server idles, before its workloads
        out.values["stack_import_s"] = stack_import_s()
    with httpx.Client(base_url=server.base, transport=_Retrying(server.label), timeout=60) as http:
        health = api.health_path()
        _timed(lambda: _check(http.get(health)), 50)
        floor = _timed(lambda: _check(http.get(health)), 300)
        out.values["health_p50"] = _p(floor, 0.5)

        before = _store_bytes(server.store)
        run = api.new_run(http)
        url = api.log_url(run)
        epochs = iter(range(1, 101))
        writes = _timed(
            lambda: _check(
                http.post(
                    url, json=api.log_body(run, _epoch(next(epochs))), headers=api.log_headers(run)
                )
            ),
            100,
        )
        out.values["write_p50"], out.values["write_p99"] = _p(writes, 0.5), _p(writes, 0.99)
        out.values["bytes_100x6"] = _store_bytes(server.store) - before
        reads = _timed(lambda: api.history(http, run, "val_loss"), 200)
        assert api.history(http, run, "val_loss") == 100
        out.values["read100_p50"], out.values["read100_p99"] = _p(reads, 0.5), _p(reads, 0.99)

        big = api.new_run(http)
        big_url = api.log_url(big)
        batches = [
            api.log_body(big, [("m", b * 1000 + i, math.sin(b * 1000 + i)) for i in range(1000)])
            for b in range(20)
        ]
        started = time.perf_counter()
        for body in batches:
            _check(http.post(big_url, json=body, headers=api.log_headers(big)))
        out.values["batch_pts_s"] = 20_000 / (time.perf_counter() - started)

        count = api.history(http, big, "m")
        if count != 20_000:
            raise RuntimeError(f"{server.label}: whole history returned {count} of 20,000")
        whole = _timed(lambda: api.history(http, big, "m"), 10)
        out.values["whole_p50"], out.values["whole_p99"] = _p(whole, 0.5), _p(whole, 0.99)
        sampled_n = api.sampled(http, big, "m", 500)
        sampled = _timed(lambda: api.sampled(http, big, "m", 500), 50)
        out.values["sampled_p50"], out.values["sampled_p99"] = _p(sampled, 0.5), _p(sampled, 0.99)
        out.notes["sampled"] = f"{sampled_n} points"

    rate, latencies = anyio.run(_writers, server, 8, 50)
    out.values["conc_req_s"], out.values["conc_p99"] = rate, _p(latencies, 0.99)
    out.values["rss_mb"] = server.rss_mb()  # after the same workloads on every server
    if isinstance(api, TrainingMcpApi):  # MLflow has no export to compare with
        for fmt, rate in _export_rates(server, EXPORT_POINTS).items():
            out.values[f"export_{fmt}"] = rate
        out.notes["rss_after_export"] = f"{server.rss_mb():,.0f} MB"
        out.notes["cold_exports"] = ", ".join(
            f"{fmt} {out.values[f'export_cold_{fmt}'] / 1e6:.2f}M" for fmt in EXPORT_FORMATS
        )
    return out


# -- the table ---------------------------------------------------------------------------------

# figure, how to show it, key(s), lower is better, goal
ROWS: list[tuple[str, str, tuple[str, ...], bool]] = [
    ("keep-alive /health round trip p50 (the floor)", "{:.2f} ms", ("health_p50",), True),
    ("6-metric epoch write p50 / p99", "{:.2f} / {:.2f} ms", ("write_p50", "write_p99"), True),
    ("batch ingest, 1,000 per request", "{:,.0f} pts/s", ("batch_pts_s",), False),
    ("8 concurrent writers", "{:,.0f} req/s, p99 {:.0f} ms", ("conc_req_s", "conc_p99"), False),
    (
        "read 100-point history p50 / p99",
        "{:.2f} / {:.2f} ms",
        ("read100_p50", "read100_p99"),
        True,
    ),
    (
        "read 20,000-point history whole p50 / p99",
        "{:.1f} / {:.1f} ms",
        ("whole_p50", "whole_p99"),
        True,
    ),
    ("20,000 sampled to 500 p50 / p99", "{:.2f} / {:.2f} ms", ("sampled_p50", "sampled_p99"), True),
    ("bytes per 100 epochs x 6 metrics", "{:,.0f}", ("bytes_100x6",), True),
    ("start to healthy", "{:.2f} s", ("start_s",), True),
    ("importing the stack alone (the floor)", "{:.2f} s", ("stack_import_s",), True),
    ("RSS (server and workers)", "{:,.0f} MB", ("rss_mb",), True),
    *[
        (f"export {EXPORT_POINTS:,} points as {fmt}", "{:,.0f} pts/s", (f"export_{fmt}",), False)
        for fmt in EXPORT_FORMATS
    ],
    (
        "first export of a fresh server (1,000 points, jsonl)",
        "{:.0f} ms",
        ("export_first_ms",),
        True,
    ),
]


# The floors training-mcp is measured against, printed without a ratio to MLflow.
FLOORS = (("health_p50",), ("stack_import_s",))


def _ratio(ours: Figures, theirs: list[Figures], keys: tuple[str, ...], lower: bool) -> str:
    """Against MLflow's better configuration, key by key (a p99 or a latency is lower-better
    even next to a rate)."""
    cells = []
    for n, key in enumerate(keys):
        down = lower or n > 0  # the second key of a rate is its p99 latency
        values = [f.values[key] for f in theirs if key in f.values]
        if not values or ours.values[key] <= 0:
            return "-"
        best = min(values) if down else max(values)
        cells.append(f"{best / ours.values[key] if down else ours.values[key] / best:.1f}x")
    return " / ".join(cells)


def print_table(results: list[Figures], run: int) -> None:
    ours = next(f for f in results if f.label == "training-mcp")
    theirs = [f for f in results if f is not ours]
    header = ["figure", *[f.label for f in theirs], "training-mcp", "ratio vs best MLflow"]
    table = [header]
    for title, fmt, keys, lower in ROWS:
        cells = [
            fmt.format(*(f.values[k] for k in keys)) if keys[0] in f.values else "-"
            for f in [*theirs, ours]
        ]
        ratio = "" if keys in FLOORS else _ratio(ours, theirs, keys, lower)
        table.append([title, *cells, ratio])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print(f"\nrun {run}")
    for n, line in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    floor = ours.values["health_p50"]
    p50, p99 = ours.values["write_p50"], ours.values["write_p99"]
    print(
        f"training-mcp epoch write: p50 {p50 / floor:.2f}x its /health round trip (goal <= 1.5x), "
        f"p99 {p99:.2f} ms (goal <= 3 ms); start to healthy "
        f"{ours.values['start_s'] / ours.values['stack_import_s']:.2f}x importing its stack alone; "
        "sampled answers: "
        + ", ".join(f"{f.label} {f.notes['sampled']}" for f in results)
        + f"; training-mcp's RSS after the exports: {ours.notes['rss_after_export']}; each "
        f"format's first 1,000,000-point stream, points/s: {ours.notes['cold_exports']}"
    )
    if RETRIES:
        print(
            "requests sent again after a dropped connection: "
            + ", ".join(f"{label} {n}" for label, n in sorted(RETRIES.items()))
        )
        RETRIES.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole comparison")
    parser.add_argument("--skip-mlflow", action="store_true", help="only training-mcp")
    args = parser.parse_args()
    ensure_export_extra()
    compile_project()
    version = None if args.skip_mlflow else ensure_mlflow()
    print(f"MLflow {version}, training-mcp at {ROOT}, {os.cpu_count()} CPUs", file=sys.stderr)
    for run in range(1, args.runs + 1):
        results: list[Figures] = []
        with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
            starts = [] if args.skip_mlflow else [lambda t: _mlflow(t, 4), lambda t: _mlflow(t, 1)]
            for start in [*starts, _training_mcp]:
                with start(Path(tmp)) as server:
                    print(f"measuring {server.label} ...", file=sys.stderr)
                    results.append(measure(server))
        print_table(results, run)


if __name__ == "__main__":
    main()
