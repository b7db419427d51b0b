"""A factory module that prints when imported (finding 12): its output must reach stderr, never
the stdio protocol channel."""

from __future__ import annotations

print("this line must not reach the MCP stdio channel")


def make(spec: object) -> None:  # pragma: no cover - the pre-flight only finds the module
    raise NotImplementedError
