"""The REST mirror under /api/v1: the MCP tools' service over plain HTTP and JSON.

Thin edges: each route parses its input into a shared model, calls one service function and
answers with the model it returns. Every error is `{"error": {"code", "message", "field"}}` with
the status of the service error (`mcp_server.core.errors`); a client mistake never gets a 500. The
endpoint table below is also the OpenAPI document (`/api/v1/openapi.json`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from host_bridge.protocol import PUSH_TOKEN_HEADER
from mcp_server import __version__
from mcp_server.core.errors import InvalidInputError, ServiceError
from mcp_server.core.models import OperationInfo, OperationList, OperationMetrics, StartTrainingArgs
from mcp_server.core.models import StartTrainingResult as Started
from mcp_server.core.queries import ListQuery, MetricsQuery, PlotQuery, StopRequest
from mcp_server.core.service import TrainingService
from mcp_server.rest.bridge import bridge_endpoints
from mcp_server.rest.compare import compare_endpoints
from mcp_server.rest.deletion import deletion_endpoints
from mcp_server.rest.events import is_exhausted, operation_events, parse_last_event_id
from mcp_server.rest.export import export_endpoints
from mcp_server.rest.http import (
    Endpoint,
    Handler,
    body_or_empty,
    http_exception_response,
    internal_error_response,
    json_response,
    parse_body,
    parse_query,
    read_body,
    read_json,
    service_error_response,
)
from mcp_server.rest.models import (
    MAX_POINTS,
    EpochEvent,
    Health,
    IngestResult,
    MetricsBatch,
    StatusReport,
)
from mcp_server.rest.openapi import docs_page, openapi_document
from mcp_server.rest.points_body import parse_points
from mcp_server.rest.scripts import script_endpoints
from mcp_server.rest.steering import steering_endpoints
from mcp_server.rest.stream_slots import StreamSlots
from mcp_server.rest.sweeps import sweep_endpoints
from storage import Operation, OperationStatus
from trainer.analysis import AnalysisParams, LossAnalysis

__all__ = ["OPEN_PATHS", "PREFIX", "rest_endpoints", "rest_routes"]

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{PREFIX}/health"})


def rest_routes(service: TrainingService) -> list[BaseRoute]:
    """The REST mirror as one mounted app with its own JSON error handlers."""
    endpoints = rest_endpoints(service)
    by_path: dict[str, dict[str, Endpoint]] = defaultdict(dict)
    for e in endpoints:
        by_path[e.path][e.method] = e
    api = Starlette(
        routes=[
            Route(path, _dispatch(methods), methods=list(methods))
            for path, methods in by_path.items()
        ],
        exception_handlers={
            ServiceError: _on_service_error,
            HTTPException: _on_http_exception,
            Exception: _on_internal_error,
        },
    )
    return [_ApiMount(PREFIX, app=api)]


class _ApiMount(Mount):
    """Everything under the prefix, including paths with a newline (a plain Mount's `.*` stops at
    one and would hand the request to the MCP app's plain-text 404)."""

    def __init__(self, path: str, app: Starlette) -> None:
        super().__init__(path, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


def _dispatch(methods: dict[str, Endpoint]) -> Handler:
    async def dispatch(request: Request) -> Response:
        endpoint = methods[request.method if request.method != "HEAD" else "GET"]
        if endpoint.query is None and request.query_params:
            key = next(iter(request.query_params))
            raise InvalidInputError(f"{key}: this route takes no query parameters", field=key)
        return await endpoint.handler(request)

    return dispatch


async def _on_service_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


async def _on_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return http_exception_response(exc)


async def _on_internal_error(_request: Request, _exc: Exception) -> Response:
    return internal_error_response()


def rest_endpoints(service: TrainingService) -> list[Endpoint]:
    """Every route: handler and OpenAPI description together, so the two cannot drift."""
    config = service.config
    slots = StreamSlots(config.max_streams_per_run, config.max_streams)

    def op_id(request: Request) -> str:
        value: str = request.path_params["operation_id"]
        return value

    async def health(_request: Request) -> Response:
        try:
            await service.list_operations(ListQuery(limit=1))
            database = True
        except Exception:  # a health check reports a failure instead of raising it
            log.exception("health: the database did not answer")
            database = False
        body = Health(
            status="ok" if database else "degraded",
            version=__version__,
            database=database,
            runs_active=service.runs_active,
        )
        return json_response(body, 200 if database else 503)

    async def list_operations(request: Request) -> Response:
        return json_response(await service.list_operations(parse_query(request, ListQuery)))

    async def start_operation(request: Request) -> Response:
        args = parse_body(
            StartTrainingArgs, body_or_empty(await read_json(request, required=False))
        )
        started = await service.start_training(args)
        location = f"{PREFIX}/operations/{started.operation_id}"
        return json_response(started, 202, {"Location": location})

    async def get_operation(request: Request) -> Response:
        return json_response(await service.get_operation(op_id(request)))

    async def cancel_operation(request: Request) -> Response:
        cancel = parse_body(StopRequest, body_or_empty(await read_json(request, required=False)))
        return json_response(await service.stop_training(op_id(request), cancel.reason))

    async def report_status(request: Request) -> Response:
        report = parse_body(StatusReport, await read_json(request))
        operation_id = op_id(request)
        op = await service.report_status(
            operation_id,
            OperationStatus(report.status),
            error=report.error,
            reason=report.reason,
            push_token=request.headers.get(PUSH_TOKEN_HEADER),
        )
        return json_response(op)

    async def get_metrics(request: Request) -> Response:
        query = parse_query(request, MetricsQuery)
        return json_response(await service.get_metrics(op_id(request), query))

    async def push_metrics(request: Request) -> Response:
        points = parse_points(await read_body(request))
        pusher = request.headers.get(PUSH_TOKEN_HEADER)
        result = await service.push_metrics(op_id(request), points, pusher)
        body = IngestResult(
            received=result.received,
            stored=result.stored,
            duplicates=result.received - result.stored,
            stop_requested=service.stop_request(op_id(request)),
        )
        # Pushed often: the stop request only when there is one.
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")

    async def analyze(request: Request) -> Response:
        params = parse_query(request, AnalysisParams)
        return json_response(await service.analyze(op_id(request), params))

    async def plot(request: Request) -> Response:
        query = parse_query(request, PlotQuery)
        png, _caption = await service.plot([op_id(request)], query)
        return Response(png, media_type="image/png")

    async def stream_events(request: Request) -> Response:
        operation_id = op_id(request)
        position = parse_last_event_id(request.headers.get("last-event-id"))
        if await is_exhausted(service, operation_id, position):
            return Response(status_code=204)
        slots.acquire(operation_id)
        return StreamingResponse(
            slots.holding(operation_id, operation_events(service, operation_id, position)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @functools.cache
    def described() -> tuple[dict[str, Any], str]:
        # Built on first ask: the schemas took a third of the time from start to healthy.
        document = openapi_document(endpoints, PREFIX)
        return document, docs_page(document)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(described()[0])

    async def docs(_request: Request) -> Response:
        return HTMLResponse(described()[1])

    ops = "/operations/{operation_id}"
    endpoints = [
        Endpoint(
            "GET",
            "/health",
            health,
            "health",
            "Version, database reachable, runs active",
            ok=Health,
            errors=(503,),
            open=True,
        ),
        Endpoint(
            "GET",
            "/operations",
            list_operations,
            "list_operations",
            "Runs, newest first, optionally in one status; a page of `limit`, then `next_cursor`",
            ok=OperationList,
            query=ListQuery,
        ),
        Endpoint(
            "POST",
            "/operations",
            start_operation,
            "start_operation",
            "Start a run (the start_training tool's flat arguments; {} trains the demo), "
            "or register one trained elsewhere with backend: external",
            ok_status=202,
            ok=Started,
            body=StartTrainingArgs,
            body_required=False,
            errors=(413, 422, 503),
            headers={"Location": "The new operation's URL"},
        ),
        Endpoint(
            "GET",
            ops,
            get_operation,
            "get_operation",
            "Status, spec, progress, timing, error or stop reason, latest metric values",
            ok=OperationInfo,
            errors=(404,),
        ),
        Endpoint(
            "POST",
            f"{ops}/cancel",
            cancel_operation,
            "cancel_operation",
            "Stop a queued or running run; its finished epochs are kept",
            ok=Operation,
            body=StopRequest,
            body_required=False,
            errors=(404, 409, 413, 422),
        ),
        Endpoint(
            "POST",
            f"{ops}/status",
            report_status,
            "report_status",
            "An external run reports that it completed or failed",
            ok=Operation,
            body=StatusReport,
            errors=(404, 409, 413, 422),
        ),
        Endpoint(
            "GET",
            f"{ops}/metrics",
            get_metrics,
            "get_metrics",
            "Metric history: columnar steps and values, totals vs returned, next_cursor, "
            "trend indicators",
            ok=OperationMetrics,
            query=MetricsQuery,
            errors=(404,),
        ),
        Endpoint(
            "POST",
            f"{ops}/metrics",
            push_metrics,
            "push_metrics",
            f"Store up to {MAX_POINTS} points (1 MiB), all or none, idempotent by "
            "(name, step); NaN and Infinity are accepted",
            ok=IngestResult,
            body=MetricsBatch,
            errors=(404, 409, 413, 422),
        ),
        Endpoint(
            "GET",
            f"{ops}/analysis",
            analyze,
            "analyze_loss",
            "Verdict, recommendation and the numbers behind them (the analyze_loss tool)",
            ok=LossAnalysis,
            query=AnalysisParams,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            f"{ops}/plot.png",
            plot,
            "plot_metrics",
            "A PNG of the run's curves, best epoch marked",
            ok="image/png",
            query=PlotQuery,
            errors=(404,),
        ),
        Endpoint(
            "GET",
            f"{ops}/events",
            stream_events,
            "stream_events",
            "Server-Sent Events: `epoch` per epoch stored, `status` per status change; "
            "ends when the run ends; resumable with Last-Event-ID",
            ok="text/event-stream",
            errors=(404, 422, 429),
            events={"epoch": EpochEvent, "status": Operation},
        ),
        Endpoint(
            "GET", "/openapi.json", openapi, "openapi", "This document", ok="application/json"
        ),
        Endpoint(
            "GET",
            "/docs",
            docs,
            "docs",
            "This document as a page that works offline",
            ok="text/html",
        ),
    ]
    endpoints += bridge_endpoints(service)
    endpoints += export_endpoints(service)
    endpoints += compare_endpoints(service)
    endpoints += deletion_endpoints(service)
    endpoints += script_endpoints(service)
    endpoints += steering_endpoints(service, PREFIX)
    endpoints += sweep_endpoints(service, PREFIX)
    return endpoints
