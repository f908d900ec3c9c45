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
    header = (banner + f"#ifndef {P}_PRE_SHIM_H\n#define {P}_PRE_SHIM_H\n\n#include \"tmlr.h\"\n\n"
              f"#define {P}_PRE_SHIM_FEATURES {n}\n"
              f"/* reading r of feature j is x_j = r * lsb_j in the float model's units, lsb as fitted:\n"
              f" * {', '.join(f'{v:.6g}' for v in ps['reading_lsb'])} */\n"
              f"/* int16 readings[{P}_PRE_SHIM_FEATURES] (one sample, features last) -> the model's int8 input */\n"
              f"tmlr_status {p}_pre_shim(const int16_t *raw, int8_t *input);\n\n#endif /* {P}_PRE_SHIM_H */\n")
    source = (banner + f'#include "{p}_pre_shim.h"\n\n' + c_array("int32_t", f"{p}_pre_shim_mult", i["multipliers"])
              + c_array("int32_t", f"{p}_pre_shim_shift", i["shifts"])
              + c_array("int32_t", f"{p}_pre_shim_offset", i["offsets"])
              + f"\ntmlr_status {p}_pre_shim(const int16_t *raw, int8_t *input)\n{{\n"
              f"    return tmlr_input_pre_shim_s16(raw, 1, {P}_PRE_SHIM_FEATURES, {p}_pre_shim_mult, "
              f"{p}_pre_shim_shift,\n                                   {p}_pre_shim_offset, "
              f"({ps['input_zero_point']}), input);\n}}\n")
    rng = np.random.default_rng(seed)
    raw = rng.integers(-32768, 32768, (SELFTEST_ROWS, n))
    raw[0], raw[1] = -32768, 32767
    want = fp.input_pre_shim_s8(raw, i["multipliers"], i["shifts"], i["offsets"], ps["input_zero_point"])
    selftest = (banner + f'#include <stdio.h>\n#include "{p}_pre_shim.h"\n\n' + c_array("int16_t", "raw", raw)
                + c_array("int8_t", "expected", want)
                + "\nint main(void)\n{\n    int i;\n    int j;\n    int failed = 0;\n"
                f"    for (i = 0; i < {SELFTEST_ROWS}; ++i) {{\n        int8_t q[{P}_PRE_SHIM_FEATURES];\n"
                f"        if ({p}_pre_shim(&raw[i * {n}], q) != TMLR_OK) {{\n            ++failed;\n"
                "            continue;\n        }\n"
                f"        for (j = 0; j < {n}; ++j) {{\n            if (q[j] != expected[i * {n} + j]) {{\n"
                "                ++failed;\n                break;\n            }\n        }\n    }\n"
                f'    printf("%d passed, %d failed\\n", {SELFTEST_ROWS} - failed, failed);\n'
                "    return failed == 0 ? 0 : 1;\n}\n")
    return {f"{p}_pre_shim.h": header, f"{p}_pre_shim.c": source, f"{p}_pre_shim_selftest.c": selftest}
