"""diagnose: find the first layer where the device stops computing what the integer program says.

The device runs each input once with PROBE and returns every layer's digest (CRC-16, min, max of its output
bytes); the program computes the same tensors on the host (``IntProgram.run_tensors``: what TFLM's reference
kernels compute, bit for bit). The first layer whose digest differs on any input is where the firmware departs:
every layer before it is proven equal, so the cause is in that layer's kernel or parameters (or, at layer 0 of
every input, in the input glue). One round trip per input; nothing but digests on the wire.

Then the cause: that layer's whole output is read back (READ, a frame per run) on a few of the inputs where it
differs, and the difference device − program is classified (``classify``): a permutation of the right values
(layout, channel order), ±1 (rounding: single vs double rounding, ties), values clipped at the device's extremes
(activation range), a constant offset (zero point), a scale factor (multiplier or shift), or no simple pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..program.ir import IntProgram
from .framing import crc16
from .link import DeviceLink

CHECKS = {
    "permutation": "the layer's output layout or channel order (NHWC vs NCHW, a transposed store)",
    "rounding": "the requantization's rounding (TFLM rounds twice: doubling high multiply, then a rounding shift "
                "with ties away from zero; a single rounding or ties up differ by 1)",
    "clipped": "the activation range or clamp of this layer (ReLU vs ReLU6, act_min/act_max from the model), or an "
               "accumulator that saturates (16-bit lanes)",
    "saturated": "the zero points and scale of this layer: every value sits on one rail (an input's zero point not "
                 "subtracted, or a multiplier far too large)",
    "offset": "the zero points this layer uses (output zero point, an input's zero point not subtracted)",
    "scale": "the requantization multiplier and shift (a shift off by one doubles or halves the output)",
    "other": "the kernel's arithmetic (accumulator width, padding, strides, weights' layout)",
}


def classify(device: np.ndarray, program: np.ndarray, zero_point: int, channels_first: tuple[int, ...] | None
             ) -> dict:
    """What kind of difference ``device`` − ``program`` is, over [inputs, values] of one layer's output whose
    inputs are equal on both sides. ``channels_first``: the output's (C, H, W), to name a channels-last store."""
    dev, prog = device.astype(np.int64), program.astype(np.int64)
    diff = dev - prog
    hit = diff != 0
    out = {"share": float(hit.mean()), "worst": int(np.abs(diff).max())}
    if all(np.array_equal(np.sort(d), np.sort(p)) for d, p in zip(dev, prog)):
        cause, detail = "permutation", "the right values in the wrong places"
        if channels_first is not None and all(
                np.array_equal(d, p.reshape(channels_first).transpose(1, 2, 0).ravel()) for d, p in zip(dev, prog)):
            detail = "the values stored channels-last (HWC) where CHW is read"
    elif out["worst"] == 1:
        cause, detail = "rounding", f"±1 on {out['share']:.1%} of values"
    elif np.all(dev == dev[:, :1]) and abs(int(dev[0, 0])) >= 127:
        cause = "saturated"
        detail = f"every value is {int(dev[0, 0])} where the program spans [{int(prog.min())}, {int(prog.max())}]"
    elif _clipped(dev, prog, hit):
        cause, detail = "clipped", (f"device values stop at [{int(dev.min())}, {int(dev.max())}] where the program "
                                    f"reaches [{int(prog.min())}, {int(prog.max())}]")
    else:
        values, counts = np.unique(diff[hit], return_counts=True)
        a = _slope(dev, prog, zero_point)
        if counts.max() >= 0.9 * hit.sum() and hit.mean() >= 0.5:
            cause, detail = "offset", f"a constant offset of {int(values[counts.argmax()]):+d}"
        elif a is not None:
            cause, detail = "scale", f"the device's output ≈ {a:.3g} × the program's (about the zero point)"
        else:
            cause, detail = "other", f"{out['share']:.1%} of values differ, by up to {out['worst']}"
    return {**out, "cause": cause, "detail": detail, "check": CHECKS[cause]}


def _clipped(dev: np.ndarray, prog: np.ndarray, hit: np.ndarray) -> bool:
    """Differences only where the device sits at its extreme and the program goes past it."""
    top = (dev == dev.max(axis=1, keepdims=True)) & (prog > dev)
    bottom = (dev == dev.min(axis=1, keepdims=True)) & (prog < dev)
    return bool(hit.any() and ((top | bottom)[hit]).mean() >= 0.95)


