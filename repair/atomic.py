"""Write output files all-or-nothing: a temporary file in the same folder, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputExistsError


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, if ``path`` exists and may not be replaced."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists: choose another path or pass --force to replace it")
    if not p.parent.exists():
        raise OutputExistsError(f"folder {p.parent} does not exist: create it first")
    return p


def write_atomic(path: str | os.PathLike, data: str | bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    p = check_writable(path, overwrite)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
