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
