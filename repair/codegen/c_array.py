"""One C array initializer for every emitter: shim parameters, the model kernels' constants, the .tflite bytes."""

from __future__ import annotations

import numpy as np


def c_array(ctype: str, name: str, values, per_row: int = 16, storage: str = "static const",
            hex_bytes: bool = False) -> str:
    """``storage ctype name[n] = { ... };`` with ``per_row`` values a line (n ≥ 1: C has no empty arrays);
    ``hex_bytes`` writes 0x.. (the form of ``xxd -i``) for byte arrays."""
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    text = (lambda v: f"0x{v:02x}") if hex_bytes else str
    rows = [", ".join(text(v) for v in vals[i:i + per_row]) for i in range(0, len(vals), per_row)]
    return f"{storage} {ctype} {name}[{max(1, len(vals))}] = {{\n    " + ",\n    ".join(rows or ["0"]) + "\n};\n"
