"""The sender under `training_mcp.init()`: pushes one run's points to training-mcp's REST mirror.

    with MetricsReporter.start_run("http://127.0.0.1:8765", name="my run") as run:
        for epoch in range(1, 11):
            ...
            run.log(epoch, train_loss=loss, val_loss=val_loss)

`log()` only queues the points. A background thread sends them, up to `max_batch` per request:
epoch-level points at once (an agent waits for them), per-step and system points after lingering up
to `linger_s` for more to join them (a loop logging every step would otherwise pay for one request
per step), and whatever piled up while a request was in flight together. It retries transient
failures with exponential backoff and full jitter, and removes points from the queue only once the
server has answered. The server stores a point once per (name, step), so a retried batch is
harmless. Training never waits on the network; `flush()`, `report_status()` and `close()` do, and
they raise `ReportError` if something was refused.

The queue is a small interface (`PointQueue`): the in-memory `MemoryQueue` by default, a durable
spool where points must survive a restart.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Protocol

import httpx

from training_mcp.points import (
    MAX_BATCH_POINTS,
    PUSH_TOKEN_HEADER,
    EpochLike,
    MetricPoint,
    StepLike,
    is_epoch_metric,
    points_at,
    step_points,
)

__all__ = [
    "MemoryQueue",
    "MetricsReporter",
    "PointQueue",
    "ReportError",
    "ReporterStats",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

FinalStatus = Literal["completed", "failed"]


class PointQueue(Protocol):
    """Where points wait until the server has stored them, oldest first.

    The reporter calls it under its own lock (from the caller's thread and its sender thread), so
    an implementation needs no locking of its own. `ack(n)` removes the first n points, after the
    server answered for them; anything not acknowledged is sent again later.
    """

    def put(self, points: Sequence[MetricPoint]) -> None: ...

    def peek(self, limit: int) -> list[MetricPoint]: ...

    def ack(self, count: int) -> None: ...

    def __len__(self) -> int: ...


class MemoryQueue:
    """The default queue: in memory, lost with the process."""

    def __init__(self) -> None:
        self._points: deque[MetricPoint] = deque()

    def put(self, points: Sequence[MetricPoint]) -> None:
        self._points.extend(points)

    def peek(self, limit: int) -> list[MetricPoint]:
        return [self._points[i] for i in range(min(limit, len(self._points)))]

    def ack(self, count: int) -> None:
        for _ in range(min(count, len(self._points))):
            self._points.popleft()

    def __len__(self) -> int:
        return len(self._points)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries per request; before try n+1 wait a random time in
    [0, min(max_delay_s, base_delay_s * 2**n)] ("full jitter"), or what Retry-After asks."""

    attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 100:
            raise ValueError(f"attempts: must be between 1 and 100, got {self.attempts}")
        if not (0 <= self.base_delay_s <= self.max_delay_s <= 3600):
            raise ValueError(
                "base_delay_s, max_delay_s: need 0 <= base_delay_s <= max_delay_s <= 3600, got "
                f"{self.base_delay_s} and {self.max_delay_s}"
            )

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(retry, 60))
        wait = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay_s))
        return wait


