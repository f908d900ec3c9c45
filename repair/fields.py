"""Checking a document read from disk field by field (plans, drift reports): each check names the field's path
(``repairs[1].integer.shifts[0]``) in a one-line DataError, so a hand-edited file never reaches a traceback."""

from __future__ import annotations

import math

from .errors import DataError


class Fields:
    """A path into the document, for messages: ``repairs[1].integer.shifts[0]``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str):
        raise DataError(f"{self.source}: {where}: {what}: regenerate it with tmlrepair (hand edits are checked)")

    def obj(self, v, where: str) -> dict:
        if not isinstance(v, dict):
            self.fail(where, f"expected an object, got {type(v).__name__}")
        return v

    def flag(self, v, where: str) -> bool:
        if not isinstance(v, bool):
            self.fail(where, f"expected true or false, got {v!r}")
        return v

    def text(self, v, where: str) -> str:
        if not isinstance(v, str):
            self.fail(where, f"expected text, got {type(v).__name__}")
        return v

    def integer(self, v, where: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(where, f"expected an integer, got {v!r}")
        if not lo <= v <= hi:
            self.fail(where, f"{v} is outside [{lo}, {hi}]")
        return v

    def number(self, v, where: str, positive: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(where, f"expected a finite number, got {v!r}")
        if positive and v <= 0:
            self.fail(where, f"{v} must be positive")
        return float(v)

    def integers(self, v, where: str, lo: int, hi: int, length: int | None) -> list[int]:
        if not isinstance(v, list):
            self.fail(where, f"expected a list of integers, got {type(v).__name__}")
        if length is not None and len(v) != length:
            self.fail(where, f"has {len(v)} values; the model has {length} classes")
        return [self.integer(x, f"{where}[{i}]", lo, hi) for i, x in enumerate(v)]

    def finite_everywhere(self, v, where: str) -> None:
        """No NaN or infinity anywhere (json.loads accepts NaN and Infinity literals)."""
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(where, f"{v} is not a finite number")
        if isinstance(v, dict):
            for k, x in v.items():
                self.finite_everywhere(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.finite_everywhere(x, f"{where}[{i}]")
