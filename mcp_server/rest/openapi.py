"""The OpenAPI 3.1 document of the REST mirror, generated from the endpoint table and the same
pydantic models the routes validate and answer with; and a docs page that renders it offline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from httpbase import ApiError
from mcp_server import __version__
from mcp_server.rest.http import Endpoint

__all__ = ["docs_page", "openapi_document"]

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    401: "No valid bearer token (when the server has one)",
    403: "A web page this server does not allow (Origin), or a push without the run's "
    "push credential (X-Training-Push-Token)",
    404: "No such operation",
    409: "The operation's state does not allow it",
    413: "Body over 1 MiB or over 10,000 points",
    415: "A body that is not declared as JSON (Content-Type: application/json)",
    421: "A Host name this server does not answer to",
    429: "Too many event streams open, for this run or on the server",
    422: "Invalid input; `field` names it",
    503: "Something the request needs is not available",
}


def openapi_document(endpoints: Sequence[Endpoint], prefix: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ApiError, "serialization")]
    for e in endpoints:
        models += [(m, "validation") for m in (e.body, e.query) if m is not None]
        if isinstance(e.ok, type):
            models.append((e.ok, "serialization"))
        models += [(m, "serialization") for m in e.events.values()]
    refs, schemas = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    components = schemas.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(prefix + e.path, {})[e.method.lower()] = _operation(e, refs, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "training-mcp REST mirror",
            "version": __version__,
            "description": "The MCP tools' service over plain HTTP: start and watch runs, push "
            "and read metrics, analyse loss, follow a run as Server-Sent Events. Every error is "
            '`{"error": {"code", "message", "field"}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when the server runs with --token",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def _operation(
    e: Endpoint, refs: dict[Any, dict[str, Any]], components: dict[str, Any]
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": e.name, "summary": e.summary}
    params: list[dict[str, Any]] = []
    if "{operation_id}" in e.path:
        params.append(
            {
                "name": "operation_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                "description": "The id POST /operations returned, e.g. op-k3f9x2ab",
            }
        )
    if e.query is not None:
        query_schema = components[refs[(e.query, "validation")]["$ref"].split("/")[-1]]
        required = set(query_schema.get("required", []))
        for name, schema in query_schema["properties"].items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": schema,
            }
            if schema.get("description"):
                param["description"] = schema["description"]
            if _is_array(schema):
                param.update(style="form", explode=True)
            params.append(param)
    if e.name == "stream_events":
        params.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r"^e\d{1,12}(-[a-z]+)?$"},
                "description": "Resume after this event id (EventSource sends it on reconnect)",
            }
        )
    if params:
        op["parameters"] = params
    if e.body is not None:
        op["requestBody"] = {
            "required": e.body_required,
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    op["responses"] = _responses(e, refs)
    if e.open:
        op["security"] = []
    return op


def _responses(e: Endpoint, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK"}
    if isinstance(e.ok, type):
        ok["content"] = {"application/json": {"schema": refs[(e.ok, "serialization")]}}
    elif e.events:
        ok["content"] = {"text/event-stream": {"schema": _event_schema(e, refs)}}
    elif e.ok == "image/png":
        ok["content"] = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    elif e.ok is not None:
        kind = "object" if e.ok == "application/json" else "string"
        ok["content"] = {e.ok: {"schema": {"type": kind}}}
        ok["content"].update({media: {"schema": {"type": "string"}} for media in e.also})
    if e.headers:
        ok["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in e.headers.items()
        }
    responses: dict[str, Any] = {str(e.ok_status): ok}
    if e.name == "stream_events":
        responses["204"] = {"description": "The run has ended and nothing after Last-Event-ID"}
    error = {"application/json": {"schema": refs[(ApiError, "serialization")]}}
    # Every route checks Host and Origin (httpbase.guard); a route with a body, its type.
    guard = (403, 421, 415) if e.body is not None else (403, 421)
    codes = sorted({*e.errors, *guard, *(() if e.open else (401,)), *((422,) if e.query else ())})
    for code in codes:
        responses[str(code)] = {"description": _ERROR_TEXT[code], "content": error}
    return responses


def _event_schema(e: Endpoint, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """One event of the stream (OpenAPI 3.1 reads `schema` of an event stream per event): its
    name, its id, and its data as JSON of the event's model."""
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "id": {"type": "string"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": refs[(model, "serialization")],
                    },
                },
            }
            for name, model in e.events.items()
        ]
    }


def _is_array(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" or any(
        s.get("type") == "array" for s in schema.get("anyOf", [])
    )


def docs_page(document: dict[str, Any]) -> str:
    """One self-contained HTML page (no network) listing every route with its parameters, body
    and answers, and the schemas they refer to."""
    embedded = json.dumps(document).replace("</", "<\\/")
    return _DOCS_HTML.replace("__SPEC__", embedded)


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>training-mcp REST API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}code,pre{font-family:ui-monospace,monospace;font-size:13px}
details{border:1px solid #ddd;border-radius:6px;margin:.5em 0;padding:.4em .8em}
summary{cursor:pointer}.m{display:inline-block;width:4.2em;font-weight:700}
.get{color:#0a6}.post{color:#06c}pre{background:#f6f6f6;padding:.6em;overflow:auto}
td,th{text-align:left;padding:.15em .6em;vertical-align:top}
</style></head><body>
<h1 id="title"></h1><p id="desc"></p>
<p>Auth: <code>Authorization: Bearer &lt;token&gt;</code> on every route but
<code>/api/v1/health</code> when the server runs with <code>--token</code>.
The raw document: <a href="openapi.json">openapi.json</a>.</p>
<div id="ops"></div><h2>Schemas</h2><div id="schemas"></div>
<script type="application/json" id="spec">__SPEC__</script>
<script>
const spec = JSON.parse(document.getElementById("spec").textContent);
const el = (tag, text, cls) => { const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const pre = (obj) => el("pre", JSON.stringify(obj, null, 1));
document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
document.getElementById("desc").textContent = spec.info.description;
const ops = document.getElementById("ops");
for (const [path, methods] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(methods)) {
    const d = el("details"); const s = el("summary");
    s.append(el("span", method.toUpperCase(), "m " + method), el("code", path), " " + op.summary);
    d.append(s);
    if (op.parameters) {
      const t = el("table"); t.append(el("tr")); t.firstChild.append(
        el("th", "parameter"), el("th", "in"), el("th", "schema"), el("th", "description"));
      for (const p of op.parameters) { const r = el("tr");
        r.append(el("td", p.name + (p.required ? " *" : "")), el("td", p.in),
          el("td", JSON.stringify(p.schema)), el("td", p.description || "")); t.append(r); }
      d.append(t);
    }
    if (op.requestBody) { d.append(el("h4", "Body"),
      pre(op.requestBody.content["application/json"].schema)); }
    d.append(el("h4", "Answers"));
    for (const [code, r] of Object.entries(op.responses)) {
      const c = r.content ? Object.entries(r.content)[0] : null;
      d.append(el("div", code + ": " + r.description + (c ? " (" + c[0] + ")" : "")));
      if (c && c[1].schema && c[1].schema.$ref) d.append(el("code", c[1].schema.$ref));
    }
    ops.append(d);
  }
}
const schemas = document.getElementById("schemas");
for (const [name, schema] of Object.entries(spec.components.schemas)) {
  const d = el("details"); d.id = name; d.append(el("summary", name), pre(schema));
  schemas.append(d);
}
</script></body></html>
"""
