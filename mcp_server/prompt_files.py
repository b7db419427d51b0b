"""MCP prompts from `prompts/*.md`: a small header (title, description, arguments), then a body
with `{argument}` placeholders."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument

__all__ = ["PromptFile", "load_prompt_files", "to_mcp_prompt"]

_UNSET = "(none given)"


@dataclass(frozen=True)
class PromptFile:
    name: str
    title: str
    description: str
    arguments: tuple[PromptArgument, ...]
    body: str

    def render(self, values: dict[str, Any]) -> str:
        filled = {a.name: str(values.get(a.name) or _UNSET) for a in self.arguments}
        return self.body.format_map(filled)


def parse_prompt(name: str, text: str) -> PromptFile:
    head, sep, body = text.removeprefix("---\n").partition("\n---\n")
    if not sep:
        raise ValueError(f"prompts/{name}.md: expected a header between '---' lines")
    fields: dict[str, str] = {}
    arguments: list[PromptArgument] = []
    for line in head.splitlines():
        key, _, value = line.partition(":")
        if key == "argument":
            arg, need, description = (p.strip() for p in value.split("|", 2))
            arguments.append(
                PromptArgument(name=arg, description=description, required=need == "required")
            )
        elif key:
            fields[key.strip()] = value.strip()
    return PromptFile(
        name=name,
        title=fields.get("title", name),
        description=fields.get("description", ""),
        arguments=tuple(arguments),
        body=body.strip() + "\n",
    )


def load_prompt_files() -> list[PromptFile]:
    """Every `*.md` in the `prompts` package, sorted by name."""
    folder = resources.files("prompts")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".md")), key=lambda p: p.name)
    return [parse_prompt(p.name.removesuffix(".md"), p.read_text(encoding="utf-8")) for p in files]


def to_mcp_prompt(prompt: PromptFile) -> Prompt:
    def render(**values: Any) -> str:
        return prompt.render(values)

    return Prompt(
        name=prompt.name,
        title=prompt.title,
        description=prompt.description,
        arguments=list(prompt.arguments),
        fn=render,
        context_kwarg=None,
    )
