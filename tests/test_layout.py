"""The package layout is a contract: stages import only from the stages before them (import-linter, configured in
pyproject.toml), no module grows past 400 lines, and both entry points list every command."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT

COMMANDS = ("info", "drift", "fit", "fit-scores", "emit", "check", "calibrate", "validate", "hello", "diagnose")


def _lint(cwd, extra_path=None):
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = None
    if extra_path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(extra_path)}
    return subprocess.run([exe], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_stage_contract_holds():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Stages import only from the stages before them KEPT" in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "repair", tmp_path / "repair", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    stats = tmp_path / "repair" / "drift" / "stats.py"
    stats.write_text(stats.read_text() + "\nfrom ..plan import fit  # reaching upward: drift must not know the plan\n")
    r = _lint(tmp_path, extra_path=tmp_path)
    assert r.returncode != 0 and "repair.drift is not allowed to import repair.plan" in r.stdout, r.stdout[-2000:]


def test_no_module_over_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "repair").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"split these modules: {big}"


@pytest.mark.parametrize("entry", ["repair", "repair.cli"])
def test_every_command_is_listed(entry):
    r = subprocess.run([sys.executable, "-m", entry, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and all(f"  {c} " in r.stdout for c in COMMANDS), r.stdout
