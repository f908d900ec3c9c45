"""diagnose: find the first layer where the device stops computing what the integer program says.

The device runs each input once with PROBE and returns every layer's digest (CRC-16, min, max of its output
bytes); the program computes the same tensors on the host (``IntProgram.run_tensors``: what TFLM's reference
kernels compute, bit for bit). The first layer whose digest differs on any input is where the firmware departs:
every layer before it is proven equal, so the cause is in that layer's kernel or parameters (or, at layer 0 of
every input, in the input glue). One round trip per input; nothing but digests on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..program.ir import IntProgram
from .framing import crc16
from .link import DeviceLink


@dataclass
class Diagnosis:
    layers: list[dict]  # per layer: index, op, node, inputs where it differs (first divergence or later)
    inputs: int
    first_divergent: int | None  # layer index, or None when every layer equals the program

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "first_divergent_layer": self.first_divergent, "layers": self.layers}

    def summary(self) -> str:
        if self.first_divergent is None:
            return f"every layer equals the program on all {self.inputs} inputs"
        row = self.layers[self.first_divergent]
        return (f"first divergent layer: {row['index']} ({row['op']} {row['node']!r}) differs on {row['differ']} of "
                f"{self.inputs} inputs; the {row['index']} layer(s) before it equal the program on every input: "
                "check that layer's kernel (rounding, padding, saturation, channel order) and its parameters")


def program_digests(program: IntProgram, x: np.ndarray) -> np.ndarray:
    """[inputs, layers, 3] (CRC-16, min, max) of every layer output, as the device's PROBE reports them."""
    names = [layer.output for layer in program.layers]
    values = program.run_tensors(x, names)
    out = np.zeros((len(x), len(names), 3), np.int64)
    for j, name in enumerate(names):
        v = values[name].reshape(len(x), -1)
        for i in range(len(x)):
            out[i, j] = (crc16(v[i].tobytes()), int(v[i].min()), int(v[i].max()))
    return out


def diagnose(link: DeviceLink, program: IntProgram, x: np.ndarray) -> Diagnosis:
    """Probe the device on the int8 inputs ``x`` [N, input size] and compare every layer with the program."""
    x = np.asarray(x, np.int8).reshape(len(x), -1)
    want = program_digests(program, x)
    got = np.stack([link.probe(sample) for sample in x])
    if got.shape != want.shape:
        raise ValueError(f"the device reports {got.shape[1]} layers, the program has {want.shape[1]}: flash the "
                         "firmware built for this model")
    differ = (got != want).any(axis=2)  # [inputs, layers]
    firsts = [int(np.argmax(row)) for row in differ if row.any()]
    rows = [{"index": j, "op": layer.op, "node": layer.node, "differ": int(differ[:, j].sum()),
             "first_here": int(sum(f == j for f in firsts))} for j, layer in enumerate(program.layers)]
    return Diagnosis(rows, len(x), min(firsts) if firsts else None)
