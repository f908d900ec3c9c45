"""On-device diagnosis: PROBE digests of every layer against the integer program; a deliberately faulty firmware
(single-rounding requantization) is caught at its first layer, the correct one equals the program everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from repair import load_calibration, load_pair
from repair.device.diagnose import diagnose
from repair.device.targets import model_source, open_link
from repair.program import lower

from .conftest import task_files
from .test_device import needs_qemu


def _case():
    f = task_files("digits")
    pair = load_pair(f["float"], f["int8"])
    prog = lower(pair.int8.proto)
    t = prog.tensors[prog.input]
    x = load_calibration(f["holdout"]).x[:24]
    xq = np.clip(np.rint(x / t.scale) + t.zero_point, -128, 127).astype(np.int8).reshape(len(x), -1)
    return prog, xq


@pytest.mark.parametrize("url", ["sim", pytest.param("qemu", marks=needs_qemu)])
def test_the_correct_firmware_equals_the_program_at_every_layer(url):
    prog, x = _case()
    with open_link(url, model_c=model_source(prog, "digits")) as link:
        link.hello()
        d = diagnose(link, prog, x)
    assert d.first_divergent is None and "every layer equals the program" in d.summary()


@pytest.mark.parametrize("url", ["sim", pytest.param("qemu", marks=needs_qemu)])
def test_single_rounding_requantization_is_found_at_its_first_layer(url):
    prog, x = _case()
    with open_link(url, model_c=model_source(prog, "digits"), build_flags=("-DTMLR_FAULT_SINGLE_ROUNDING",)) as link:
        link.hello()
        d = diagnose(link, prog, x)
    assert d.first_divergent == 0 and d.layers[0]["op"] == "conv"
    assert d.layers[0]["differ"] > 0 and "first divergent layer: 0 (conv" in d.summary()


def test_diagnose_command_on_the_virtual_device(tmp_path):
    from click.testing import CliRunner

    from repair.cli import main

    f = task_files("digits")
    r = CliRunner().invoke(main, ["diagnose", str(f["int8"]), "--data", str(f["holdout"]), "--samples", "8",
                                  "--json", str(tmp_path / "d.json")])
    assert r.exit_code == 0 and "every layer equals the program on all 8 inputs" in r.output
    assert '"first_divergent_layer": null' in (tmp_path / "d.json").read_text()


def test_a_depthwise_kernel_reading_channels_in_the_wrong_order_is_found_at_the_first_depthwise_layer():
    prog, x = _case()
    first_dw = next(i for i, layer in enumerate(prog.layers) if layer.op == "conv" and layer.p["group"] > 1)
    with open_link("sim", model_c=model_source(prog, "digits"), build_flags=("-DTMLR_FAULT_DEPTHWISE_ORDER",)) as link:
        link.hello()
        d = diagnose(link, prog, x)
    assert first_dw > 0 and d.first_divergent == first_dw
    assert all(row["differ"] == 0 for row in d.layers[:first_dw])  # every layer before it is proven equal


@pytest.mark.parametrize("flag,op", [("-DTMLR_FAULT_AVGPOOL_ZERO_POINT", "avgpool"), ("-DTMLR_FAULT_ACC16", "conv")])
def test_more_faulty_kernels_are_found_at_their_layer(flag, op):
    """An average pool that forgets the zero point, and a 16-bit saturating accumulator: diagnose names the first
    layer of that kind whose output changes, with every layer before it equal."""
    prog, x = _case()
    with open_link("sim", model_c=model_source(prog, "digits"), build_flags=(flag,)) as link:
        link.hello()
        d = diagnose(link, prog, x)
    assert d.first_divergent is not None and prog.layers[d.first_divergent].op == op
    if op == "avgpool":
        assert d.first_divergent == next(i for i, layer in enumerate(prog.layers) if layer.op == "avgpool")
    assert all(row["differ"] == 0 for row in d.layers[:d.first_divergent])


FAULTS = {  # build flag → (the cause diagnose must name, the op of the layer it must stop at)
    "SINGLE_ROUNDING": ("rounding", "conv"),
    "HWC_OUTPUT": ("permutation", "conv"),
    "ACTIVATION_RANGE": ("clipped", "conv"),
    "ACC16": ("clipped", "conv"),
    "OUTPUT_ZERO_POINT": ("offset", "conv"),
    "SHIFT_BY_ONE": ("scale", "conv"),
    "AVGPOOL_ZERO_POINT": ("saturated", "avgpool"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_diagnose_names_the_cause_of_each_faulty_firmware(fault):
    """Seven firmware faults (-DTMLR_FAULT_*), each the kind the forums report: diagnose stops at the first layer
    it changes and, from that layer's output read back (READ), names the cause and what to check."""
    cause, op = FAULTS[fault]
    prog, x = _case()
    with open_link("sim", model_c=model_source(prog, "digits"), build_flags=(f"-DTMLR_FAULT_{fault}",)) as link:
        link.hello()
        d = diagnose(link, prog, x)
    assert d.first_divergent is not None and prog.layers[d.first_divergent].op == op
    assert all(row["differ"] == 0 for row in d.layers[:d.first_divergent])
    assert d.finding["cause"] == cause and f"cause: {cause} — " in d.summary()
    assert 0 < d.finding["share"] <= 1 and d.finding["worst"] >= 1 and d.finding["inputs_read"] >= 1