class ReportError(Exception):
    """The server refused something (`status_code`, its error `code` and `field`), or could not be
    reached after every retry (`transient`: the points stay queued and are sent again later)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str = "unreachable",
        field: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.field = field
        self.transient = transient

    @classmethod
    def from_response(cls, response: httpx.Response) -> ReportError:
        code, field, message = "http_error", None, response.text[:500]
        try:
            error = response.json()["error"]
            code, field, message = str(error["code"]), error.get("field"), str(error["message"])
        except (ValueError, KeyError, TypeError):
            pass
        return cls(
            f"HTTP {response.status_code}: {message}",
            status_code=response.status_code,
            code=code,
            field=field,
            transient=response.status_code in _TRANSIENT_STATUS,
        )


@dataclass(frozen=True, slots=True)
class ReporterStats:
    """What the reporter did so far: points the server received and newly stored (a retried or
    repeated point is received again but stored once), requests, retries, points refused."""

    points_sent: int = 0
    points_stored: int = 0
    requests: int = 0
    retries: int = 0
    points_refused: int = 0
    queued: int = 0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class MetricsReporter:
    """Sends one run's metrics to `base_url` (the server, e.g. http://127.0.0.1:8765).

    Use `start_run()` to register a run trained here (an "external" run), or the constructor with
    the id of a run that exists. Also a `trainer.records.MetricSink` (`on_epoch`, `on_step`).
    """

    def __init__(
        self,
        base_url: str,
        operation_id: str,
        *,
        token: str | None = None,
        push_token: str | None = None,
        max_batch: int = 1000,
        linger_s: float = 0.25,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        queue: PointQueue | None = None,
        transport: httpx.BaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_POINTS:
            raise ValueError(
                f"max_batch: must be between 1 and {MAX_BATCH_POINTS}, got {max_batch}"
            )
        if not 0 <= linger_s <= 60:
            raise ValueError(f"linger_s: must be between 0 and 60, got {linger_s}")
        if not 0 < timeout_s <= 600:
            raise ValueError(f"timeout_s: must be more than 0 and at most 600, got {timeout_s}")
        self.operation_id = operation_id
        self.push_token = push_token  # the run's push credential (start_run: the server's)
        self._client = _client(base_url, token, timeout_s, transport, push_token)
        self._owns_run = False
        self._finished = False
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._urgent = False  # an epoch point or a flush is waiting: send without lingering
        self._retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._queue: PointQueue = queue if queue is not None else MemoryQueue()
        self._cv = threading.Condition()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._stalled = False  # retries ran out: wait for new points or a flush to try again
        self._error: ReportError | None = None
        self._stats = ReporterStats()
        self._stop_requested: str | None = None

    @classmethod
    def start_run(
        cls,
        base_url: str,
        *,
        name: str | None = None,
        epochs: int | None = None,
        tags: Mapping[str, str] | None = None,
        spec: Mapping[str, Any] | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> MetricsReporter:
        """Register a run trained here (`backend: external`) and return its reporter. Used as a
        context manager, the run is reported completed on exit, or failed if an exception ends it.
        `options` go to the constructor."""
        body: dict[str, Any] = {"backend": "external", "name": name, "epochs": epochs}
        body.update(tags=dict(tags) if tags else None, spec=dict(spec) if spec else None)
        with _client(base_url, token, options.get("timeout_s", 5.0), transport) as client:
            response = _request_once_delivered(
                client, "/api/v1/operations", {k: v for k, v in body.items() if v is not None}
            )
        reporter = cls(
            base_url,
            response["operation_id"],
            token=token,
            push_token=response.get("push_token"),
            transport=transport,
            **options,
        )
        reporter._owns_run = True
        return reporter

    # -- the training loop's side -------------------------------------------------------------

    def log(
        self,
        step: int,
        metrics: Mapping[str, float] | None = None,
        /,
        *,
        epoch: int | None = None,
        wall_time: float | None = None,
        **values: float,
    ) -> None:
        """Queue metric values at `step` (the epoch number for epoch-level metrics; then `epoch`
        defaults to it). Values may be NaN or infinite; anything `float()` takes is accepted
        (a 0-d tensor, a numpy scalar). Never blocks on the network."""
        # Names are checked here too: one bad point makes the server refuse its whole batch.
        when = time.time() if wall_time is None else wall_time
        points = points_at(step, {**(metrics or {}), **values}, epoch=epoch, wall_time=when)
        if points:
            self.put(points)

    def on_epoch(self, record: EpochLike) -> None:
        """`MetricSink`: an epoch of `trainer.loop` (step = epoch)."""
        self.log(record.epoch, record.metrics(), wall_time=record.timestamp)

    def on_step(self, record: StepLike) -> None:
        """`MetricSink`: a batch's training loss, as `step/train_loss` at the global step."""
        self.put(step_points([record]))

    def put(self, points: Sequence[MetricPoint]) -> None:
        """Queue points made elsewhere (e.g. by `training_mcp.points.epoch_points`), unchecked:
        the server refuses a batch with a bad one whole. Never blocks on the network."""
        with self._cv:
            if self._closing:
                raise RuntimeError("this reporter is closed")
            was_waiting = not len(self._queue) or self._stalled
            self._queue.put(points)
            urgent = not self._urgent and any(is_epoch_metric(p.name) for p in points)
            self._urgent = self._urgent or urgent
            self._stalled = False
            self._start_sender()
            # Wake the sender only when what it waits for may have come: one wake per logged
            # step costs a loop of small steps more than the step itself.
            if was_waiting or urgent or len(self._queue) >= self._max_batch:
                self._cv.notify_all()

    # -- waiting for the server ---------------------------------------------------------------

    @property
    def stop_requested(self) -> str | None:
        """Why the server asked this run to stop (`stop_training`), or that the run has ended
        there; None otherwise. Read from the answers to pushes: it costs no request."""
        return self._stop_requested

    @property
    def stats(self) -> ReporterStats:
        with self._cv:
            return replace(self._stats, queued=len(self._queue))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued point has been answered for. Raises `ReportError` if the server
        refused some (they are dropped: sending them again cannot help), or could not be reached
        after every retry (they stay queued), or on timeout."""
        with self._cv:
            self._stalled = False
            self._urgent = self._urgent or bool(len(self._queue))
            if len(self._queue):
                self._start_sender()
            self._cv.notify_all()
            done = self._cv.wait_for(lambda: not len(self._queue) or self._stalled, timeout_s)
            error, self._error = self._error, None
        if not done:
            raise ReportError(
                f"flush: {len(self._queue)} points still queued after {timeout_s} s",
                code="timeout",
                transient=True,
            )
        if error is not None:
            raise error

    def report_status(
        self, status: FinalStatus, *, error: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Send what is queued, then report that the run ended (`completed` or `failed`, with an
        error message). Returns the run as the server now has it."""
        self.flush()
        body = {"status": status, "error": error, "reason": reason}
        response = self._post(
            f"/api/v1/operations/{self.operation_id}/status",
            {k: v for k, v in body.items() if v is not None},
        )
        self._finished = True
        result: dict[str, Any] = response.json()
        return result

    def heartbeat(self) -> dict[str, Any]:
        """Tell the server the run is alive: one try (the next beat is the retry). Returns the
        run as the server has it; raises `ReportError` if refused (a 409: the run has ended
        there, stop training) or unreachable."""
        try:
            response = self._client.post(
                f"/api/v1/operations/{self.operation_id}/heartbeat", content=b"{}"
            )
        except httpx.TransportError as exc:
            raise ReportError(f"{type(exc).__name__}: {exc}", transient=True) from exc
        if not response.is_success:
            raise ReportError.from_response(response)
        result: dict[str, Any] = response.json()
        return result

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Flush (at most `timeout_s`), stop the sender and close the connection. An unreachable
        server is tried again until `timeout_s` runs out (a restarting server loses nothing)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    self.flush(left)
                    break
                except ReportError as error:
                    # `flush` gives up when a round of retries fails; the points are still here.
                    if not error.transient or error.code == "timeout" or not left:
                        raise
                    time.sleep(min(1.0, left))  # between rounds, whatever the retry policy
        finally:
            with self._cv:
                self._closing = True
                self._cv.notify_all()
            self._abort.set()
            if self._thread is not None:
                self._thread.join(timeout=10.0)
            self._client.close()

    def __enter__(self) -> MetricsReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._owns_run and not self._finished:
                if exc is None:
                    self.report_status("completed")
                else:
                    self._report_failure(exc)
        finally:
            self.close()

    def _report_failure(self, exc: BaseException) -> None:
        # The training's own exception matters more than a failure to report it.
        try:
            self.report_status("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        except ReportError as report_error:
            log.warning("could not report run %s failed: %s", self.operation_id, report_error)

    # -- the sender thread --------------------------------------------------------------------

    def _start_sender(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send_queued, name=f"metrics-reporter-{self.operation_id}", daemon=True
            )
            self._thread.start()

    def _send_queued(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closing or (len(self._queue) and not self._stalled))
                if not len(self._queue) or self._stalled:
                    return  # closing with nothing (more) to try
                if not self._urgent and self._linger_s:
                    self._cv.wait_for(self._worth_sending, self._linger_s)
                batch = self._queue.peek(self._max_batch)
                if len(batch) == len(self._queue):
                    self._urgent = False  # this batch carries everything that was waiting
            try:
                response = self._post(
                    f"/api/v1/operations/{self.operation_id}/metrics",
                    {"points": [p.to_json() for p in batch]},
                )
            except ReportError as error:
                self._settle(batch, error)
                continue
            answer = response.json()
            stop = answer.get("stop_requested")
            if isinstance(stop, str) and stop:
                self._stop_requested = stop
            self._settle(batch, None, stored=int(answer.get("stored", 0)))

    def _worth_sending(self) -> bool:
        """Whether a lingering sender should send now (under `_cv`)."""
        return self._urgent or self._closing or len(self._queue) >= self._max_batch

    def _settle(self, batch: list[MetricPoint], error: ReportError | None, stored: int = 0) -> None:
        if error is not None and error.status_code == 409 and error.field == "operation_id":
            self._stop_requested = error.message  # the run has ended there: nothing to train for
        with self._cv:
            if error is not None and error.transient:
                self._stalled = True
                self._error = error
                log.warning("metrics for %s stay queued: %s", self.operation_id, error)
            else:
                self._queue.ack(len(batch))
                if error is None:
                    if self._error is not None and self._error.transient:
                        self._error = None  # an outage that is over: what stalled is sent now
                    self._stats = replace(
                        self._stats,
                        points_sent=self._stats.points_sent + len(batch),
                        points_stored=self._stats.points_stored + stored,
                    )
                else:
                    self._error = error
                    self._stats = replace(
                        self._stats, points_refused=self._stats.points_refused + len(batch)
                    )
                    log.error("server refused %d points: %s", len(batch), error)
            self._cv.notify_all()

    def _post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """POST with retries. Only for idempotent requests: a retry may repeat a stored one."""
        content = json.dumps(body, allow_nan=True).encode()
        last: ReportError | None = None
        last_retry_after: float | None = None
        for attempt in range(self._retry.attempts):
            if attempt:
                wait = self._retry.delay(attempt - 1, self._rng, last_retry_after)
                with self._cv:
                    self._stats = replace(self._stats, retries=self._stats.retries + 1)
                if self._abort.wait(wait):
                    break
            last_retry_after = None
            try:
                response = self._client.post(path, content=content)
            except httpx.TransportError as exc:
                last = ReportError(f"{type(exc).__name__}: {exc}", transient=True)
                continue
            finally:
                with self._cv:
                    self._stats = replace(self._stats, requests=self._stats.requests + 1)
            if response.is_success:
                return response
            last = ReportError.from_response(response)
            if not last.transient:
                raise last
            last_retry_after = _retry_after(response)
        assert last is not None
        raise last


def _client(
    base_url: str,
    token: str | None,
    timeout_s: float,
    transport: httpx.BaseTransport | None,
    push_token: str | None = None,
) -> httpx.Client:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if push_token:  # the run's own credential: only its owner may push into it
        headers[PUSH_TOKEN_HEADER.lower()] = push_token
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout_s),
        transport=transport,
    )


def _request_once_delivered(
    client: httpx.Client, path: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """A POST that is not idempotent (it creates a run): retried only when it cannot have
    arrived (no connection) or the server asks to come back later."""
    policy, rng = RetryPolicy(attempts=4), random.Random()
    for attempt in range(policy.attempts):
        try:
            response = client.post(path, content=json.dumps(body).encode())
        except httpx.ConnectError as exc:
            error = ReportError(f"{type(exc).__name__}: {exc}", transient=True)
            retry_after = None
        else:
            if response.is_success:
                result: dict[str, Any] = response.json()
                return result
            error = ReportError.from_response(response)
            if response.status_code not in (429, 503):
                raise error
            retry_after = _retry_after(response)
        if attempt + 1 < policy.attempts:
            time.sleep(policy.delay(attempt, rng, retry_after))
    raise error
