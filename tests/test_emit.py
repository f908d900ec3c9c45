"""`tmlrepair emit`: generated C compiles with -Werror, its self-test passes, hostile names stay inert."""

from __future__ import annotations

import copy
import doctest
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from repair.cli import main
from repair.codegen import cnames
from repair.codegen.emit import emit
from repair.data import load_calibration
from repair.models import load_pair
from repair.plan.fit import fit_plan

from .conftest import task_files

GCC = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror"]
HOSTILE = ['say "hi"', "back\\slash", "new\nline", "end */ comment", "tri??/graph", "int", "return",
           "ünïcödé", "#define X 1", "a\0b", "x'); system(\"rm -rf /\"); //"]


@pytest.fixture(scope="module")
def plans():
    out = {}
    for task, kw in (("digits", {}), ("ecg", {}), ("ecg_window", {"anomaly_boundary": "window", "window": 16})):
        f = task_files(task.split("_")[0])
        pair = load_pair(f["float"], f["int8"])
        out[task] = fit_plan(pair, load_calibration(f["calib"]), load_calibration(f["holdout"]), **kw)
    return out


def _build_and_run(folder, prefix, extra=()):
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not found")
    srcs = [str(p) for p in sorted((folder / "tmlr" / "src").glob("*.c"))]
    exe = folder / f"{prefix}_selftest"
    r = subprocess.run([cc, *GCC, *extra, "-I", str(folder), "-I", str(folder / "tmlr" / "include"), *srcs,
                        str(folder / f"{prefix}_shim.c"), str(folder / f"{prefix}_selftest.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    return run


@pytest.mark.parametrize("task", ["digits", "ecg", "ecg_window"])
def test_emitted_selftest_passes_on_the_host(plans, task, tmp_path):
    emit(plans[task], tmp_path / "c", prefix="demo")
    run = _build_and_run(tmp_path / "c", "demo")
    assert run.returncode == 0, run.stdout[-500:]
    assert run.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")


def test_emitted_code_is_sanitizer_clean(plans, tmp_path):
    emit(plans["digits"], tmp_path / "c", prefix="demo")
    run = _build_and_run(tmp_path / "c", "demo", ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    assert run.returncode == 0 and not run.stderr


def test_emit_is_deterministic(plans, tmp_path):
    emit(plans["digits"], tmp_path / "a", prefix="demo")
    emit(plans["digits"], tmp_path / "b", prefix="demo")
    for f in (tmp_path / "a").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def test_hostile_names_compile_and_never_appear_raw(plans, tmp_path):
    plan = copy.deepcopy(plans["digits"])
    plan.provenance["int8_output_name"] = "*/ #include </etc/passwd> /*"
    plan.provenance["class_names"] = HOSTILE[:10]
    emit(plan, tmp_path / "c", prefix="demo")
    texts = "".join(p.read_text() for p in (tmp_path / "c").glob("demo_*"))
    for name in HOSTILE[:10] + ["*/ #include </etc/passwd> /*"]:
        if name not in cnames.C_KEYWORDS:  # keywords occur in real code; as class names they become DEMO_CLASS_INT_
            assert name not in texts, name
    assert "DEMO_CLASS_INT_ = 5" in texts and "DEMO_CLASS_RETURN_ = 6" in texts
    assert "??/" not in texts and "\n#include </etc" not in texts
    run = _build_and_run(tmp_path / "c", "demo")
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("prefix", ["int", "9x", "a b", "x;y", "__x", "_", "_x", "a" * 30, ""])
def test_bad_prefix_is_refused(plans, tmp_path, prefix):
    path = tmp_path / "plan.json"
    path.write_text(plans["digits"].to_json())
    r = CliRunner().invoke(main, ["emit", str(path), "-o", str(tmp_path / "c"), "--prefix", prefix])
    assert r.exit_code == 2 and "--prefix" in r.stderr
    assert not (tmp_path / "c").exists()


def test_existing_files_are_kept_without_force(plans, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(plans["digits"].to_json())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.c").write_text("keep")
    r = CliRunner().invoke(main, ["emit", str(path), "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output  # a folder with the user's files in it is a fine place to emit into
    assert (tmp_path / "c" / "mine.c").read_text() == "keep"
    before = (tmp_path / "c" / "tmlr_model_params.h").read_bytes()
    (tmp_path / "c" / "tmlr_model_params.h").write_text("edited")
    r = CliRunner().invoke(main, ["emit", str(path), "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert (tmp_path / "c" / "tmlr_model_params.h").read_text() == "edited"
    r = CliRunner().invoke(main, ["emit", str(path), "-o", str(tmp_path / "c"), "--force"])
    assert r.exit_code == 0 and (tmp_path / "c" / "tmlr_model_params.h").read_bytes() == before
    assert (tmp_path / "c" / "mine.c").read_text() == "keep"


def test_cnames_doctests():
    assert doctest.testmod(cnames).failed == 0


@pytest.mark.parametrize("name", HOSTILE)
def test_identifiers_are_valid_c(name):
    ident = cnames.c_identifier(name)
    assert ident.isascii() and (ident[0].isalpha() or ident[0] == "_") and ident not in cnames.C_KEYWORDS
    assert all(ch.isalnum() or ch == "_" for ch in ident)


def test_every_c_template_is_used():
    """Each template file is rendered by the code generators (no orphan), and each render names an existing file."""
    import re
    from pathlib import Path

    from repair.codegen.templates import TEMPLATES

    code = "".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "repair" / "codegen").glob("*.py"))
    assert {p.name[:-3] for p in TEMPLATES.glob("*.in")} == set(re.findall(r'render\("([^"]+)"', code))