def _slope(dev: np.ndarray, prog: np.ndarray, zero_point: int) -> float | None:
    """a in dev − zp ≈ a·(prog − zp) over the values neither side saturates, when that fits well and a ≠ 1."""
    keep = (np.abs(dev) < 127) & (np.abs(prog) < 127) & (prog != zero_point)
    if keep.sum() < 8:
        return None
    x, y = (prog[keep] - zero_point).astype(np.float64), (dev[keep] - zero_point).astype(np.float64)
    a = float(x @ y / (x @ x))
    r2 = 1 - float(((y - a * x) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))
    return a if r2 > 0.9 and abs(a - 1) > 0.1 else None


@dataclass
class Diagnosis:
    layers: list[dict]  # per layer: index, op, node, inputs where it differs (first divergence or later)
    inputs: int
    first_divergent: int | None  # layer index, or None when every layer equals the program
    finding: dict | None = None  # the first divergent layer's difference, classified (``classify``)

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "first_divergent_layer": self.first_divergent, "layers": self.layers,
                "finding": self.finding}

    def summary(self) -> str:
        if self.first_divergent is None:
            return f"every layer equals the program on all {self.inputs} inputs"
        row = self.layers[self.first_divergent]
        line = (f"first divergent layer: {row['index']} ({row['op']} {row['node']!r}) differs on {row['differ']} of "
                f"{self.inputs} inputs; the {row['index']} layer(s) before it equal the program on every input")
        f = self.finding
        if f is None:
            return line + ": check that layer's kernel (rounding, padding, saturation, channel order) and its parameters"
        return (line + f"\n  cause: {f['cause']} — {f['detail']}; {f['share']:.1%} of its values differ, worst by "
                f"{f['worst']}; check {f['check']}"
                + ("; or the input's quantization (scale, zero point, int8 vs uint8, layout)" if f.get("at_input")
                   else ""))


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


def diagnose(link: DeviceLink, program: IntProgram, x: np.ndarray, read_inputs: int = 4) -> Diagnosis:
    """Probe the device on the int8 inputs ``x`` [N, input size] and compare every layer with the program; read
    the first divergent layer back on ``read_inputs`` inputs and classify the difference."""
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
    first = min(firsts) if firsts else None
    finding = None if first is None else read_and_classify(link, program, x, differ, first, read_inputs)
    return Diagnosis(rows, len(x), first, finding)


def read_and_classify(link: DeviceLink, program: IntProgram, x: np.ndarray, differ: np.ndarray, layer: int,
                      inputs: int) -> dict:
    """Read ``layer``'s output back on up to ``inputs`` of the inputs where it is the first to differ, and classify
    the difference against the program's."""
    rows = [i for i in range(len(x)) if differ[i, layer] and not differ[i, :layer].any()][:inputs]
    out = program.layers[layer].output
    t = program.tensors[out]
    want = program.run_tensors(x[rows], [out])[out].reshape(len(rows), -1)
    got = np.stack([link.read_layer(x[i], layer) for i in rows])
    chw = tuple(t.shape) if len(t.shape) == 3 else None
    return {**classify(got, want, t.zero_point, chw), "inputs_read": len(rows),
            "at_input": layer == 0 and bool(differ[:, 0].all())}


def diagnose_differing(link: DeviceLink, program: IntProgram, x: np.ndarray, q_device: np.ndarray,
                       limit: int = 8) -> dict | None:
    """Inside calibrate / validate: when the device's model outputs differ from the program's on some of the
    inputs ``x``, diagnose on up to ``limit`` of them (None when all agree, or the firmware cannot probe)."""
    from . import protocol as P

    want = program.run(x).reshape(len(x), -1)
    rows = np.flatnonzero((want.astype(np.int64) != np.asarray(q_device).reshape(len(x), -1)).any(axis=1))
    if len(rows) == 0 or (link.capabilities is not None and not link.capabilities & P.CAP_PROBE):
        return None
    d = diagnose(link, program, x[rows[:limit]])
    return {**d.to_dict(), "summary": d.summary()}


def attach_float_drift(result: dict, program: IntProgram, drift_tensors: list[dict]) -> None:
    """Each layer's SQNR against the float model (``measure_drift``'s per-tensor rows, computed on the program)
    into ``result["layers"]``: the device's own figure on every layer its digests prove equal to the program."""
    by_program = {program.aliases.get(t["int8_name"], t["int8_name"]): t["sqnr_db"] for t in drift_tensors}
    for row, layer in zip(result["layers"], program.layers):
        proven = result["first_divergent_layer"] is None or row["index"] < result["first_divergent_layer"]
        row["sqnr_vs_float_db"] = by_program.get(layer.output) if proven else None
