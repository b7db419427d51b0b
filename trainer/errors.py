"""The trainer's exceptions. Every message names the field and what is allowed."""

from __future__ import annotations

__all__ = ["DatasetError", "SpecError", "TrainerError"]


class TrainerError(Exception):
    """Base class of everything the trainer raises on purpose."""


class SpecError(TrainerError):
    """A training spec that cannot run: `field` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DatasetError(SpecError):
    """A dataset that cannot be loaded (missing file, missing column, non-numeric values...)."""
