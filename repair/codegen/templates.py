"""C artifacts of a fixed shape as template files (``templates/NAME.in``, ``string.Template``: ``${name}``).

The C reads as C in its file; the Python side only computes the values (arrays, parameters, names). A template
field without a value is an error (``substitute``), never an empty hole in the emitted C.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template((TEMPLATES / f"{name}.in").read_text(encoding="utf-8"))


def render(name: str, **fields) -> str:
    """The artifact ``name`` with its ``${field}`` placeholders filled."""
    return _template(name).substitute(fields)
