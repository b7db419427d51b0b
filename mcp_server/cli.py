"""`training-mcp`: the command line. The only place that reads the environment.

training-mcp serve                      MCP over stdio (what Claude Desktop launches)
training-mcp serve --http --port 8765   MCP at /mcp and the REST mirror at /api/v1
training-mcp bridge --token T           a GPU host bridge on 127.0.0.1:8766 (see README)
training-mcp delete OP_ID...            delete ended runs, their metrics, checkpoints and logs
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio

from host_bridge.entry_points import MAX_GRACE_S
from mcp_server.config import BridgeTarget, Secret, ServerConfig
from trainer.budget import ResourceLimits
from trainer.checkpoint_budget import CheckpointBudget
from training_mcp.system import DEFAULT_INTERVAL_S

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("training_mcp")


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in ("1", "true", "yes", "on")


def _bridge(value: str) -> BridgeTarget:
    """`URL` or `URL#TOKEN`."""
    url, _, token = value.partition("#")
    return BridgeTarget(url=url.rstrip("/"), token=Secret(token) if token else None)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="training-mcp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the MCP server (stdio, or HTTP with --http)")
    serve.add_argument("--http", action="store_true", help="serve HTTP instead of stdio")
    serve.add_argument(
        "--entry-points",
        type=Path,
        default=None,
        metavar="FILE",
        help="a TOML file declaring your own training scripts, which start_training("
        "entry_point=...) runs; they push metrics over HTTP, so serve with --http",
    )
    serve.add_argument("--host", default=env.get("TRAINING_MCP_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env.get("TRAINING_MCP_PORT", "8765")))
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("TRAINING_MCP_DATA_DIR", str(Path.home() / ".training-mcp"))),
        help="database, checkpoints (env TRAINING_MCP_DATA_DIR)",
    )
    serve.add_argument(
        "--db",
        default=env.get("TRAINING_MCP_DB"),
        help="SQLAlchemy URL, default a SQLite file in the data dir (env TRAINING_MCP_DB)",
    )
    serve.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=int(env.get("TRAINING_MCP_MAX_RUNS", "2")),
        help="local and Ray runs training at once; more are queued (default 2)",
    )
    serve.add_argument(
        "--allow-factory",
        action="store_true",
        default=_env_flag(env, "TRAINING_MCP_ALLOW_FACTORY"),
        help="allow 'package.module:function' datasets (runs arbitrary code)",
    )
    serve.add_argument(
        "--data-root",
        type=Path,
        action="append",
        default=None,
        help="folder CSV datasets may be read from (repeatable; default only the data "
        "directory; '--data-root .' adds the working directory)",
    )
    serve.add_argument(
        "--token",
        default=env.get("TRAINING_MCP_TOKEN"),
        help="bearer token for HTTP (env TRAINING_MCP_TOKEN); required off loopback",
    )
    serve.add_argument(
        "--bridge",
        action="append",
        type=_bridge,
        default=None,
        help="GPU host bridge as URL or URL#TOKEN (repeatable)",
    )
    serve.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        help="seconds without a bridge heartbeat before a run is 'bridge lost'",
    )
    serve.add_argument(
        "--public-url",
        default=env.get("TRAINING_MCP_PUBLIC_URL"),
        help="this server's URL as bridges reach it (default http://HOST:PORT)",
    )
    serve.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=env.get("TRAINING_MCP_RAY"),
        help="run backend='ray' (and device='cuda') runs on Ray: 'auto' starts or joins a local "
        "Ray, else a cluster's address (env TRAINING_MCP_RAY; needs --http)",
    )
    serve.add_argument(
        "--ray-retries",
        type=int,
        default=0,
        help="times a run whose Ray worker or node died is started again (default 0: it fails)",
    )
    serve.add_argument(
        "--resume-interrupted",
        action="store_true",
        help="on start, resume local runs and script runs an earlier process left interrupted, "
        "from their last checkpoint (a script's: the last it saved)",
    )
    serve.add_argument("--log-level", default=env.get("TRAINING_MCP_LOG_LEVEL", "INFO"))
    _add_guard_flags(serve)
    _add_budget_flags(serve)
    _add_grace_flag(serve)
    _add_cap_flags(serve)
    _add_system_flag(serve)
    _add_bridge_parser(sub, env)
    _add_delete_parser(sub, env)
    return parser


def _add_delete_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Mapping[str, str]
) -> None:
    delete = sub.add_parser(
        "delete",
        help="delete ended runs with their metrics, checkpoints and logs (a running one is "
        "refused)",
    )
    delete.add_argument("operation_ids", nargs="+", metavar="OP_ID")
    delete.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("TRAINING_MCP_DATA_DIR", str(Path.home() / ".training-mcp"))),
        help="the server's data directory (env TRAINING_MCP_DATA_DIR)",
    )
    delete.add_argument("--db", default=env.get("TRAINING_MCP_DB"), help="SQLAlchemy URL")
    delete.add_argument("--log-level", default="WARNING")


def _add_bridge_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Mapping[str, str]
) -> None:
    bridge = sub.add_parser("bridge", help="run a GPU host bridge that trains for a server")
    bridge.add_argument(
        "--entry-points",
        type=Path,
        default=None,
        metavar="FILE",
        help="the same TOML file as the server's: entry points this bridge runs for it",
    )
    bridge.add_argument("--host", default=env.get("TRAINING_MCP_BRIDGE_HOST", "127.0.0.1"))
    bridge.add_argument(
        "--port", type=int, default=int(env.get("TRAINING_MCP_BRIDGE_PORT", "8766"))
    )
    bridge.add_argument(
        "--token",
        default=env.get("TRAINING_MCP_BRIDGE_TOKEN"),
        help="bearer token servers must send (env TRAINING_MCP_BRIDGE_TOKEN); required off "
        "loopback",
    )
    bridge.add_argument(
        "--data-dir",
        type=Path,
        default=Path(
            env.get("TRAINING_MCP_BRIDGE_DATA_DIR", str(Path.home() / ".training-mcp-bridge"))
        ),
        help="the spool of unsent metrics, checkpoints (env TRAINING_MCP_BRIDGE_DATA_DIR)",
    )
    bridge.add_argument("--max-sessions", type=int, default=2, help="runs training at once")
    bridge.add_argument(
        "--data-root",
        type=Path,
        action="append",
        default=None,
        help="folder CSV datasets may be read from (repeatable; default the data dir)",
    )
    bridge.add_argument(
        "--allow-factory",
        action="store_true",
        default=_env_flag(env, "TRAINING_MCP_ALLOW_FACTORY"),
        help="allow 'package.module:function' datasets (runs arbitrary code)",
    )
    bridge.add_argument("--log-level", default=env.get("TRAINING_MCP_LOG_LEVEL", "INFO"))
    bridge.add_argument(
        "--allowed-server",
        action="append",
        default=None,
        metavar="URL",
        help="a server this bridge may push to, e.g. https://trainer.lan:8765 (repeatable; "
        "default: servers on loopback only)",
    )
    _add_guard_flags(bridge)
    _add_budget_flags(bridge)
    _add_grace_flag(bridge)
    _add_system_flag(bridge)


def _seconds(most: float = math.inf, *, zero: str | None = None) -> Callable[[str], float]:
    """An argparse type: a number of seconds, more than 0 (or 0, where `zero` says what it
    means) and at most `most`, never infinite."""

    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan  # refused below: NaN compares false
        above_floor = seconds >= 0 if zero else seconds > 0
        if not (above_floor and seconds <= most and math.isfinite(seconds)):
            if zero:
                allowed = f"0 ({zero}) to {most:g} seconds"
            elif most < math.inf:
                allowed = f"more than 0 and at most {most:g} seconds"
            else:
                allowed = "a finite number of seconds, more than 0"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value!r}")
        return seconds

    return parse


def _add_grace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--script-grace",
        type=_seconds(MAX_GRACE_S),
        default=5.0,
        metavar="SECONDS",
        help="a stopped script's time to end after SIGINT, and again after SIGTERM, before "
        "SIGKILL (default 5; an entry point's stop_grace_s overrides it)",
    )


def _add_system_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--system-interval",
        type=_seconds(3600, zero="none"),
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="how often each run's CPU, memory and GPU are sampled as system/... metrics "
        f"(default {DEFAULT_INTERVAL_S:g}; 0: never)",
    )


def _size(value: str) -> int:
    """Bytes or a count, with an optional K, M, G or T suffix (powers of 1024); 0 means off."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        size = float(number) * factor
    except ValueError:
        message = f"expected a size such as 2G or 500000, got {value!r}"
        raise argparse.ArgumentTypeError(message) from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value!r}")
    return int(size)


