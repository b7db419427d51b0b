"""`init`, `log`, `finish`: the conventions of wandb, trackio and mlflow, over `MetricsReporter`.

    import training_mcp

    run = training_mcp.init(url="http://127.0.0.1:8765", name="my loop", config={"lr": 3e-4})
    for epoch in range(1, 11):
        run.log(epoch, train_loss=..., val_loss=...)
    run.finish()

`init()` with no arguments attaches to the run a training-mcp server started this process for
(an entry point): it reads `TRAINING_MCP_URL`, `TRAINING_MCP_OPERATION_ID` and
`TRAINING_MCP_TOKEN`. A run attached that way is the server's: `finish()` sends what is queued,
and the server records how the run ended from the process's exit code. A run `init` registered
itself (`backend: external`) is reported `completed` by `finish()`, or `failed` when it leaves a
`with` block by an exception.

`Run.save_checkpoint` and `Run.resume_from` are the checkpoint protocol with the server
(`training_mcp.checkpoints`): what lets `resume_training` and `fork_training` go on from a
script's epoch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from training_mcp.checkpoints import Checkpoint, Checkpoints, Writer
from training_mcp.reporter import MetricsReporter, ReportError

__all__ = [
    "ENV_OPERATION_ID",
    "ENV_TOKEN",
    "ENV_URL",
    "Run",
    "current_run",
    "finish",
    "init",
    "log",
    "resume_from",
]

logger = logging.getLogger(__name__)

ENV_URL = "TRAINING_MCP_URL"
ENV_OPERATION_ID = "TRAINING_MCP_OPERATION_ID"
ENV_TOKEN = "TRAINING_MCP_TOKEN"
ENV_PUSH_TOKEN = "TRAINING_MCP_PUSH_TOKEN"  # the run's push credential (X-Training-Push-Token)

_lock = threading.Lock()
_current: Run | None = None


class Run:
    """One run being reported: `log` per epoch (or step), `finish` at the end; a context manager.

    `reporter` is the `MetricsReporter` underneath (`flush()`, `stats`, `heartbeat()`)."""

    def __init__(
        self,
        reporter: MetricsReporter,
        *,
        url: str,
        name: str | None,
        config: Mapping[str, Any] | None,
        owned: bool,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.reporter = reporter
        self.url = url
        self.name = name
        self.config = dict(config or {})
        self.checkpoints = checkpoints if checkpoints is not None else Checkpoints(None)
        self._owned = owned
        self._finished = False

    @property
    def id(self) -> str:
        """The server's operation id of this run."""
        return self.reporter.operation_id

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def should_stop(self) -> bool:
        """True once the server asked this run to stop (`stop_training`) or the run has ended
        there: end training at the next step boundary. It comes with the answers to the
        run's pushes, so it costs nothing to read every step."""
        return self.reporter.stop_requested is not None

    @property
    def stop_reason(self) -> str | None:
        """Why the server asked this run to stop, when it did."""
        return self.reporter.stop_requested

    def resume_from(self) -> Checkpoint | None:
        """The checkpoint to go on from, when the server resumed or forked this run
        (`resume_training`, `fork_training`): its epoch and file. None: start afresh."""
        return self.checkpoints.resume_from()

    def save_checkpoint(
        self,
        epoch: int,
        state: object = None,
        *,
        best: bool = False,
        writer: Writer | None = None,
    ) -> Checkpoint:
        """Save epoch `epoch`'s checkpoint in the run's checkpoint folder, so the server can
        resume or fork the run from it: `state` as bytes or through `torch.save`, or `writer`
        writing the file at the path it is given; `best`: the best epoch so far. Call it after
        `log`ging the epoch."""
        return self.checkpoints.save(epoch, state, best=best, writer=writer)

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        /,
        *,
        epoch: int | None = None,
        **values: Any,
    ) -> None:
        """Queue values at `step`: the epoch number for epoch metrics (`train_loss`, `val_loss`,
        ...), the global batch for `step/...` ones (then give `epoch`). Never waits on the
        network; anything `float()` takes is a value."""
        if self._finished:
            raise RuntimeError(f"run {self.id} is finished; call training_mcp.init() for another")
        self.reporter.log(step, metrics, epoch=epoch, **values)

    def finish(
        self,
        status: Literal["completed", "failed"] = "completed",
        *,
        error: str | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        """Send what is queued (at most `timeout_s`), report the end of a run `init` registered,
        and close. Calling it again does nothing. Raises `ReportError` if the server refused
        points or the status."""
        global _current
        if self._finished:
            return
        self._finished = True
        with _lock:
            if _current is self:
                _current = None
        try:
            if self._owned:
                self.reporter.report_status(status, error=error)
        finally:
            self.reporter.close(timeout_s)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        exc = exc_info[1]
        if not isinstance(exc, BaseException):
            self.finish()
            return
        # The training's own exception matters more than a failure to report it.
        try:
            self.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        except ReportError as report_error:
            logger.warning("could not report run %s failed: %s", self.id, report_error)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, url={self.url!r})"


