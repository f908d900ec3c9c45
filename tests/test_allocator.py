"""repair.allocator: the command line keeps freed memory, so the integer program's batches stop page-faulting; and
every onnxruntime session draws on one memory arena for the process (``repair.models.pair``)."""

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


SESSIONS = r"""
import resource, sys
import numpy as np
import repair.models.pair as mp
from repair.allocator import keep_freed_memory
from repair.models import load_pair
keep_freed_memory()
if sys.argv[4] == "0":
    mp._process_arena.append(False)  # each session its own arena, as onnxruntime does by default
x = np.load(sys.argv[3])["x"][:256].astype(np.float32)

def fresh():  # a new pair's float model with every tensor out, as drift and the fit build them
    pair = load_pair(sys.argv[1], sys.argv[2])
    names = tuple(n for node in pair.float.proto.graph.node for n in node.output)
    return pair.float.session(names, optimize=True).run(None, {pair.float.inputs[0].name: x})

first = fresh()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    out = fresh()
same = all(np.array_equal(a, b) for a, b in zip(first, out))
print(mp._process_arena[0], same, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page faults as getrusage counts them on Linux")
def test_sessions_share_one_arena_and_stop_faulting_in_their_own():
    """A new session's memory comes from the process's arena, already faulted in by the sessions before it: digits'
    float model with every tensor out (256 samples) took ~4,100 page faults per new session with the shared arena
    and ~7,100 with one arena each; the outputs are the same either way."""
    f = task_files("digits")
    runs = {}
    for shared in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", SESSIONS, str(f["float"]), str(f["int8"]), str(f["calib"]), shared],
                             capture_output=True, text=True, check=True).stdout.split()
        runs[shared] = out
    assert runs["1"][:2] == ["True", "True"] and runs["0"][:2] == ["False", "True"]
    with_shared, each_own = float(runs["1"][2]), float(runs["0"][2])
    assert with_shared < 0.75 * each_own, f"{with_shared} page faults per new session shared, {each_own} each own"


def test_sessions_keep_their_own_arenas_where_onnxruntime_refuses_a_shared_one(monkeypatch):
    """An onnxruntime that refuses to register the process's arena (here: raising its own Fail) leaves every session
    with its own, and sessions still run."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    import repair.models.pair as pair_module
    from repair.models import load_pair

    def refuse(*_):
        raise Fail("an allocator is already registered")

    monkeypatch.setattr(pair_module, "_process_arena", [])
    monkeypatch.setattr(ort, "create_and_register_allocator", refuse)
    f = task_files("digits")
    pair = load_pair(f["float"], f["int8"])
    out = pair.float.session((), optimize=True).run(None, {pair.float.inputs[0].name: np.zeros((2, 1, 28, 28),
                                                                                                  np.float32)})
    assert pair_module._process_arena == [False] and out[0].shape == (2, 10)
