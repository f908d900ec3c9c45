"""Classifiers whose int8 model ends in its own Softmax (most TFLite classifiers: sww, ic_resnet8, vww).

Their int8 output is already a probability (scale 1/256, zero point −128): a second softmax on it is wrong.
The after-model repairs then act at two places:

* **temperature** on the *logits feeding that Softmax*: TFLite Micro computes the int8 softmax from
  β·s_in (``softmax_params``), so z/T is the same Softmax with β' = β/T. In a QDQ ONNX model it folds into the
  scale of the DequantizeLinear in front of the Softmax, s' = s/T (stored as float32): onnxruntime then computes
  softmax(q·s/T) and the integer program the Softmax with parameters ``softmax_params(1, s')``, which is what
  ``fold_temperature`` writes and ``temperature_params`` predicts. In a .tflite it is the op's ``beta``: its
  ONNX graph (``models.tflite_onnx``) carries β as a ``Mul`` in front of the Softmax, and the fold writes
  β' = float32(β/T) there, which TFLM turns into ``softmax_params(β', s_in)``.
* **thresholds** on the probabilities the Softmax produces (the model's output), as the shim receives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..models import ModelPair, QuantParams


@dataclass(frozen=True)
class ModelSoftmax:
    """The trailing Softmax of an int8 QDQ model: the int8 logits tensor (a QuantizeLinear output) feeding it,
    their quantization, and the DequantizeLinear node between them."""

    logits: str
    quant: QuantParams
    dequantize_node: str
    beta: float | None = None  # a .tflite's SOFTMAX beta (the Mul form); None: fold into the DQ scale (ONNX)


def find_model_softmax(pair: ModelPair) -> ModelSoftmax | None:
    """The int8 model's trailing Softmax (output ← Q ← Softmax ← DQ ← logits), or None."""
    ix = pair.int8.index
    cur = ix.output_names[0]
    node = ix.producer.get(cur)
    if node is not None and node.op_type == "DequantizeLinear":  # float-output models end in Q → DQ
        node = ix.producer.get(node.input[0])
    if node is None or node.op_type != "QuantizeLinear":
        return None
    sm = ix.producer.get(node.input[0])
    if sm is None or sm.op_type != "Softmax":
        return None
    dq = ix.producer.get(sm.input[0])
    beta = 1.0 if pair.int8.format == "tflite" else None
    if dq is not None and dq.op_type == "Mul":
        beta = float(ix.constant_value(dq.input[1]).reshape(-1)[0])
        dq = ix.producer.get(dq.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    quant = ix.quant_params(dq)
    if quant is None or quant.dtype != "int8":
        return None
    return ModelSoftmax(dq.input[0], quant, dq.name or dq.output[0], beta)


def int8_logits(pair: ModelPair, sm: ModelSoftmax, x: np.ndarray, batch_size: int = 256, model=None) -> np.ndarray:
    """The int8 logits feeding the model's Softmax on float inputs ``x`` (integers, one row per sample), as the
    integer program computes them (onnxruntime where the program cannot express the model)."""
    from ..errors import ModelError
    from ..program import lower
    from ..program.runner import ProgramRunner
    from ..repairs.in_model.context import session

    try:
        runner = ProgramRunner(pair, lower(model if model is not None else pair.int8.proto))
        return runner.run(x, [sm.logits])[0].reshape(len(x), -1).astype(np.int64)
    except (ModelError, KeyError):
        pass

    sess = session(model if model is not None else pair.int8.proto, [sm.logits])
    return pair.run_batched(sess, x, int8=True, batch_size=batch_size).reshape(len(x), -1).astype(np.int64)


def folded_scale(sm: ModelSoftmax, temperature: float) -> float:
    """The DequantizeLinear scale that applies 1/T in front of the Softmax, as the model stores it (float32)."""
    return float(np.float32(sm.quant.scale / temperature))


def folded_beta(sm: ModelSoftmax, temperature: float) -> float:
    """β/T as a .tflite stores it (float32)."""
    return float(np.float32(sm.beta / temperature))


def temperature_params(sm: ModelSoftmax, temperature: float) -> dict:
    """The Softmax's integer parameters after folding T (what TFLM/the integer program compute from s/T, or from
    β/T and s in a .tflite)."""
    if sm.beta is not None:
        mult, shift, diff_min = fp.softmax_params(folded_beta(sm, temperature), sm.quant.scale)
        return {"softmax_multiplier": mult, "softmax_shift": shift, "softmax_diff_min": diff_min,
                "beta": folded_beta(sm, temperature), "input_scale": sm.quant.scale,
                "applies_to": "the model's own Softmax (its beta)"}
    mult, shift, diff_min = fp.softmax_params(1.0, folded_scale(sm, temperature))
    return {"softmax_multiplier": mult, "softmax_shift": shift, "softmax_diff_min": diff_min,
            "beta": 1.0 / temperature, "input_scale": sm.quant.scale, "folded_input_scale": folded_scale(sm, temperature),
            "applies_to": "the model's own Softmax (its input scale, or beta in a .tflite)"}


def fold_temperature(model, sm: ModelSoftmax, temperature: float):
    """A copy of the int8 ONNX model with 1/T folded into the Softmax's input DequantizeLinear (a new scale
    initializer: the QuantizeLinear that produced the logits may share the old one)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if sm.beta is not None:
        return _fold_beta(m, sm, folded_beta(sm, temperature))
    dq = next(n for n in m.graph.node if (n.name or n.output[0]) == sm.dequantize_node)
    name = f"{dq.input[1]}_temperature"
    m.graph.initializer.append(numpy_helper.from_array(np.array(folded_scale(sm, temperature), np.float32), name))
    dq.input[1] = name
    return m


def _fold_beta(m, sm: ModelSoftmax, beta: float):
    """β' into the Mul in front of the Softmax (a new constant), or a new Mul when β was 1."""
    from onnx import helper, numpy_helper

    dq = next(n for n in m.graph.node if (n.name or n.output[0]) == sm.dequantize_node)
    softmax = next(n for n in m.graph.node if n.op_type == "Softmax" and n.input[0] in
                   {dq.output[0], *(u.output[0] for u in m.graph.node if u.op_type == "Mul" and u.input[0] == dq.output[0])})
    const = f"{softmax.name or softmax.output[0]}/beta_temperature"
    m.graph.initializer.append(numpy_helper.from_array(np.array(beta, np.float32), const))
    if softmax.input[0] != dq.output[0]:  # an existing Mul
        mul = next(n for n in m.graph.node if n.output[0] == softmax.input[0])
        mul.input[1] = const
        return m
    out = f"{const}:0"
    pos = list(m.graph.node).index(softmax)
    m.graph.node.insert(pos, helper.make_node("Mul", [dq.output[0], const], [out], name=f"{softmax.name}/beta"))
    softmax.input[0] = out
    return m