def init(
    url: str | None = None,
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    tags: Mapping[str, str] | None = None,
    operation_id: str | None = None,
    token: str | None = None,
    push_token: str | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> Run:
    """Start reporting a run and make it the current one (`training_mcp.log` goes to it).

    - `init()`: attach to the run the server started this process for (from the environment;
      a `name` or `config` given then is kept on the `Run` only).
    - `init(url, name=..., config=...)`: register a new run trained here; `config` is stored as
      its spec, `epochs` as its planned length.
    - `init(url, operation_id=...)`: report to a run that exists.

    `url`, `operation_id`, `token` and `push_token` (the run's push credential, which a run
    registered elsewhere was answered with) fall back to `TRAINING_MCP_URL`,
    `TRAINING_MCP_OPERATION_ID`, `TRAINING_MCP_TOKEN` and `TRAINING_MCP_PUSH_TOKEN`;
    `checkpoint_dir` (where `save_checkpoint` writes) to `TRAINING_MCP_CHECKPOINT_DIR`. `options`
    go to `MetricsReporter` (`max_batch`, `timeout_s`, `retry`, `queue`)."""
    global _current
    environ = os.environ if env is None else env
    env_url = environ.get(ENV_URL) or None
    # Under a server-started process the run exists already: attach to it, whatever name or
    # config the script passes (so a script runs the same by hand and as an entry point).
    if operation_id is None and url in (None, env_url):
        operation_id = environ.get(ENV_OPERATION_ID) or None
    url = url or env_url
    if not url:
        raise ValueError(f"url: give the server's URL, or set {ENV_URL}")
    token = token or environ.get(ENV_TOKEN) or None
    saved = Checkpoints.from_env(environ, checkpoint_dir)
    if operation_id is not None:
        push_token = push_token or environ.get(ENV_PUSH_TOKEN) or None
        reporter = MetricsReporter(
            url, operation_id, token=token, push_token=push_token, transport=transport, **options
        )
        run = Run(reporter, url=url, name=name, config=config, owned=False, checkpoints=saved)
    else:
        reporter = MetricsReporter.start_run(
            url,
            name=name,
            epochs=epochs,
            tags=tags,
            spec=config,
            token=token,
            transport=transport,
            **options,
        )
        run = Run(reporter, url=url, name=name, config=config, owned=True, checkpoints=saved)
    with _lock:
        previous, _current = _current, run
    if previous is not None and not previous.finished:
        previous.finish()
    return run


def current_run() -> Run | None:
    """The run `init` started last, until it finishes."""
    return _current


def resume_from(env: Mapping[str, str] | None = None) -> Checkpoint | None:
    """`Run.resume_from` of the current run; before `init` (a framework's `fit(ckpt_path=...)`
    is called before its callbacks start the run), what the environment says."""
    run = _current
    if run is not None:
        return run.resume_from()
    return Checkpoints.from_env(os.environ if env is None else env).resume_from()


def log(step: int, metrics: Mapping[str, Any] | None = None, /, **values: Any) -> None:
    """`Run.log` on the current run."""
    run = _current
    if run is None:
        raise RuntimeError("no current run: call training_mcp.init() first")
    run.log(step, metrics, **values)


def finish(
    status: Literal["completed", "failed"] = "completed", *, error: str | None = None
) -> None:
    """`Run.finish` on the current run; nothing when there is none."""
    run = _current
    if run is not None:
        run.finish(status, error=error)
