"""Hyperparameter sweeps on Optuna: its samplers, pruners and RDB storage, our runs as trials.

A sweep is an Optuna study (named `sw-...`) stored in the server's own database, its request in
the study's user attributes. Each trial is an ordinary run started through the service (so it
counts against the concurrency limits and reads like any run), tagged with the sweep; every epoch
stored for it is reported to the study, and a trial the pruner prunes is stopped through
`stop_training` with the pruner's reason. A driver task per sweep keeps `parallel` trials going
until `trials` have ended (or the epoch `budget` is spent). On start the server picks up every
sweep still running: trials whose run a restart interrupted are marked lost and replaced.

Optuna is an optional extra (`pip install training-mcp[sweeps]`), imported only when a sweep is
used; its calls are blocking database work, so they run in worker threads. With SQLite, Optuna's
engine waits on the file's lock (busy timeout) while the server writes; the server's own writes
are short transactions, so neither starves.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from mcp_server.core.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from mcp_server.core.models import StartTrainingArgs
from mcp_server.core.notify import Change
from mcp_server.core.queries import MetricsQuery
from mcp_server.core.sweep_space import (
    Param,
    SweepRequest,
    check_space,
    trial_args,
    trial_epochs,
)

__all__ = ["SWEEP_PREFIX", "LeaderboardEntry", "Sweep", "SweepStarted", "Sweeps"]

log = logging.getLogger(__name__)

SWEEP_PREFIX = "sw-"
_STOP_RECOMMENDATIONS = ("stop_and_restore_best", "investigate_divergence")
TrialState = Literal["running", "complete", "pruned", "failed", "waiting"]


class SweepStarted(BaseModel):
    sweep_id: str
    status: str
    resource: str = Field(description="Subscribe to follow it; get_sweep reads it")


class LeaderboardEntry(BaseModel):
    trial: int
    operation_id: str | None
    state: TrialState
    value: float | None = Field(description="Best monitored value (last reported if pruned)")
    epochs: int | None
    params: dict[str, Any]


class Sweep(BaseModel):
    """A sweep's state: counts, the best trials, parameter importances and the best run."""

    sweep_id: str
    name: str | None
    status: Literal["running", "completed", "stopped"]
    monitor: str
    trials: int = Field(description="Trials asked for")
    counts: dict[str, int] = Field(description="Trials by state")
    epochs_spent: int
    budget: int | None
    leaderboard: list[LeaderboardEntry] = Field(description="The best trials, best first")
    importances: dict[str, float] = Field(
        description="Optuna's parameter importances (its default evaluator), 0..1; empty before "
        "2 trials complete"
    )
    best_operation_id: str | None
    best_value: float | None
    best_params: dict[str, Any] | None


