"""repair.allocator: the command line keeps freed memory, so the integer program's batches stop page-faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import repair.cli
from repair.cli import main

from .conftest import task_files

FAULTS = r"""
import resource, sys
import numpy as np
from repair.allocator import keep_freed_memory
from repair.program import lower
kept = keep_freed_memory() if sys.argv[2] == "1" else None
prog = lower(sys.argv[1])
x = np.random.default_rng(0).integers(-128, 128, (1000, *prog.tensors[prog.input].shape)).astype(np.int8)
prog.run(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    prog.run(x)
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_run(model, keep: bool) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", FAULTS, str(model), "1" if keep else "0"], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_memory_leaves_the_programs_batches_without_page_faults():
    """ecg's six fully connected layers on 1,000 samples: hundreds of page faults per run as glibc trims and refaults
    its heap, none once freed memory is kept."""
    model = task_files("ecg")["int8"]
    kept, with_keep = _faults_per_run(model, True)
    assert kept == "True"
    assert with_keep < 5, f"{with_keep} page faults per run with freed memory kept " \
                          f"({_faults_per_run(model, False)[1]} without)"


def test_every_command_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(repair.cli, "keep_freed_memory", lambda: calls.append(1))
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0 and not calls  # --help runs no command
    CliRunner().invoke(main, ["drift", "missing.onnx", "missing.onnx", "--data", "missing.npz"])
    assert calls == [1]
