"""Where the files that ship beside the code are: the C library (``c_patches/``) and the bundled tasks
(``datasets/``); where builds are cached, and the host's C compiler.

In a checkout (and an editable install) they sit at the top of the tree; a wheel carries them inside the
package as ``repair/_c_patches`` and ``repair/_datasets`` (``[tool.setuptools.package-dir]`` in pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import DataError

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str, marker: str) -> Path:
    for candidate in (_PACKAGE.parent / name, _PACKAGE / f"_{name}"):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(f"tmlrepair's {name}/ is missing (looked beside and inside {_PACKAGE}): reinstall tmlrepair "
                    "(pip install tmlrepair, or pip install -e . from a checkout)")


def c_library_dir() -> Path:
    """The C library: include/, src/, device/, ports/."""
    return _find("c_patches", "include/tmlr.h")


def datasets_dir() -> Path:
    """The bundled demo tasks: one folder per task with float.onnx, int8.onnx, calib.npz, holdout.npz."""
    return _find("datasets", "manifest.json")


def cache_dir() -> Path:
    """Where builds are cached (the device firmware, the program's host build): ``$TMLREPAIR_CACHE``, else
    ``~/.cache/tmlrepair``."""
    return Path(os.environ.get("TMLREPAIR_CACHE") or Path.home() / ".cache" / "tmlrepair")


def host_compiler() -> str | None:
    """This machine's C compiler: ``$CC``, else ``cc``, else ``gcc``; None without one."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