Publish = Callable[[str], Awaitable[None]]


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise UnavailableError(
            "sweeps need Optuna: pip install 'training-mcp[sweeps]' (or optuna>=4)"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_url(database_url: str) -> str | None:
    """The synchronous URL Optuna's RDB storage uses for the server's database (None: keep the
    studies in memory, for an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return None
        return str(url.set(drivername="sqlite"))
    if url.get_backend_name() == "postgresql":
        # The server's driver (asyncpg) is async; Optuna's engine needs a sync one.
        driver = _sync_postgres_driver()
        return url.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    return url.render_as_string(hide_password=False)


def _sync_postgres_driver() -> str:
    """psycopg (3), else psycopg2: whichever is installed, for Optuna's sync engine."""
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise UnavailableError(
        "sweeps: on PostgreSQL, Optuna's storage needs a sync driver: pip install "
        "'training-mcp[postgres]' (psycopg)"
    )


def _sweeps_stored(database_url: str) -> bool:
    """Whether Optuna's tables hold any sweep's study (read without importing Optuna); True
    when that cannot be told, so the full look through Optuna decides."""
    try:
        url = optuna_url(database_url)
    except UnavailableError:
        return True  # no sync driver: the full look says so
    if url is None:
        return False  # an in-memory database: nothing survived
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("studies"):
                return False
            query = text("SELECT 1 FROM studies WHERE study_name LIKE :prefix LIMIT 1")
            return conn.execute(query, {"prefix": f"{SWEEP_PREFIX}%"}).first() is not None
    except Exception:  # a driver or schema this check does not know: let Optuna look
        log.debug("sweeps: could not look for stored studies directly", exc_info=True)
        return True
    finally:
        engine.dispose()


class Sweeps:
    """Starts and drives sweeps. `service` is the TrainingService (its public methods only)."""

    def __init__(self, service: Any, task_group: TaskGroup, url: str, publish: Publish) -> None:
        self._service = service
        self._tg = task_group
        self._database_url = url
        self._publish = publish
        self._storage: Any = None
        self._lock = anyio.Lock()  # asks and tells of one process, one at a time
        self._driving: set[str] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self._closing = False

    def close(self) -> None:
        """The server is stopping: start no more trials and leave the drivers (their trials'
        runs end interrupted; the next server marks those trials lost and replaces them)."""
        self._closing = True
        for scope in list(self._scopes):
            scope.cancel()

    def dispose(self) -> None:
        """Close Optuna's database connections (once no driver runs)."""
        engine = getattr(self._storage, "engine", None)
        if engine is not None:
            self._storage.remove_session()
            engine.dispose()

    async def _store(self) -> Any:
        if self._storage is None:
            optuna = _optuna()
            url = optuna_url(self._database_url)

            def make() -> Any:
                if url is None:
                    return optuna.storages.InMemoryStorage()
                kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)

            self._storage = await anyio.to_thread.run_sync(make)
        return self._storage

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            return await anyio.to_thread.run_sync(fn, *args)

    async def _study(self, sweep_id: str, request: SweepRequest | None = None) -> Any:
        optuna = _optuna()
        storage = await self._store()
        if request is None:
            try:
                study_id = await self._run(storage.get_study_id_from_name, sweep_id)
            except KeyError as exc:
                raise NotFoundError(f"sweep_id: no sweep {sweep_id!r}", field="sweep_id") from exc
            attrs = await self._run(storage.get_study_user_attrs, study_id)
            request = SweepRequest.model_validate(attrs["request"])
        else:
            attrs = {}
        sampler = _sampler(optuna, request)
        pruner = _pruner(optuna, request, attrs.get("max_epochs"))
        return await self._run(
            lambda: optuna.load_study(
                study_name=sweep_id, storage=storage, sampler=sampler, pruner=pruner
            )
        )

    # -- requests ---------------------------------------------------------------------------

    async def start(self, request: SweepRequest) -> SweepStarted:
        entry = check_space(
            request,
            self._service.spec_for,
            {e.name: e for e in self._service.list_entry_points().entry_points},
            self._service.config.allowed_data_roots,
        )
        max_epochs = trial_epochs(request, entry)
        optuna = _optuna()
        storage = await self._store()
        sweep_id = SWEEP_PREFIX + secrets.token_hex(4)

        def create() -> None:
            study = optuna.create_study(study_name=sweep_id, storage=storage, direction="minimize")
            study.set_user_attr("request", request.model_dump(mode="json"))
            study.set_user_attr("status", "running")
            study.set_user_attr("monitor", _monitor(request))
            study.set_user_attr("max_epochs", max_epochs)

        await self._run(create)
        self._drive(sweep_id)
        return SweepStarted(
            sweep_id=sweep_id, status="running", resource=f"training://sweeps/{sweep_id}"
        )

    async def enqueue(self, sweep_id: str, params: dict[str, Any]) -> Sweep:
        """An agent's own trial: trained next, with exactly these parameters."""
        study = await self._study(sweep_id)
        request = SweepRequest.model_validate(study.user_attrs["request"])
        if study.user_attrs.get("status") != "running":
            raise ConflictError(f"sweep_id: {sweep_id!r} has ended", field="sweep_id")
        unknown = sorted(set(params) - set(request.space))
        if unknown:
            raise InvalidInputError(
                f"params.{unknown[0]}: not in the sweep's space ({', '.join(request.space)})",
                field=f"params.{unknown[0]}",
            )
        distributions = _distributions(_optuna(), request.space)
        missing = sorted(set(request.space) - set(params))
        if missing:
            raise InvalidInputError(
                f"params.{missing[0]}: give a value for every parameter of the space",
                field=f"params.{missing[0]}",
            )
        params = {k: _encoded(v) for k, v in params.items()}
        for name, value in params.items():
            dist = distributions[name]
            try:
                internal = dist.to_internal_repr(value)
                ok = dist._contains(internal)
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise InvalidInputError(
                    f"params.{name}: {value!r} is outside the space ({dist})",
                    field=f"params.{name}",
                )
        await self._run(lambda: study.enqueue_trial(params, user_attrs={"proposed": True}))
        await self._publish(sweep_id)
        return await self.get(sweep_id)

    async def get(self, sweep_id: str) -> Sweep:
        study = await self._study(sweep_id)
        summary: Sweep = await self._run(_summarize, study, sweep_id)
        return summary

    # -- driving ----------------------------------------------------------------------------

    async def resume_all(self) -> list[str]:
        """On start: drive every sweep an earlier process left running."""
        if not await anyio.to_thread.run_sync(_sweeps_stored, self._database_url):
            return []  # nothing to resume: Optuna's import (~0.5 s) waits for a first sweep
        optuna = _optuna()
        try:
            storage = await self._store()
        except UnavailableError as exc:  # no sync driver: sweeps refused, the server serves on
            log.warning("%s", exc.message)
            return []
        studies = await self._run(optuna.get_all_study_summaries, storage)
        running = [
            s.study_name
            for s in studies
            if s.study_name.startswith(SWEEP_PREFIX) and s.user_attrs.get("status") == "running"
        ]
        for sweep_id in running:
            self._drive(sweep_id)
        return running

    def _drive(self, sweep_id: str) -> None:
        if sweep_id not in self._driving and not self._closing:
            self._driving.add(sweep_id)
            self._tg.start_soon(self._driver, sweep_id, name=f"sweep {sweep_id}")

    async def _driver(self, sweep_id: str) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                study = await self._study(sweep_id)
                request = SweepRequest.model_validate(study.user_attrs["request"])
                done = len(await self._run(study.get_trials, False))
                if done and request.seed is not None:  # a restart: do not replay the same draws
                    study.sampler = _sampler(_optuna(), request, offset=done)
                async with anyio.create_task_group() as tg:
                    await self._adopt_running(tg, study, request)
                    for _ in range(request.parallel):
                        tg.start_soon(self._worker, study, request)
                await self._run(lambda: study.set_user_attr("status", "completed"))
                await self._publish(sweep_id)
            except Exception:  # the top of a sweep's task: log, never take the server down
                log.exception("sweep %s stopped", sweep_id)
            finally:
                self._scopes.discard(scope)
                self._driving.discard(sweep_id)

    async def _adopt_running(self, tg: TaskGroup, study: Any, request: SweepRequest) -> None:
        """Trials a restart left running: watch their runs again, or mark them lost."""
        optuna = _optuna()
        trials = await self._run(study.get_trials, False, (optuna.trial.TrialState.RUNNING,))
        for frozen in trials:
            operation_id = frozen.user_attrs.get("operation_id")
            trial = optuna.trial.Trial(study, frozen._trial_id)
            if operation_id is None:
                await self._tell_lost(study, trial)
                continue
            done = max(frozen.intermediate_values, default=-1)
            tg.start_soon(self._watch, study, request, trial, operation_id, done)

    async def _worker(self, study: Any, request: SweepRequest) -> None:
        optuna = _optuna()
        distributions = _distributions(optuna, request.space)
        while True:
            async with self._lock:
                if self._closing or not await anyio.to_thread.run_sync(_wants_more, study, request):
                    return
                trial = await anyio.to_thread.run_sync(
                    lambda: study.ask(fixed_distributions=distributions)
                )
            sweep_id = study.study_name
            args = trial_args(
                request.base,
                _decoded(request, trial.params),
                name=f"{request.name or sweep_id} trial {trial.number}",
                tags={"sweep": sweep_id, "trial": str(trial.number)},
            )
            started = await self._start_trial(args)
            if isinstance(started, Exception):  # a combination the server refuses: failed
                log.warning("sweep %s trial %d not started: %s", sweep_id, trial.number, started)
                await self._run(_told, study, trial, None, optuna.trial.TrialState.FAIL)
                continue
            operation_id = started.operation_id
            await self._run(trial.set_user_attr, "operation_id", operation_id)
            await self._publish(sweep_id)
            await self._watch(study, request, trial, operation_id)

    async def _start_trial(self, args: StartTrainingArgs) -> Any:
        """The started run, or the exception that refused it. A script run finds every slot
        taken (--max-concurrent-runs) where a local run would queue: wait for a run to end and
        try again, as long as the sweep goes on."""
        while True:
            freed = anyio.Event()

            async def on_change(change: Change, freed: anyio.Event = freed) -> None:
                if change.kind == "status":
                    freed.set()

            stop = self._service.on_change(on_change)
            try:
                return await self._service.start_training(args)
            except UnavailableError as exc:
                declared = {e.name for e in self._service.list_entry_points().entry_points}
                if args.entry_point not in declared or self._closing:
                    return exc
                with anyio.move_on_after(5.0):
                    await freed.wait()
            except Exception as exc:
                return exc
            finally:
                stop()

    async def _watch(
        self,
        study: Any,
        request: SweepRequest,
        trial: Any,
        operation_id: str,
        reported: int = -1,
    ) -> None:
        """Report each stored epoch after `reported`; prune when the pruner says so; tell the
        end. The run is read before its metrics, so a finished run's metrics are all there."""
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        monitor = study.user_attrs.get("monitor", "val_loss")
        values: dict[int, float] = {}
        while True:
            changed = self._service.changed(operation_id)
            op = await self._service.get_operation(operation_id)
            read = await self._service.get_metrics(
                operation_id,
                MetricsQuery(metrics=[monitor], cursor=f"e{reported}", max_points=10_000),
            )
            series = read.series[0] if read.series else None
            new = [] if series is None else [
                (s, v) for s, v in zip(series.steps, series.values, strict=True) if s > reported
            ]  # fmt: skip
            for step, value in new:
                reported = step
                if value is None:
                    continue
                values[step] = value
                await self._run(trial.report, value, step)
            if new and not op.finished:
                reason = await self._prune_reason(request, trial, operation_id, monitor, values)
                if reason is not None:
                    try:
                        await self._service.stop_training(operation_id, reason)
                    except ConflictError:
                        continue  # it ended on its own meanwhile: the next pass tells that end
                    await self._run(trial.set_user_attr, "epochs", max(values))
                    await self._run(lambda: _told(study, trial, state=TrialState.PRUNED))
                    await self._publish(study.study_name)
                    return
            if op.finished:
                await self._tell_end(study, trial, op, values)
                return
            await self._publish(study.study_name)
            with anyio.move_on_after(5.0):
                await changed.wait()

    async def _prune_reason(
        self,
        request: SweepRequest,
        trial: Any,
        operation_id: str,
        monitor: str,
        values: dict[int, float],
    ) -> str | None:
        last = max(values) if values else None
        if last is None:
            return None
        if request.pruner == "analysis":
            analysis = await self._service.analyze(operation_id)
            if analysis.recommendation in _STOP_RECOMMENDATIONS:
                return f"pruned by the analysis at epoch {last}: " + "; ".join(analysis.reasons[:1])
            return None
        if request.pruner == "none" or not await self._run(trial.should_prune):
            return None
        return (
            f"pruned by Optuna's {request.pruner} pruner at epoch {last}: {monitor} "
            f"{values[last]:.4g} is behind the other trials at that epoch"
        )

    async def _tell_end(self, study: Any, trial: Any, op: Any, values: dict[int, float]) -> None:
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        await self._run(lambda: trial.set_user_attr("epochs", op.epochs_done))
        status = op.status.value
        if status == "completed" and values:
            best = min(values.values())
            await self._run(lambda: _told(study, trial, best))
        elif status == "interrupted":
            await self._tell_lost(study, trial)
        else:
            await self._run(lambda: _told(study, trial, state=TrialState.FAIL))
        await self._publish(study.study_name)

    async def _tell_lost(self, study: Any, trial: Any) -> None:
        """A trial whose run a restart cut short: failed, and not counted (it is replaced)."""
        optuna = _optuna()
        await self._run(lambda: trial.set_user_attr("lost", True))
        await self._run(lambda: _told(study, trial, state=optuna.trial.TrialState.FAIL))
        frozen = await self._run(self._storage.get_trial, trial._trial_id)
        proposed = frozen.system_attrs.get("fixed_params")
        if proposed:  # an agent's own trial is trained again, not replaced by a sampled one
            await self._run(lambda: study.enqueue_trial(proposed, user_attrs={"proposed": True}))


