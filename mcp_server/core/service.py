"""The service functions every door calls: MCP tools, MCP resources and the REST mirror.

Each takes plain values, does one thing through storage / the runner / the analysis, and returns a
shared model from `mcp_server.core.models`. Errors are `mcp_server.core.errors.ServiceError`s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import Any, Literal

import anyio
from pydantic import ValidationError

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server.config import ServerConfig
from mcp_server.core.deletion import DeletedOperation, delete_run_everywhere
from mcp_server.core.dispatch import BridgeDispatcher, open_bridges
from mcp_server.core.entry_points import EntryPointList
from mcp_server.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
    from_validation_error,
    translate,
)
from mcp_server.core.export import export_history, parquet_available
from mcp_server.core.history import AnalysisCache, load_history
from mcp_server.core.ingest import Ingestor
from mcp_server.core.logs import LogsQuery, OperationLogs
from mcp_server.core.models import (
    DEFAULT_METRICS,
    ComparedRun,
    Comparison,
    Indicators,
    OperationInfo,
    OperationList,
    OperationMetrics,
    ResourceLinks,
    SpecDifference,
    StartTrainingArgs,
    StartTrainingResult,
    WaitResult,
    Woke,
    merge_flat,
)
from mcp_server.core.notify import Change, Listener, Notifier
from mcp_server.core.processes import ScriptRunner, ScriptSettings
from mcp_server.core.queries import (
    CompareQuery,
    ExportQuery,
    ListQuery,
    MetricsQuery,
    PlotQuery,
    WaitQuery,
)
from mcp_server.core.ray_actors import declared_entry_point
from mcp_server.core.ray_backend import RayBackend, open_ray
from mcp_server.core.runner import SHUTDOWN_REASON, LocalRunner
from mcp_server.core.steering import ForkRequest, ForkResult, Steering
from mcp_server.core.sweep_space import SweepRequest
from mcp_server.core.sweeps import Sweep, Sweeps, SweepStarted
from mcp_server.core.system import run_sampling
from storage import (
    MAX_NAME,
    AppendResult,
    Backend,
    Database,
    MetricPointIn,
    Operation,
    OperationStatus,
    SeriesData,
    SeriesLatest,
    clip,
    create_operation,
    get_operation,
    issue_push_credential,
    latest_values,
    list_operations,
    list_operations_page,
    open_database,
    operation_with_series,
    push_credential_matches,
    read_metrics,
    read_page,
)
from trainer.analysis import AnalysisParams, LossAnalysis, summarize_run
from trainer.analysis.models import output_float
from trainer.preflight import TrainerOptions, check_spec
from trainer.spec import TrainingSpec
from training_mcp.points import SYSTEM_PREFIX, is_epoch_metric, is_step_metric, is_system_metric

__all__ = ["ProgressCallback", "TrainingService", "open_service", "resource_links"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]
MAX_STEP = 2**62  # the largest step storage takes
_CURSOR = re.compile(r"^e(-1|\d+)(?:\.s(-1|\d+))?(?:\.t(\d+))?$")
_LIST = ListQuery()
_METRICS = MetricsQuery()
_EXPORT = ExportQuery()
_WAIT = WaitQuery()
_PLOT = PlotQuery()


class _Caller(Enum):
    IN_PROCESS = "in-process"


# What a pusher showed: a door (REST) passes the X-Training-Push-Token it got, None if none; code
# in this process (tests, benches, other services) is trusted and passes nothing.
IN_PROCESS = _Caller.IN_PROCESS
PushToken = str | None | Literal[_Caller.IN_PROCESS]


def resource_links(operation_id: str) -> ResourceLinks:
    base = f"training://operations/{operation_id}"
    return ResourceLinks(operation=base, metrics=f"{base}/metrics", analysis=f"{base}/analysis")


def started_result(op: Operation) -> StartTrainingResult:
    """What starting a run answers (start, fork, resume): the run and how to follow it."""
    hint = (
        "Push metrics to POST /api/v1/operations/{id}/metrics, then report the status."
        if op.backend is Backend.EXTERNAL
        else "Call wait_for_operation to follow it, or subscribe to resources.metrics."
    )
    return StartTrainingResult(
        operation_id=op.operation_id,
        name=op.name,
        status=op.status,
        backend=op.backend.value,
        epochs_total=op.epochs_total,
        resources=resource_links(op.operation_id),
        next_step=hint.replace("{id}", op.operation_id),
    )


def _parse_cursor(cursor: str | None) -> tuple[int, int, int]:
    """(last epoch-level step read, last per-step step read, last system time read); -1 where
    nothing was read yet, so points stored at step 0 are returned too."""
    if cursor is None or cursor == "":
        return -1, -1, -1
    match = _CURSOR.match(cursor)
    if match is None:
        raise InvalidInputError(
            "cursor: expected a value returned as next_cursor, such as 'e12' or 'e12.s480'",
            field="cursor",
        )
    epoch, step = int(match.group(1)), int(match.group(2) or -1)
    at = int(match.group(3) or -1)
    if max(epoch, step, at) > MAX_STEP:
        raise InvalidInputError(
            f"cursor: a position past {MAX_STEP} cannot exist; pass a next_cursor you were given",
            field="cursor",
        )
    return epoch, step, at


def _wanted(names: Sequence[str], stored: Sequence[str]) -> list[str]:
    """The names asked for, a name ending in '/' standing for every stored one under it."""
    wanted: list[str] = []
    for name in names:
        under = [m for m in stored if m.startswith(name)] if name.endswith("/") else []
        for m in under or [name]:
            if m not in wanted:
                wanted.append(m)
    return wanted


def _available(stored: Sequence[str]) -> list[str]:
    """Stored names, the system series as one `system/` (what get_operation_metrics takes)."""
    names = [m for m in stored if not is_system_metric(m)]
    return [*names, SYSTEM_PREFIX] if len(names) < len(stored) else names


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


class TrainingService:
    def __init__(
        self,
        config: ServerConfig,
        db: Database,
        notifier: Notifier,
        analyses: AnalysisCache,
        ingestor: Ingestor,
        runner: LocalRunner,
        bridges: BridgeDispatcher,
        ray: RayBackend,
        scripts: ScriptRunner | None = None,
    ) -> None:
        self._config = config
        self._sources: set[tuple[str, str | None]] = set()  # pushers already checked
        self._db = db
        self._notifier = notifier
        self._analyses = analyses
        self._ingestor = ingestor
        self._runner = runner
        self._bridges = bridges
        self._ray = ray
        self._scripts = scripts
        self._steering = Steering(config, db, notifier, ingestor, runner, bridges, scripts)

    # -- what the doors need besides the tools ----------------------------------------------

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every change (an epoch stored, a status changed); returns the
        function that stops it."""
        return self._notifier.listen(listener)

    def changed(self, operation_id: str) -> anyio.Event:
        """An event set at the next change of this run: take it before reading, so no change
        slips by between the read and the wait."""
        return self._notifier.changed(operation_id)

    @property
    def config(self) -> ServerConfig:
        """The server's settings, read-only (the HTTP app's guard reads its allow-lists)."""
        return self._config

    @property
    def runs_active(self) -> int:
        """Local runs training now."""
        return self._runner.active

    async def bridge_heartbeat(
        self, operation_id: str, push_token: PushToken = IN_PROCESS
    ) -> Operation:
        """A bridge's periodic word that a run it trains is alive."""
        await self._check_source(operation_id, push_token)
        return await self._bridges.heartbeat(operation_id)

    # -- runs -------------------------------------------------------------------------------

    async def start_training(self, args: StartTrainingArgs) -> StartTrainingResult:
        if args.entry_point is not None or args.params is not None:
            return started_result(await self._start_script(args))
        if args.backend == "external":
            return await self._register_external(args)
        spec = self._build_spec(args)
        name = args.name or _default_name(spec)
        # 'auto' sends cuda runs to Ray when the server has it, else to a bridge (which says
        # clearly when none is configured).
        auto_cuda = args.backend == "auto" and spec.device == "cuda"
        if args.backend == "ray" or (auto_cuda and self._ray.configured):
            return started_result(
                await self._ray.dispatch(spec, name=name, tags=args.tags, resources=args.resources)
            )
        if args.resources is not None:
            raise InvalidInputError(
                "resources: only a Ray run reserves resources; pass backend='ray'",
                field="resources",
            )
        if args.backend == "bridge" or (args.backend == "auto" and spec.device == "cuda"):
            return started_result(await self._bridges.dispatch(spec, name=name, tags=args.tags))
        try:  # reads a CSV's first lines: off the event loop
            await anyio.to_thread.run_sync(check_spec, spec, self._trainer_options())
        except Exception as exc:
            raise translate(exc) from exc
        op = await create_operation(
            self._db,
            name=name,
            backend=Backend.LOCAL,
            spec=spec.model_dump(mode="json"),
            epochs_total=spec.epochs,
            tags=args.tags,
        )
        await self._ingestor.announce(op)
        self._runner.start(op.operation_id, spec)
        return started_result(op)

    async def _start_script(self, args: StartTrainingArgs) -> Operation:
        if args.entry_point is None:
            raise InvalidInputError("params: given without an entry_point", field="params")
        others = args.model_dump(exclude_none=True, exclude={"name", "tags", "backend"})
        on_ray = args.backend == "ray"
        extra = sorted(set(others) - {"entry_point", "params", *(["resources"] if on_ray else [])})
        if extra or args.backend not in ("auto", "local", "ray", "bridge"):
            wrong = extra[0] if extra else "backend"
            raise InvalidInputError(
                f"{wrong}: an entry point takes only name, tags and params (the script's "
                "own parameters), and resources with backend 'ray'",
                field=wrong,
            )
        if args.backend == "bridge":  # a bridge with the same file runs it
            return await self._bridges.dispatch_script(
                declared_entry_point(self.list_entry_points(), args.entry_point),
                args.params,
                name=args.name,
                tags=args.tags,
            )
        if on_ray:
            return await self._ray.dispatch_script(
                declared_entry_point(self.list_entry_points(), args.entry_point),
                args.params,
                name=args.name,
                tags=args.tags,
                resources=args.resources,
            )
        return await self._script_runner().start(
            args.entry_point, args.params, name=args.name, tags=args.tags
        )

    def _script_runner(self) -> ScriptRunner:
        if self._scripts is None:
            raise UnavailableError("entry_point: this server runs no scripts", field="entry_point")
        return self._scripts

    def list_entry_points(self) -> EntryPointList:
        """The training scripts the operator declared (`--entry-points FILE`)."""
        if self._scripts is None:
            return EntryPointList(entry_points=[], file=None)
        return self._scripts.entry_points()

    async def operation_logs(self, operation_id: str, query: LogsQuery) -> OperationLogs:
        """A script run's stdout or stderr: the last `tail` lines, or what came after `cursor`."""
        op = await self._get(operation_id)
        if op.backend is Backend.BRIDGE and "entry_point" in op.spec:
            return await self._bridges.logs(op, query)
        if op.backend is Backend.RAY and "entry_point" in op.spec:
            return await self._ray.logs(op, query)
        if op.backend is not Backend.SCRIPT:
            raise InvalidInputError(
                f"operation_id: {operation_id!r} is a {op.backend.value} run; only script runs "
                "(entry points) have logs",
                field="operation_id",
            )
        return self._script_runner().logs(
            operation_id, query.stream, tail=query.tail, cursor=query.cursor
        )

    async def _register_external(self, args: StartTrainingArgs) -> StartTrainingResult:
        op = await create_operation(
            self._db,
            name=args.name or "external run",
            backend=Backend.EXTERNAL,
            spec=args.spec or {},
            epochs_total=args.epochs,
            tags=args.tags,
            status=OperationStatus.RUNNING,
        )
        credential = await issue_push_credential(self._db, op.operation_id)
        await self._ingestor.announce(op)
        return started_result(op).model_copy(update={"push_token": credential})

    def _build_spec(self, args: StartTrainingArgs) -> TrainingSpec:
        base: dict[str, Any] = dict(args.spec or {})
        flat = args.model_dump(
            exclude_none=True, exclude={"name", "tags", "backend", "spec", "resources"}
        )
        dataset = dict(base.get("dataset") or {})
        name = flat.pop("dataset", None)
        if name == "csv":
            dataset = {"kind": "csv"}
        elif name == "factory":
            dataset = {"kind": "factory"}
        elif name is not None:
            dataset = {"kind": "synthetic", "name": name}
        for arg, key in (
            ("csv_path", "path"),
            ("target_column", "target"),
            ("feature_columns", "features"),
            ("task", "task"),
        ):
            if arg in flat:
                dataset.setdefault("kind", "csv")
                dataset[key] = flat.pop(arg)
        if "factory" in flat:
            dataset = {"kind": "factory", "factory": flat.pop("factory")}
        if dataset:
            base["dataset"] = dataset
        merge_flat(base, flat)
        try:
            return TrainingSpec.model_validate(base)
        except ValidationError as exc:
            raise from_validation_error(exc) from exc

    def _trainer_options(self) -> TrainerOptions:
        return self._config.trainer_options

    async def stop_training(self, operation_id: str, reason: str | None = None) -> Operation:
        op = await self._get(operation_id)
        why = reason or "stopped by request"
        if op.finished:
            raise ConflictError(
                f"operation_id: operation {operation_id!r} is already {op.status.value}; "
                "nothing to stop",
                field="operation_id",
            )
        if op.backend is Backend.BRIDGE:
            return await self._bridges.stop(op, why)
        if op.backend is Backend.RAY:
            return await self._ray.stop(op, why)
        if op.backend is Backend.SCRIPT:
            return await self._script_runner().stop(op, why)
        if self._runner.cancel(operation_id, why):
            if op.status is OperationStatus.QUEUED:
                return await self._ingestor.record_status(
                    operation_id, OperationStatus.CANCELLED, reason=why
                )
            return await self._await_end(operation_id, timeout_s=10.0)
        return await self._ingestor.record_status(
            operation_id, OperationStatus.CANCELLED, reason=why
        )

    async def fork_training(self, operation_id: str, request: ForkRequest) -> ForkResult:
        """A new run from a checkpoint of this one, with changed hyperparameters (steering.py)."""
        return await self._steering.fork(operation_id, request)

    async def resume_training(self, operation_id: str) -> StartTrainingResult:
        """An interrupted or failed run, queued again from its last checkpoint (steering.py)."""
        return await self._steering.resume(operation_id)

    # -- sweeps (sweeps.py; Optuna, an optional extra) ---------------------------------------

    _sweeps: Sweeps | None = None

    def _sweep_engine(self) -> Sweeps:
        if self._sweeps is None:
            raise UnavailableError("sweeps: this server was opened without a task group for them")
        return self._sweeps

    def spec_for(self, args: StartTrainingArgs) -> TrainingSpec:
        """The spec start_training would run for these arguments (InvalidInputError if none)."""
        return self._build_spec(args)

    async def start_sweep(self, request: SweepRequest) -> SweepStarted:
        """Start a sweep; its trials are ordinary runs of this service."""
        return await self._sweep_engine().start(request)

    async def get_sweep(self, sweep_id: str) -> Sweep:
        return await self._sweep_engine().get(sweep_id)

    async def enqueue_sweep_trial(self, sweep_id: str, params: Mapping[str, Any]) -> Sweep:
        return await self._sweep_engine().enqueue(sweep_id, dict(params))

    async def resume_interrupted(self) -> list[str]:
        """Resume every local run left interrupted that has a checkpoint (serve
        --resume-interrupted); returns their ids."""
        return await self._steering.resume_interrupted()

    async def resume_lost_bridge_runs(self) -> list[str]:
        """Bridge runs their bridge's loss ended, resumed there now that it is back."""
        return await self._steering.resume_lost_bridge_runs()

    async def _await_end(self, operation_id: str, timeout_s: float) -> Operation:
        with anyio.move_on_after(timeout_s):
            while True:
                changed = self._notifier.changed(operation_id)
                op = await self._get(operation_id)
                if op.finished:
                    return op
                await changed.wait()
        return await self._get(operation_id)

    async def report_status(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        error: str | None = None,
        reason: str | None = None,
        push_token: PushToken = IN_PROCESS,
    ) -> Operation:
        """An external run reports that it finished (or failed). A run this server trains
        reports its own status: stop it with `stop_training` instead."""
        current = await self._get(operation_id)
        if current.backend is Backend.LOCAL:
            raise ConflictError(
                "status: a run trained by this server reports its own status; stop it with "
                f"stop_training (REST: POST /api/v1/operations/{operation_id}/cancel)",
                field="status",
            )
        await self._check_source(operation_id, push_token)
        try:
            return await self._ingestor.record_status(
                operation_id, status, error=error, reason=reason
            )
        except Exception as exc:
            raise translate(exc) from exc

    async def push_metrics(
        self,
        operation_id: str,
        points: Sequence[MetricPointIn | Mapping[str, Any]],
        push_token: PushToken = IN_PROCESS,
    ) -> AppendResult:
        """Store points pushed by the run's own source (its push credential, when it has one).
        A run this server trains takes none: its values are its trainer's."""
        await self._check_source(operation_id, push_token)
        try:
            return await self._ingestor.record_points(operation_id, points)
        except Exception as exc:
            raise translate(exc) from exc

    def stop_request(self, operation_id: str) -> str | None:
        """Why a script run was asked to stop, while it still runs (None: it was not): the
        answer to its pushes carries it, so its client can end training at the next step."""
        return self._scripts.stop_request(operation_id) if self._scripts is not None else None

    async def _check_source(self, operation_id: str, push_token: PushToken) -> None:
        """Refuse a pusher that is not the run's source: 409 for a run this server trains, 403
        without the run's push credential (a door passes what its caller sent; code in this
        process is trusted)."""
        if (operation_id, push_token) in self._sources:
            return
        op = await self._get(operation_id)
        if op.backend is Backend.LOCAL:
            raise ConflictError(
                f"operation_id: {operation_id!r} is trained by this server, which writes its "
                "metrics itself; it takes no pushed points",
                field="operation_id",
            )
        if push_token is IN_PROCESS:
            return
        if not await push_credential_matches(self._db, operation_id, push_token):
            raise ForbiddenError(
                f"{PUSH_TOKEN_HEADER}: only the source that registered {operation_id!r} may push "
                "into it; send the push_token its registration returned",
                field=PUSH_TOKEN_HEADER,
            )
        if len(self._sources) >= 4096:
            self._sources.clear()
        self._sources.add((operation_id, push_token))

    # -- reads ------------------------------------------------------------------------------

    async def _get(self, operation_id: str) -> Operation:
        try:
            return await get_operation(self._db, operation_id)
        except Exception as exc:
            raise translate(exc) from exc

    async def _get_with_series(self, operation_id: str) -> tuple[Operation, list[Any]]:
        """The operation and its series' rows, in one read: what its reads start with."""
        try:
            return await operation_with_series(self._db, operation_id)
        except Exception as exc:
            raise translate(exc) from exc

    async def get_operation(self, operation_id: str) -> OperationInfo:
        op, every = await self._get_with_series(operation_id)
        latest = [
            SeriesLatest.from_row(r) for r in every if r.n_points and not is_system_metric(r.name)
        ]
        return OperationInfo(
            **op.model_dump(), latest=latest, resources=resource_links(operation_id)
        )

    async def list_operations(self, query: ListQuery = _LIST) -> OperationList:
        try:
            ops, next_cursor = await list_operations_page(
                self._db, limit=query.limit, cursor=query.cursor, status=query.status
            )
        except Exception as exc:
            raise translate(exc) from exc
        return OperationList(
            operations=ops, returned=len(ops), status_filter=query.status, next_cursor=next_cursor
        )

    async def delete_operation(self, operation_id: str) -> DeletedOperation:
        """Delete an ended run with its metrics, push credential, checkpoints and logs
        (deletion.py); ConflictError naming its status while it is queued or running."""
        if self._runner.is_local(operation_id):
            raise ConflictError(
                f"operation_id: {operation_id!r} is still being trained here; stop it first",
                field="operation_id",
            )
        deleted = await delete_run_everywhere(self._db, self._config, operation_id)
        self._analyses.invalidate(operation_id)
        self._sources = {s for s in self._sources if s[0] != operation_id}
        return deleted

    async def get_metrics(
        self, operation_id: str, query: MetricsQuery = _METRICS
    ) -> OperationMetrics:
        metrics, last_epochs, max_points = query.metrics, query.last_epochs, query.max_points
        include_steps, page_size = query.include_steps, query.page_size
        after_epoch, after_step, after_time = _parse_cursor(query.cursor)
        if page_size is not None and last_epochs is not None:
            raise InvalidInputError(
                "page_size: exact pages read forward from the cursor; leave out last_epochs "
                "(or page_size)",
                field="page_size",
            )
        op, every = await self._get_with_series(operation_id)  # handed on: no second lookup
        stored = [s.name for s in every]
        if metrics is None or list(metrics) == []:
            wanted = [m for m in DEFAULT_METRICS if m in stored]
        elif list(metrics) == ["all"]:
            wanted = [m for m in stored if is_epoch_metric(m)]
        else:
            wanted = _wanted(metrics, stored)
        if include_steps:
            wanted += [m for m in stored if is_step_metric(m) and m not in wanted]
        # Three axes, each with its own cursor: epochs, global batches, sample times.
        epoch_names = [m for m in wanted if is_epoch_metric(m)]
        step_names = [m for m in wanted if is_step_metric(m)]
        system_names = [m for m in wanted if is_system_metric(m)]
        series: list[SeriesData] = []
        missing: list[str] = []
        has_more = False
        afters = {"epoch": after_epoch, "step": after_step, "time": after_time}
        for axis, names, last in (
            ("epoch", epoch_names, last_epochs),
            ("step", step_names, None),
            ("time", system_names, None),
        ):
            if not names:
                continue
            after = afters[axis]
            if page_size is not None:
                page = await read_page(
                    self._db,
                    operation_id,
                    names=names,
                    after_step=after if after >= 0 else None,
                    page_size=page_size,
                    looked_up=every,
                )
                series += page.series
                missing += page.missing
                has_more = has_more or page.has_more
                # A page may end on a step some series lack: the cursor is the page's bound.
                if page.through is not None:
                    afters[axis] = max(after, page.through)
                continue
            read = await read_metrics(
                self._db,
                operation_id,
                names=names,
                after_step=after if after >= 0 else None,
                last=last,
                max_points=max_points,
                looked_up=every,
            )
            series += read.series
            missing += read.missing
        for s in series:
            if s.steps:
                axis = (
                    "step"
                    if is_step_metric(s.name)
                    else "time"
                    if is_system_metric(s.name)
                    else "epoch"
                )
                afters[axis] = max(afters[axis], s.steps[-1])
        next_step, next_time = afters["step"], afters["time"]
        return OperationMetrics(
            operation_id=operation_id,
            status=op.status,
            epochs_done=op.epochs_done,
            epochs_total=op.epochs_total,
            series=series,
            missing=missing,
            available=_available(stored),
            next_cursor=f"e{afters['epoch']}"
            + (f".s{next_step}" if next_step >= 0 else "")
            + (f".t{next_time}" if next_time >= 0 else ""),
            has_more=has_more,
            indicators=await self.indicators(operation_id),
        )

    async def export_metrics(
        self, operation_id: str, query: ExportQuery = _EXPORT
    ) -> AsyncIterator[bytes]:
        """Every point of the run's metrics (all of them by default), exactly as stored, encoded
        as it is read; the run is looked up first so a wrong id fails before any byte."""
        if query.format in ("parquet", "arrow") and not parquet_available():
            raise InvalidInputError(
                f"format: {query.format} needs pyarrow installed on the server (the export "
                "extra); use jsonl or csv",
                field="format",
            )
        await self._get(operation_id)
        metrics = query.metrics
        names = None if not metrics or list(metrics) == ["all"] else list(metrics)
        return export_history(self._db, operation_id, query.format, names)

    async def indicators(self, operation_id: str) -> Indicators | None:
        return _indicators(await self._analyses.current(operation_id))

    async def analyze(
        self, operation_id: str, params: AnalysisParams | None = None
    ) -> LossAnalysis:
        await self._get(operation_id)
        params = params or AnalysisParams()
        if "monitor" in params.model_fields_set:
            stored = [s.name for s in await latest_values(self._db, operation_id)]
            if stored and params.monitor not in stored:
                raise InvalidInputError(
                    f"monitor: {params.monitor!r} is not a metric of this run; it has "
                    + ", ".join(n for n in stored if is_epoch_metric(n)),
                    field="monitor",
                )
        analysis = await self._analyses.with_params(operation_id, params)
        return await self._steering.with_next_call(operation_id, analysis)

    async def wait_for_operation(
        self,
        operation_id: str,
        query: WaitQuery = _WAIT,
        *,
        progress: ProgressCallback | None = None,
    ) -> WaitResult:
        """Wait for the point `query.until` names and answer a digest: the latest values, the
        indicators and what changed meanwhile that bears on a decision (verdict, recommendation,
        flags raised, criteria fired), so that following a whole run costs a few small answers
        whatever its length. The history only with `include_history`."""
        until, timeout_s = query.until, query.timeout_s
        op = await self._get(operation_id)
        start_epoch = op.epochs_done
        target = start_epoch + (query.epochs if until == "epochs" else 1)
        before = await self._analyses.current(operation_id)
        started = time.monotonic()
        woke: Woke = "timeout"
        changes: list[str] = []
        with anyio.move_on_after(timeout_s):
            while True:
                changed = self._notifier.changed(operation_id)
                op = await self._get(operation_id)
                if progress is not None:
                    total = float(op.epochs_total) if op.epochs_total else None
                    await progress(
                        float(op.epochs_done),
                        total,
                        f"{op.status.value}: epoch {op.epochs_done}/{op.epochs_total or '?'}",
                    )
                if until == "decision":  # a new epoch, or a system sample that raised a flag
                    changes = decision_changes(before, await self._analyses.current(operation_id))
                if op.finished:
                    woke = "end"
                    break
                if until == "decision" and changes:
                    woke = "decision"
                    break
                if until in ("next_epoch", "epochs") and op.epochs_done >= target:
                    woke = "epoch"
                    break
                with anyio.move_on_after(5.0):  # a progress beat at least every 5 s
                    await changed.wait()
        after = await self._analyses.current(operation_id)
        if woke != "decision":
            changes = decision_changes(before, after)
        since = f"e{start_epoch}" if start_epoch > 0 else None
        history = (
            await self.get_metrics(operation_id, MetricsQuery(cursor=since, metrics=["all"]))
            if query.include_history
            else None
        )
        latest = {s.name: s.value for s in await latest_values(self._db, operation_id) if s.count}
        return WaitResult(
            operation_id=operation_id,
            reached=woke != "timeout",
            woke=woke,
            waited_s=round(time.monotonic() - started, 3),
            status=op.status,
            epochs_done=op.epochs_done,
            epochs_total=op.epochs_total,
            latest={m: output_float(latest[m]) for m in DEFAULT_METRICS if m in latest},
            indicators=_indicators(after),
            changes=changes,
            next_cursor=f"e{op.epochs_done}",
            metrics=history,
        )

    async def compare_operations(self, query: CompareQuery) -> Comparison:
        operation_ids = query.operation_ids
        runs: list[ComparedRun] = []
        specs: dict[str, dict[str, Any]] = {}
        for oid in operation_ids:
            op = await self._get(oid)
            summary = summarize_run(await load_history(self._db, oid))
            runs.append(
                ComparedRun(operation_id=oid, name=op.name, status=op.status, summary=summary)
            )
            specs[oid] = _flatten(op.spec)
        paths = sorted(set().union(*(s.keys() for s in specs.values())))
        differences = [
            SpecDifference(path=p, values={oid: specs[oid].get(p) for oid in operation_ids})
            for p in paths
            if len({repr(specs[oid].get(p)) for oid in operation_ids}) > 1
        ]
        scored = [
            (r.summary.best_value, r.operation_id) for r in runs if r.summary.best_value is not None
        ]
        return Comparison(
            runs=runs,
            differences=differences,
            identical_fields=len(paths) - len(differences),
            best_operation_id=min(scored)[1] if scored else None,
        )

    async def plot(
        self, operation_ids: Sequence[str], query: PlotQuery = _PLOT
    ) -> tuple[bytes, str]:
        """A PNG of the runs' curves (best epoch marked) and a one-line caption: `operation_ids`
        come from a `PlotRequest` (1 to 10) or a REST path (one)."""
        from mcp_server.core.plot import Curve, render_png

        metrics = query.metrics
        curves: list[Curve] = []
        notes: list[str] = []
        unknown = set(metrics)
        for oid in operation_ids:
            op = await self._get(oid)
            read = await read_metrics(self._db, oid, names=list(metrics), max_points=2000)
            unknown &= set(read.missing)
            analysis = await self._analyses.current(oid)
            for s in read.series:
                curves.append(
                    Curve(
                        label=f"{op.name} ({oid}) {s.name}",
                        steps=s.steps,
                        values=s.values,
                        metric=s.name,
                        best_step=analysis.best_epoch,
                    )
                )
            if analysis.best_epoch is not None:
                notes.append(
                    f"{oid}: best {analysis.monitor} {analysis.best_value:.4g} at epoch "
                    f"{analysis.best_epoch}, {analysis.verdict}"
                )
            else:
                notes.append(f"{oid}: no epochs yet")
        if unknown and len(unknown) < len(set(metrics)):  # all unknown: "nothing stored" below
            names = ", ".join(m for m in metrics if m in unknown)
            raise NotFoundError(
                f"metrics: {names} never stored for these runs; drop them or check the names "
                "get_operation_metrics lists as available",
                field="metrics",
            )
        if not any(c.steps for c in curves):
            raise NotFoundError(
                "metrics: nothing stored yet for " + ", ".join(metrics), field="metrics"
            )
        png = await anyio.to_thread.run_sync(render_png, curves, "epoch")
        return png, "; ".join(notes)

    # -- start-up ---------------------------------------------------------------------------

    async def mark_orphans(self) -> int:
        """Local runs a previous process left queued or running cannot resume: mark them."""
        count = 0
        for status in (OperationStatus.RUNNING, OperationStatus.QUEUED):
            for op in await list_operations(
                self._db, status=status, backend=Backend.LOCAL, limit=10_000
            ):
                await self._ingestor.record_status(
                    op.operation_id,
                    OperationStatus.INTERRUPTED,
                    reason=f"the server stopped while this run was {status.value}; "
                    f"its {op.epochs_done} stored epochs are kept",
                )
                count += 1
        return count