@needs_qemu
@pytest.mark.parametrize("fault", list(FAULTS))
def test_diagnose_names_the_cause_on_the_emulated_cortex_m4(fault):
    cause, op = FAULTS[fault]
    prog, x = _case()
    with open_link("qemu", model_c=model_source(prog, "digits"), build_flags=(f"-DTMLR_FAULT_{fault}",)) as link:
        link.hello()
        d = diagnose(link, prog, x[:8])
    assert prog.layers[d.first_divergent].op == op and d.finding["cause"] == cause


def test_read_returns_a_layer_larger_than_one_frame_byte_for_byte():
    """READ in frame-sized windows: the first convolution's 12,544-byte output comes back equal to the program's."""
    prog, x = _case()
    with open_link("sim", model_c=model_source(prog, "digits")) as link:
        link.hello()
        got = link.read_layer(x[0], 0)
    want = prog.run_tensors(x[:1], [prog.layers[0].output])[prog.layers[0].output].reshape(-1)
    assert len(got) == prog.tensors[prog.layers[0].output].size > 2048 and np.array_equal(got, want)


def test_calibrate_diagnoses_a_device_whose_model_departs_from_the_program(tmp_path):
    """calibrate on a faulty firmware (its output zero point off by 3): the run is not bit-exact, and its report
    carries the diagnosis — the first layer and the cause — without being asked."""
    from repair.device.calibrate import run_calibrate
    from repair.device.render import render_run

    f = task_files("digits")
    pair = load_pair(f["float"], f["int8"])
    prog = lower(pair.int8.proto)
    calib, holdout = load_calibration(f["calib"]), load_calibration(f["holdout"])
    with open_link("sim", model_c=model_source(prog, "digits"), build_flags=("-DTMLR_FAULT_OUTPUT_ZERO_POINT",)) as link:
        run = run_calibrate(link, pair, calib.subset(np.arange(60), "calib"), holdout.subset(np.arange(60), "holdout"),
                            tmp_path, program=prog)
    assert not run.bit_exact
    d = run.report["diagnosis"]
    assert d["first_divergent_layer"] == 0 and d["finding"]["cause"] == "offset" and d["inputs"] <= 8
    assert "DIAGNOSIS" in render_run(run.report) and "constant offset of +3" in render_run(run.report)


def test_diagnose_writes_per_layer_drift_against_float_and_a_page(tmp_path):
    """--float adds each layer's SQNR against the float model (the device's: every digest equals the program's),
    --html a page with the per-layer plot."""
    import json

    from click.testing import CliRunner

    from repair.cli import main

    f = task_files("digits")
    r = CliRunner().invoke(main, ["diagnose", str(f["int8"]), "--data", str(f["holdout"]), "--samples", "16",
                                  "--float", str(f["float"]), "--json", str(tmp_path / "d.json"),
                                  "--html", str(tmp_path / "d.html")])
    assert r.exit_code == 0, r.output
    layers = json.loads((tmp_path / "d.json").read_text())["layers"]
    sqnr = [row["sqnr_vs_float_db"] for row in layers]
    assert all(v is not None and 0 < v < 60 for v in sqnr) and sqnr[0] > sqnr[-1]  # drift grows with depth
    page = (tmp_path / "d.html").read_text()
    assert "data:image/png;base64," in page and "SQNR vs float" in page