def _count(value: str) -> int:
    """A count of at least 1 (a cap of 0 would lock every client out)."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def _add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """The resource budget a run must fit before it is accepted (0 turns a limit off)."""
    flags = [
        ("--max-parameters", "weights of a run's model (default: memory / 128)"),
        ("--max-batch-memory", "bytes of one batch's activations (default: an eighth of memory)"),
        ("--max-dataset-rows", "rows of a run's dataset (default: memory / 2048)"),
        ("--max-checkpoint-bytes", "bytes of one run's checkpoints (default 2G)"),
        ("--max-checkpoints-total", "bytes of all runs' checkpoints; oldest runs' are pruned "
         "(default 20G)"),
    ]  # fmt: skip
    for flag, text in flags:
        parser.add_argument(flag, type=_size, default=None, metavar="N", help=text)


def _budget(args: argparse.Namespace) -> tuple[ResourceLimits, CheckpointBudget]:
    def pick(given: int | None, default: int | None) -> int | None:
        return default if given is None else (given or None)

    base, disk = ResourceLimits.for_memory(), CheckpointBudget()
    limits = ResourceLimits(
        max_parameters=pick(args.max_parameters, base.max_parameters),
        max_activation_bytes=pick(args.max_batch_memory, base.max_activation_bytes),
        max_dataset_rows=pick(args.max_dataset_rows, base.max_dataset_rows),
        max_checkpoint_bytes=pick(args.max_checkpoint_bytes, disk.per_run),
    )
    return limits, CheckpointBudget(
        per_run=limits.max_checkpoint_bytes, total=pick(args.max_checkpoints_total, disk.total)
    )


def _add_cap_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-event-streams", type=int, default=64, help="REST event streams open in all"
    )
    parser.add_argument(
        "--max-event-streams-per-run", type=int, default=8, help="event streams of one run"
    )
    parser.add_argument(
        "--max-mcp-sessions", type=_count, default=100, help="MCP-over-HTTP sessions open at once"
    )
    parser.add_argument(
        "--mcp-sessions-per-client",
        type=_count,
        default=32,
        help="MCP-over-HTTP sessions one client (peer address) may hold open (default 32)",
    )
    parser.add_argument(
        "--mcp-session-idle",
        type=_seconds(),
        default=600.0,
        metavar="SECONDS",
        help="close an MCP-over-HTTP session idle this long (default 600)",
    )


def _add_guard_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name clients may use besides loopback and --host (repeatable; '*' any)",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a web page origin allowed to call this server, e.g. http://localhost:6274 "
        "(repeatable; default: only the server's own pages)",
    )


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    limits, checkpoints = _budget(args)
    bridges = tuple(args.bridge or ())
    if not bridges and env.get("TRAINING_MCP_BRIDGES"):
        bridges = tuple(_bridge(b) for b in env["TRAINING_MCP_BRIDGES"].split(",") if b)
    return ServerConfig(
        data_dir=args.data_dir.expanduser(),
        db_url=args.db,
        max_concurrent_runs=args.max_concurrent_runs,
        allow_factory=args.allow_factory,
        data_roots=tuple(p.expanduser().resolve() for p in args.data_root or ()),
        bridges=bridges,
        heartbeat_timeout_s=args.heartbeat_timeout,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        token=Secret(args.token) if args.token else None,
        ray_address=args.ray or None,
        ray_retries=args.ray_retries,
        entry_points_file=args.entry_points.expanduser().resolve() if args.entry_points else None,
        allowed_hosts=tuple(args.allowed_host or ()),
        allowed_origins=tuple(args.allowed_origin or ()),
        limits=limits,
        checkpoints=checkpoints,
        max_streams=args.max_event_streams,
        max_streams_per_run=args.max_event_streams_per_run,
        mcp_max_sessions=args.max_mcp_sessions,
        mcp_session_idle_s=args.mcp_session_idle,
        mcp_sessions_per_client=args.mcp_sessions_per_client,
        resume_interrupted=args.resume_interrupted,
        system_interval_s=args.system_interval,
        script_grace_s=args.script_grace,
    )


def _configure_logging(level: str) -> None:
    # stdout belongs to the MCP stdio transport: every log line goes to stderr.
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # httpx logs every request at INFO: a bridge pushing each epoch would drown the log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


async def _serve_stdio(config: ServerConfig) -> None:
    from mcp_server.core.service import open_service
    from mcp_server.server import build_mcp_server

    async with open_service(config) as service:
        await build_mcp_server(service).run_stdio_async()


async def _serve_http(config: ServerConfig, host: str, port: int, log_level: str) -> None:
    import uvicorn

    from mcp_server.app import build_app
    from mcp_server.core.service import open_service

    async with open_service(config) as service:
        app = build_app(service, host=host, port=port, token=config.token)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=log_level.lower(),
                lifespan="on",
                timeout_graceful_shutdown=3,
            )
        )
        log.info("training-mcp on http://%s:%d (MCP at /mcp, REST at /api/v1)", host, port)
        # What start-up built lives as long as the server: moved out of the collector's sight, a
        # full collection no longer walks those hundreds of thousands of objects in the middle
        # of a request (they were the write's p99 outliers). Frozen as it is now (a collection
        # first would delay the start), then collected and frozen once the MCP app is built.
        gc.freeze()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_freeze_when, app.state.mcp_ready)
            await server.serve()
            tg.cancel_scope.cancel()


async def _freeze_when(ready: anyio.Event) -> None:
    await ready.wait()
    gc.collect()
    gc.freeze()


def _loop_options() -> dict[str, bool]:
    """uvloop's event loop where it is installed (a dependency off Windows): the asyncio loop's
    own Python code was a fifth of a request's server time. The plain loop otherwise."""
    import importlib.util

    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    args = build_parser(env).parse_args(argv)
    _configure_logging(args.log_level)
    if args.command == "bridge":
        return _bridge_main(args)
    if args.command == "delete":
        from mcp_server.delete_command import delete_runs

        config = ServerConfig(data_dir=args.data_dir.expanduser(), db_url=args.db)
        return anyio.run(delete_runs, config, args.operation_ids)
    if args.command == "serve":
        from httpbase.guard import is_loopback_host

        config = config_from_args(args, env)
        if args.http and not is_loopback_host(args.host) and not config.token:
            print(
                f"training-mcp: refusing to listen on {args.host} without a token; "
                "pass --token or TRAINING_MCP_TOKEN, or use 127.0.0.1",
                file=sys.stderr,
            )
            return 2
        problem = _ray_problem(args) or _entry_points_problem(args)
        if problem:
            print(f"training-mcp: {problem}", file=sys.stderr)
            return 2
        if args.http:
            anyio.run(
                _serve_http,
                config,
                args.host,
                args.port,
                args.log_level,
                backend_options=_loop_options(),
            )
        else:
            anyio.run(_serve_stdio, config)
    return 0


