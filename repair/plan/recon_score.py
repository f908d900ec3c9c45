"""The anomaly score an autoencoder's device computes: the integer reconstruction score of
``repair.fixedpoint_anomaly`` on the model's int8 input and int8 output (``tmlr_recon_score_s16`` in C).

The anomaly repairs of a reconstruction model are fitted and judged on these integers, so the threshold or
window the device runs sees exactly the scores it was fitted on. The score scale is fitted on the calibration
split: 4× headroom over its largest mean squared error (``score_threshold.score_scale``).
"""

from __future__ import annotations

import numpy as np

from .. import fixedpoint_anomaly as fpa
from ..errors import DataError
from ..models import ModelPair, QuantParams
from ..repairs.after_model.score_threshold import score_scale


def model_input(pair: ModelPair, x: np.ndarray, model=None) -> tuple[np.ndarray, QuantParams | None]:
    """The int8 inputs of ``pair``'s int8 model (or of ``model``, its repaired copy, whose input quantization may
    have been refitted) for float inputs ``x``, one flat row per sample, and their quantization (None when an
    input pre-shim scales the input first: the model's int8 input is then not in the units it reconstructs)."""
    if model is not None:
        from ..program import lower
        from ..program.runner import ProgramRunner

        runner = ProgramRunner(pair, lower(model))
        quant = None if runner.program.input_affine is not None else runner.input_quant
        return runner.quantize(x).astype(np.int8), quant
    spec = pair.int8.inputs[0]
    quant = None if pair.int8.index.input_affine(spec.name) is not None else (
        pair.int8.index.input_quant(spec.name) or spec.quant)
    return pair.int8_input_integers(x), quant


def recon_score_params(pair: ModelPair, in_quant: QuantParams | None, q_in: np.ndarray, q_out: np.ndarray
                       ) -> dict | None:
    """Integer score parameters for this pair (``in_quant``: ``model_input``'s), the score scale fitted on the
    calibration integers ``q_in`` / ``q_out``; None where the score has no integer form (no input quantization
    in the units reconstructed)."""
    out_q = pair.int8.outputs[0].quant
    n = q_in.shape[1]
    if in_quant is None or out_q is None or q_out.shape[1] != n:
        return None
    mse = np.mean((in_quant.scale * (q_in.astype(np.float64) - in_quant.zero_point)
                   - out_q.scale * (q_out.astype(np.float64) - out_q.zero_point)) ** 2, axis=1)
    try:
        return fpa.recon_score_params(in_quant.scale, in_quant.zero_point, out_q.scale, out_q.zero_point, n,
                                      score_scale(mse))
    except fpa.ParamError as e:
        raise DataError(f"the reconstruction score has no integer form for this model: {e}") from None


def recon_scores(params: dict, q_in: np.ndarray, q_out: np.ndarray) -> np.ndarray:
    """The device's int16 scores as float64 multiples of the score scale (exact: |q| < 2^15)."""
    return fpa.recon_score_s16(q_in, q_out, params).astype(np.float64) * params["score_scale"]
