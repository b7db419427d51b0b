"""Bounds on the free-form values a run stores (an external run's spec, tags, name, reasons).

Checked where a value arrives (`check_json_bounds`, `check_tags`, by the request models), and
again when a row is read (`readable_spec`, `readable_tags`, `clip`), so a row written before the
bounds existed still reads: a value past them is shown as a short note (or cut) instead of
breaking every read of the run list.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NAME",
    "MAX_TAGS",
    "MAX_TAG_KEY",
    "MAX_TAG_VALUE",
    "MAX_TEXT",
    "JsonBoundsError",
    "check_json_bounds",
    "check_tags",
    "clip",
    "json_depth",
    "readable_spec",
    "readable_tags",
]

MAX_JSON_DEPTH = 32  # a TrainingSpec is 3 deep; room for an external run's own nesting
MAX_JSON_BYTES = 16 * 1024  # a TrainingSpec is about 1 KiB; 500 runs listed stay under 10 MB


class JsonBoundsError(ValueError):
    """A value past the bounds: the message says which bound and by how much."""


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of dicts and lists (a scalar is 0, `{}` is 1), counted level by level,
    without recursion, and never further than `limit + 1` levels."""
    depth = 0
    level = [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, dict | list | tuple)]
        if not containers:
            return depth
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def check_json_bounds(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> None:
    """Raise `JsonBoundsError` when `value` nests deeper than `max_depth` or its JSON is longer
    than `max_bytes`."""
    depth = json_depth(value, max_depth)
    if depth > max_depth:
        raise JsonBoundsError(f"nested deeper than {max_depth} levels")
    size = len(json.dumps(value, separators=(",", ":"), default=str))
    if size > max_bytes:
        raise JsonBoundsError(f"{size} bytes of JSON; at most {max_bytes}")


def readable_spec(value: Any) -> dict[str, Any]:
    """A stored spec as readers may see it: itself when within the bounds (and a dict), else a
    note saying why it is not shown."""
    if not isinstance(value, dict):
        return {"unreadable": f"the stored spec is a {type(value).__name__}, not an object"}
    try:
        check_json_bounds(value)
    except (JsonBoundsError, RecursionError, ValueError) as exc:
        return {"unreadable": f"the stored spec is not shown: {exc}"}
    return value


MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_NAME = 200
MAX_TEXT = 10_000  # an error or a reason


def check_tags(tags: dict[str, str]) -> None:
    """Raise `JsonBoundsError` for more than `MAX_TAGS` tags or a key or value past its length."""
    if len(tags) > MAX_TAGS:
        raise JsonBoundsError(f"{len(tags)} tags; at most {MAX_TAGS}")
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise JsonBoundsError(f"a key must be 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise JsonBoundsError(f"the value of {key!r} is over {MAX_TAG_VALUE} characters")


def readable_tags(value: Any) -> dict[str, str]:
    """Stored tags as readers may see them: themselves within the bounds, else a note."""
    if not value:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return {"unreadable": "the stored tags are not text to text"}
    try:
        check_tags(value)
    except JsonBoundsError as exc:
        return {"unreadable": f"the stored tags are not shown: {exc}"}
    return value


def clip(text: str | None, limit: int) -> str | None:
    """`text` cut to `limit` characters, marked where it was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