def _entry_points_problem(args: argparse.Namespace) -> str | None:
    """Why `--entry-points FILE` is refused (the file, entry and field named), before start."""
    if args.entry_points is None:
        return None
    from mcp_server.core.entry_points import EntryPointFileError, load_entry_points

    try:
        load_entry_points(args.entry_points.expanduser().resolve())
    except EntryPointFileError as exc:
        return f"--entry-points: {exc}"
    return None


def _ray_problem(args: argparse.Namespace) -> str | None:
    """Why `--ray` cannot work as given, before anything starts."""
    if not args.ray:
        return None
    from mcp_server.core.ray_backend import RAY_INSTALL, ray_installed

    if not ray_installed():
        return f"--ray: Ray is not installed; install it with {RAY_INSTALL}"
    if not args.http:
        return "--ray: Ray workers push their metrics over HTTP; serve with --http"
    if not 0 <= args.ray_retries <= 100:
        return f"--ray-retries: must be between 0 and 100, got {args.ray_retries}"
    return None


def _bridge_main(args: argparse.Namespace) -> int:
    from starlette.datastructures import Secret as BridgeSecret

    from host_bridge.service import BridgeConfig, run_bridge

    limits, checkpoints = _budget(args)

    return run_bridge(
        BridgeConfig(
            host=args.host,
            port=args.port,
            token=BridgeSecret(args.token) if args.token else None,
            data_dir=args.data_dir.expanduser(),
            max_sessions=args.max_sessions,
            data_roots=tuple(p.expanduser().resolve() for p in args.data_root or ()),
            allow_factory=args.allow_factory,
            log_level=args.log_level,
            allowed_hosts=tuple(args.allowed_host or ()),
            allowed_origins=tuple(args.allowed_origin or ()),
            allowed_servers=tuple(args.allowed_server or ()),
            limits=limits,
            checkpoints=checkpoints,
            system_interval_s=args.system_interval,
            script_grace_s=args.script_grace,
            entry_points_file=args.entry_points.expanduser().resolve()
            if args.entry_points
            else None,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
