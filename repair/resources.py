"""Where the files that ship beside the code are: the C library (``c_patches/``) and the bundled tasks
(``datasets/``).

In a checkout (and an editable install) they sit at the top of the tree; a wheel carries them inside the
package as ``repair/_c_patches`` and ``repair/_datasets`` (``[tool.setuptools.package-dir]`` in pyproject.toml).
"""

from __future__ import annotations

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