def _indicators(analysis: LossAnalysis) -> Indicators | None:
    if analysis.epochs_analyzed == 0:
        return None
    flags = {f.name for f in analysis.flags}
    return Indicators(
        monitor=analysis.monitor,
        best_epoch=analysis.best_epoch,
        best_value=analysis.best_value,
        epochs_since_improvement=analysis.epochs_since_improvement,
        overfitting="overfitting" in flags,
        plateau="plateau" in flags,
        diverging="divergence" in flags or "non_finite" in flags,
        verdict=analysis.verdict,
        recommendation=analysis.recommendation,
    )


def decision_changes(before: LossAnalysis, after: LossAnalysis) -> list[str]:
    """What moved between two analyses of one run that an agent deciding on it cares about."""
    changes: list[str] = []
    if after.recommendation != before.recommendation:
        changes.append(f"recommendation {before.recommendation} -> {after.recommendation}")
    if after.verdict != before.verdict:
        changes.append(f"verdict {before.verdict} -> {after.verdict}")
    had = {f.name for f in before.flags}
    changes += [
        f"flag {f.name} since epoch {f.since_epoch}" for f in after.flags if f.name not in had
    ]
    for name in ("gl", "pq", "up", "patience"):
        was, now = getattr(before.criteria, name), getattr(after.criteria, name)
        if now.fired and not was.fired:
            changes.append(f"criterion {name} fired at epoch {now.epoch}")
    return changes


