"""Write output files all-or-nothing, and never touch a file the command did not write.

* ``write_atomic``: one file, through a temporary file in the same folder and a rename, so readers see
  the old file or the whole new one.
* ``write_files``: a set of files into a folder (``fit``, ``calibrate``, ``emit``). Every target is checked
  before anything is written; each is staged to a temporary file and renamed into place. The folder keeps
  a manifest, ``.tmlrepair-files.json``, of the files tmlrepair wrote there with their sha256: with
  ``force``, a file that a previous run wrote and this run does not (another ``--prefix``, say) is removed
  only if it is unchanged since; every other file in the folder is left alone. ``-o .`` is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputExistsError

MANIFEST = ".tmlrepair-files.json"


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, if ``path`` exists and may not be replaced."""
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(f"{p} is a folder: give a file path")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists: choose another path or pass --force to replace it")
    if not p.parent.exists():
        raise OutputExistsError(f"folder {p.parent} does not exist: create it first")
    return p


def _stage(p: Path, raw: bytes) -> str:
    """``raw`` into a temporary file beside ``p`` (the user's usual file mode), returns its path."""
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        if hasattr(os, "fchmod"):  # POSIX; on Windows the file keeps the folder's default permissions
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | os.PathLike, data: str | bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    p = check_writable(path, overwrite)
    tmp = _stage(p, data.encode() if isinstance(data, str) else data)
    try:
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of the files tmlrepair wrote into ``folder`` (empty if none or unreadable)."""
    try:
        d = json.loads((folder / MANIFEST).read_text())
        entries = {str(k): str(v) for k, v in d.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}
    # untrusted: only plain relative paths inside the folder count
    return {k: v for k, v in entries.items()
            if k and not Path(k).is_absolute() and ".." not in Path(k).parts and ":" not in k}


def check_outputs(folder: Path, names, force: bool) -> None:
    """Fail before any work if one of ``names`` (paths relative to ``folder``) exists and ``force`` is off,
    or if a path is taken by a folder, or ``folder`` is a file."""
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} is a file: give a folder for the outputs")
    for name in names:
        p = folder / name
        if p.is_dir():
            raise OutputExistsError(f"{p} is a folder where tmlrepair writes a file: move it away")
        if p.exists() and not force:
            raise OutputExistsError(f"{p} already exists: choose another folder or pass --force to replace "
                                    "tmlrepair's files there (other files are never touched)")


def write_files(folder: str | os.PathLike, files: dict[str, str | bytes], force: bool = False) -> list[Path]:
    """Write ``files`` ({relative path: content}) into ``folder``; returns the paths written.

    Creates ``folder`` (and sub-folders) as needed. Without ``force`` no existing file is replaced; with it,
    only the files named here are, plus stale files of an earlier tmlrepair run listed in the manifest and
    unchanged since. Nothing else in the folder is read, moved or deleted.
    """
    out = Path(folder)
    check_outputs(out, files, force)
    raw = {name: (c.encode() if isinstance(c, str) else c) for name, c in files.items()}
    previous = read_manifest(out)
    created = not out.exists()
    staged: list[tuple[str, Path]] = []
    try:
        for name, content in raw.items():
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_stage(target, content), target))
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        if created:  # the folder is this call's: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    manifest = {k: v for k, v in previous.items() if (out / k).is_file()}
    manifest.update({name: _sha256(content) for name, content in raw.items()})
    if force:
        for name, sha in previous.items():
            stale = out / name
            if name in raw or not stale.is_file():
                continue
            del manifest[name]
            if _sha256(stale.read_bytes()) == sha:  # ours and unchanged: remove; edited since: the user's now
                stale.unlink()
                _remove_empty_parents(stale.parent, stop=out)
    write_atomic(out / MANIFEST, json.dumps({"files": dict(sorted(manifest.items()))}, indent=1) + "\n", True)
    return [out / name for name in files]


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents below ``stop`` while they are empty."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
