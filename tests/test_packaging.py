"""tmlrepair installed from a built wheel (not editable) runs every command: the C library and the bundled tasks
travel inside the package (repair/_c_patches, repair/_datasets)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomllib
from setuptools import find_packages

from .conftest import ROOT


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(where=str(ROOT), include=["repair*"]))
    assert found <= set(cfg["packages"]), f"add to [tool.setuptools] packages: {sorted(found - set(cfg['packages']))}"


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A fresh venv with tmlrepair from its wheel; the dependencies come from this interpreter's site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp / "dist"), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp / "dist").glob("tmlrepair-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return py, tmp


def test_the_wheel_carries_the_c_templates(wheel_venv):
    """The C templates (package data, not modules) are in the installed wheel, every one of them."""
    py, tmp = wheel_venv
    r = subprocess.run([str(py), "-c", "from repair.codegen.templates import TEMPLATES; "
                        "print(' '.join(sorted(p.name for p in TEMPLATES.glob('*.in'))))"],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == sorted(p.name for p in (ROOT / "repair" / "codegen" / "templates").glob("*.in"))


def _run(py, cwd, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(py), "-m", "repair", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_wheel_calibrates_on_sim_and_emits(wheel_venv):
    py, tmp = wheel_venv
    where = subprocess.run([str(py), "-c", "import repair; print(repair.__file__)"], capture_output=True, text=True,
                           cwd=tmp).stdout
    assert str(tmp / "venv") in where, f"imported {where} instead of the wheel's copy"
    r = _run(py, tmp, "calibrate", "--serial", "sim", "-o", "run")
    assert r.returncode == 0, r.stderr
    assert "bit-exact: 1000/1000" in r.stdout
    r = _run(py, tmp, "emit", "run/plan.json", "-o", "c2")
    assert r.returncode == 0, r.stderr
    assert (tmp / "c2" / "tmlr" / "include" / "tmlr.h").is_file()
