"""docs/tflite.md, tried as written: every command of its shell blocks runs, in order, from a folder that looks
like the root of a checkout, and prints what the page says it prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from .conftest import DATASETS, ROOT


def test_every_command_of_the_tflite_guide_runs_as_written(tmp_path):
    page = (ROOT / "docs" / "tflite.md").read_text()
    commands = [line for block in re.findall(r"```sh\n(.*?)```", page, re.S) for line in block.splitlines() if line]
    assert len(commands) == 8
    (tmp_path / "datasets").symlink_to(DATASETS)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    printed = {}
    for command in commands:
        run = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, env=env)
        assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
        printed[command.split()[1]] = run.stdout
    assert "paired 9/9" in printed["drift"]
    assert "holdout 89.70% → 94.30%" in printed["fit"] and "NLL 0.2177 → 0.2014" in printed["fit"]
    assert "int8 as given 89.7% → repaired int8 on the device 94.3%" in printed["calibrate"]
    assert "2000/2000 outputs equal the Python integer reference" in printed["calibrate"]
    for name in ("fit/repaired_int8.tflite", "fit/model_data.cc", "fit/model_data.h", "shims/tmlr_model_shim.h",
                 "calibrated/repaired_int8.tflite", "drift.html", "baseline.json"):
        assert (tmp_path / name).is_file(), name
    assert "g_int8_model_data" in (tmp_path / "fit" / "model_data.h").read_text()
