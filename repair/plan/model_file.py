"""The repaired int8 model as the file the user deploys: ``repaired_int8.onnx`` for an ONNX model, or
``repaired_int8.tflite`` — the user's own .tflite with the repaired numbers written in (``models.tflite_write``)
— for a TFLite one.

A .tflite is checked before it leaves: the integer program lowered from the written file must give the same
output integers as the program of the repaired graph the repairs were fitted and judged on, on every check
input (the holdout). A difference is a bug in the writer, reported as such, never a silent change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..models import ModelPair
from ..models.tflite_write import repaired_tflite


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name beside plan.json
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def is_tflite(self) -> bool:
        return self.name.endswith(".tflite")


def repaired_model_file(pair: ModelPair, model, check_x: np.ndarray | None = None) -> ModelFile:
    """``model`` (the repaired ONNX graph of ``pair.int8``) in the format ``pair.int8`` came in."""
    if pair.int8.format != "tflite":
        return ModelFile("repaired_int8.onnx", model.SerializeToString())
    raw = repaired_tflite(pair.int8.tflite, model)
    if check_x is not None and len(check_x):
        from ..program import lower
        from ..program.lower_tflite import lower_tflite
        from ..program.runner import ProgramRunner

        want = ProgramRunner(pair, lower(model)).output_integers(check_x)
        got = ProgramRunner(pair, lower_tflite(raw)).output_integers(check_x)
        differ = int(np.any(want.reshape(len(check_x), -1) != got.reshape(len(check_x), -1), axis=1).sum())
        if differ:
            raise ModelError(f"internal error: the written repaired_int8.tflite computes other outputs than the "
                             f"repaired model on {differ} of {len(check_x)} holdout inputs; please report it")
    return ModelFile("repaired_int8.tflite", raw)


def input_pre_shim(model, reading_lsb=1.0) -> dict | None:
    """The repaired model's input pre-shim (``repairs.in_model.input_scaling``) for the plan: x' = x·a + b then the
    input quantization, and its integer form for firmware reading integer sensor counts r (x = r·lsb;
    ``fixedpoint.input_pre_shim_params``); None when the model has none. Emitted only for a 2-D input (features
    last), the layout the C shim reads."""
    from .. import fixedpoint as fp
    from ..models.graph import GraphIndex

    ix = GraphIndex(model)
    name = ix.input_names[0]
    affine = ix.input_affine(name)
    q = ix.input_quant(name)
    if affine is None or q is None:
        return None
    n = int(np.asarray(affine.a).size)
    a = np.broadcast_to(np.asarray(affine.a, np.float64).reshape(-1), (n,))
    b = np.broadcast_to(np.asarray(affine.b, np.float64).reshape(-1), (n,))
    lsb = np.asarray(reading_lsb, np.float64).reshape(-1)
    if lsb.size not in (1, n) or not np.all(lsb > 0):
        from ..errors import DataError

        raise DataError(f"--reading-lsb: give one positive number, or {n} (one per input feature); got {lsb.size}")
    record = {"features": n, "a": a.tolist(), "b": b.tolist(), "input_scale": q.scale,
              "input_zero_point": q.zero_point, "reading_lsb": np.broadcast_to(lsb, (n,)).tolist(),
              "features_last": len(ix.io_shape(name)) == 2}
    try:
        integer = fp.input_pre_shim_params(a, b, q.scale, lsb)
        fp.check_pre_shim_params(integer["multipliers"], integer["shifts"], integer["offsets"], q.zero_point)
        record["integer"] = integer
    except fp.ParamError as e:  # readings at this lsb do not fit the C form: the plan says why
        record["integer_unavailable"] = str(e)
    return record


def int8_input_change(pair: ModelPair, model) -> dict | None:
    """When the repairs refitted an int8 input's quantization (a TFLite model's: the firmware's interface), the
    before and after and what the firmware must do; None when the input is float or unchanged."""
    from ..models.graph import GraphIndex

    spec = pair.int8.inputs[0]
    if spec.quant is None or not spec.dtype.startswith("int"):
        return None
    ix = GraphIndex(model)
    after = ix.input_quant(ix.input_names[0])
    if after is None or (np.float32(after.scale) == np.float32(spec.quant.scale) and
                         after.zero_point == spec.quant.zero_point):
        return None
    return {"scale_before": spec.quant.scale, "zero_point_before": spec.quant.zero_point,
            "scale_after": after.scale, "zero_point_after": after.zero_point,
            "why": "the repairs refitted the int8 input's range (a glitched or wrong-gain calibration set it): TFLM "
                   "firmware reading input->params gets the new values from the repaired model; firmware that "
                   "hard-codes them must take PREFIX_INPUT_SCALE and PREFIX_INPUT_ZERO_POINT from `tmlrepair emit`"}