# -- pure-ish helpers (Optuna objects in, plain values out) ------------------------------------


def _told(study: Any, trial: Any, values: Any = None, state: Any = None) -> None:
    """`study.tell`. The grid sampler asks the study to stop once every point has been tried,
    which Optuna allows only inside `optimize()`; the trial is stored before that all the same
    (the sweep ends when its trials are done)."""
    try:
        study.tell(trial, values, state)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def _monitor(request: SweepRequest) -> str:
    base = StartTrainingArgs.model_validate(request.base)
    fraction = base.val_fraction
    if fraction is None and base.spec is not None:
        fraction = base.spec.get("val_fraction")
    return "train_loss" if fraction == 0 else "val_loss"


def _sampler(optuna: Any, request: SweepRequest, offset: int = 0) -> Any:
    seed = None if request.seed is None else request.seed + offset
    if request.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if request.sampler == "grid":
        grid = {name: [_encoded(c) for c in p.choices or ()] for name, p in request.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    startup = max(2, min(10, request.trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(optuna: Any, request: SweepRequest, max_epochs: int | None) -> Any:
    if request.pruner == "hyperband":
        epochs = max_epochs if max_epochs is not None else trial_epochs(request, None)
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs or 20, reduction_factor=3
        )
    if request.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _distributions(optuna: Any, space: dict[str, Param]) -> dict[str, Any]:
    d = optuna.distributions
    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.choices is not None:
            out[name] = d.CategoricalDistribution([_encoded(c) for c in p.choices])
        elif p.int:
            step = int(p.step or 1)
            out[name] = d.IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log, step=step)
        else:
            out[name] = d.FloatDistribution(p.low or 0.0, p.high or 0.0, log=p.log, step=p.step)
    return out


def _encoded(value: Any) -> Any:
    """Optuna stores categorical choices as plain scalars: a list (hidden_sizes) as JSON text."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _decoded(request: SweepRequest, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as start_training takes them (JSON text choices back to lists)."""
    out = {}
    for name, value in params.items():
        choices = request.space[name].choices if name in request.space else None
        listed = choices is not None and any(isinstance(c, list | dict) for c in choices)
        out[name] = json.loads(value) if listed and isinstance(value, str) else value
    return out


def _counted(frozen: Any) -> bool:
    return not frozen.user_attrs.get("lost", False)


def _wants_more(study: Any, request: SweepRequest) -> bool:
    trials = [t for t in study.get_trials(deepcopy=False) if _counted(t)]
    if len(trials) >= request.trials:
        return False
    if request.budget is not None:
        spent = sum(int(t.user_attrs.get("epochs", 0)) for t in trials)
        return spent < request.budget
    return True


def _summarize(study: Any, sweep_id: str) -> Sweep:
    import optuna

    request = SweepRequest.model_validate(study.user_attrs["request"])
    states = optuna.trial.TrialState
    names = {
        states.RUNNING: "running",
        states.COMPLETE: "complete",
        states.PRUNED: "pruned",
        states.FAIL: "failed",
        states.WAITING: "waiting",
    }
    trials = [t for t in study.get_trials(deepcopy=False) if _counted(t)]
    counts: dict[str, int] = {}
    entries: list[LeaderboardEntry] = []
    for t in trials:
        state = names.get(t.state, "failed")
        counts[state] = counts.get(state, 0) + 1
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        entries.append(
            LeaderboardEntry(
                trial=t.number,
                operation_id=t.user_attrs.get("operation_id"),
                state=state,  # type: ignore[arg-type]
                value=value,
                epochs=t.user_attrs.get("epochs"),
                params=_decoded(request, t.params),
            )
        )
    complete = [e for e in entries if e.state == "complete" and e.value is not None]
    ranked = sorted(
        (e for e in entries if e.value is not None),
        key=lambda e: (e.state != "complete", e.value),
    )
    best = min(complete, key=lambda e: e.value or 0.0) if complete else None
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():  # Optuna warns that few trials say little
                warnings.simplefilter("ignore")
                raw = optuna.importance.get_param_importances(study)
            importances = {k: round(float(v), 4) for k, v in raw.items()}
        except (RuntimeError, ValueError):  # e.g. a parameter that never varied
            importances = {}
    status = study.user_attrs.get("status", "running")
    return Sweep(
        sweep_id=sweep_id,
        name=request.name,
        status=status,
        monitor=study.user_attrs.get("monitor", "val_loss"),
        trials=request.trials,
        counts=counts,
        epochs_spent=sum(int(e.epochs or 0) for e in entries),
        budget=request.budget,
        leaderboard=ranked[:5],
        importances=importances,
        best_operation_id=best.operation_id if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else None,
    )
