"""The input pre-shim as C for the firmware: ``PREFIX_pre_shim.h`` / ``.c`` and a self-test, when the plan's
repaired model has one (``repairs.in_model.input_scaling``; ``plan.in_model["input_pre_shim"]``).

``PREFIX_pre_shim(raw, input)`` turns one sample of integer sensor readings (int16, features last; reading r
means x = r·lsb in the float model's units, lsb as the plan says) into the model's int8 input, with
``tmlr_input_pre_shim_s16``: the per-feature scale and offset and the input quantization in one requantization.
The self-test checks it against vectors the Python twin (``fixedpoint.input_pre_shim_s8``) computed.
"""

from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from .c_array import c_array
from .templates import render

SELFTEST_ROWS = 64


def pre_shim_params(plan) -> dict | None:
    """The plan's pre-shim with its integer parameters, or None (no pre-shim, or no integer form / layout)."""
    p = plan.in_model.get("input_pre_shim")
    if not p or "integer" not in p or not p.get("features_last"):
        return None
    return p


def pre_shim_files(plan, P: str, banner: str, seed: int = 0) -> dict[str, str]:
    """{PREFIX_pre_shim.h, PREFIX_pre_shim.c, PREFIX_pre_shim_selftest.c}, or {} when the plan has no pre-shim."""
    ps = pre_shim_params(plan)
    if ps is None:
        return {}
    p, i, n = P.lower(), ps["integer"], ps["features"]
    names = {"banner": banner, "P": P, "p": p, "features": n}
    header = render("pre_shim.h", **names, lsb=", ".join(f"{v:.6g}" for v in ps["reading_lsb"]))
    arrays = (c_array("int32_t", f"{p}_pre_shim_mult", i["multipliers"])
              + c_array("int32_t", f"{p}_pre_shim_shift", i["shifts"])
              + c_array("int32_t", f"{p}_pre_shim_offset", i["offsets"]))
    source = render("pre_shim.c", **names, arrays=arrays, zero_point=ps["input_zero_point"])
    rng = np.random.default_rng(seed)
    raw = rng.integers(-32768, 32768, (SELFTEST_ROWS, n))
    raw[0], raw[1] = -32768, 32767
    want = fp.input_pre_shim_s8(raw, i["multipliers"], i["shifts"], i["offsets"], ps["input_zero_point"])
    selftest = render("pre_shim_selftest.c", **names, rows=SELFTEST_ROWS,
                      arrays=c_array("int16_t", "raw", raw) + c_array("int8_t", "expected", want))
    return {f"{p}_pre_shim.h": header, f"{p}_pre_shim.c": source, f"{p}_pre_shim_selftest.c": selftest}
