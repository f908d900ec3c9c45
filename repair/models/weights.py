"""Are FLOAT and INT8 one network? The cosine between a float layer's weights and the paired int8 layer's
dequantized weights (quantizing keeps it near 1, two different networks give values near 0) and the agreement of
their signs (which equalization, a positive rescaling, never changes)."""

from __future__ import annotations

import numpy as np

from .graph import GraphIndex


def _weight_matrix(ix: GraphIndex, node) -> np.ndarray | None:
    """The layer's weights as [out, -1] in float, or None for ops without constant weights."""
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or not ix.is_constant(node.input[1]):
        return None
    w = np.asarray(ix.constant_value(node.input[1]), np.float64)
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
    return w if trans_b else w.reshape(-1, w.shape[-1]).T


def weight_similarity(fx: GraphIndex, qx: GraphIndex, float_node: str, int8_node: str) -> tuple[float, float] | None:
    """(cosine, sign agreement) between the float layer's weights and the int8 layer's dequantized weights.

    Sign agreement: the share of nonzero int8 weights whose sign is the float weight's. Positive per-channel
    rescaling (cross-layer equalization) bends the cosine of a layer whose input channels were rescaled but never a
    sign, so a repaired model stays recognisably the same network; two different networks agree on about half.
    """
    wf, wq = _weight_matrix(fx, fx.by_key[float_node]), _weight_matrix(qx, qx.by_key[int8_node])
    if wf is None or wq is None or wf.shape != wq.shape:
        return None
    den = np.linalg.norm(wf) * np.linalg.norm(wq)
    if den == 0:
        return None
    nonzero = wq != 0
    signs = float((np.sign(wf[nonzero]) == np.sign(wq[nonzero])).mean()) if nonzero.any() else 1.0
    return float((wf * wq).sum() / den), signs