def _optuna_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna") is not None


def _default_name(spec: TrainingSpec) -> str:
    dataset = spec.dataset
    label = getattr(dataset, "name", None) or getattr(dataset, "kind", "run")
    sizes = "x".join(str(h) for h in spec.model.hidden_sizes)
    return clip(f"{label} mlp[{sizes}] {spec.epochs}ep", MAX_NAME) or "run"


@asynccontextmanager
async def open_service(config: ServerConfig) -> AsyncIterator[TrainingService]:
    """Everything a server needs, for as long as it runs: the database, the runs' task group."""
    db = await open_database(config.database_url)
    notifier = Notifier()
    analyses = AnalysisCache(db)
    ingestor = Ingestor(db, notifier, analyses)
    sweeps: Sweeps | None = None
    slots = anyio.CapacityLimiter(config.max_concurrent_runs)  # local and Ray runs share it
    try:
        async with (
            anyio.create_task_group() as tg,
            open_bridges(config, db, ingestor) as bridges,
            open_ray(config, db, ingestor, bridges.heartbeat_interval_s, slots) as ray,
        ):
            system = await run_sampling(config, ingestor)
            runner = LocalRunner(
                ingestor,
                config.trainer_options,
                tg,
                artifacts_root=config.artifacts_dir,
                checkpoints=config.checkpoints,
                max_concurrent=config.max_concurrent_runs,
                system=system,
                slots=slots,
                writing_elsewhere=lambda: scripts.running(),
            )
            scripts = ScriptRunner(
                ScriptSettings.from_config(config),
                db,
                ingestor,
                tg,
                busy=lambda: slots.borrowed_tokens + scripts.active >= config.max_concurrent_runs,
                system=system,
            )
            service = TrainingService(
                config, db, notifier, analyses, ingestor, runner, bridges, ray, scripts
            )
            reattached, script_orphans = await scripts.reattach()
            if reattached:
                log.warning("re-attached %d script runs still running", reattached)
            orphans = await service.mark_orphans() + script_orphans
            if orphans:
                log.warning("marked %d runs of an earlier server process interrupted", orphans)
            service._sweeps = sweeps = Sweeps(
                service,
                tg,
                config.database_url,
                lambda sweep_id: notifier.publish(Change(sweep_id, "metrics")),
            )
            if _optuna_installed():
                resumed_sweeps = await service._sweeps.resume_all()
                if resumed_sweeps:
                    log.warning("driving %d sweeps again", len(resumed_sweeps))
            if config.resume_interrupted:
                resumed = await service.resume_interrupted()
                log.warning("resumed %d interrupted runs: %s", len(resumed), ", ".join(resumed))
            # Re-attaches bridge runs, then their heartbeat watchdog; with --resume-interrupted it
            # also resumes runs their bridge's loss ended, once the bridge is back.
            revive = service.resume_lost_bridge_runs if config.resume_interrupted else None
            tg.start_soon(bridges.watch, revive)
            try:
                yield service
            finally:
                if service._sweeps is not None:
                    service._sweeps.close()
                runner.cancel_all(SHUTDOWN_REASON)
                scripts.shutdown()
    finally:
        if sweeps is not None:  # its drivers have ended with the task group
            sweeps.dispose()
        await db.close()
