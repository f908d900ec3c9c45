"""Stable JSON for reports and plans: sorted keys, 2-space indent, non-finite numbers as null."""

from __future__ import annotations

import json
import math


def finite(o):
    """A copy of ``o`` with NaN/±inf floats replaced by None (JSON has no NaN)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def dumps_stable(obj) -> str:
    return json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
