"""Are FLOAT and INT8 one network? The cosine between a float layer's weights and the paired int8 layer's
dequantized weights: quantizing keeps it near 1, two different networks give values near 0."""

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


def weight_cosine(fx: GraphIndex, qx: GraphIndex, float_node: str, int8_node: str) -> float | None:
    """Cosine between the float layer's weights and the int8 layer's dequantized weights (nodes by key)."""
    wf, wq = _weight_matrix(fx, fx.by_key[float_node]), _weight_matrix(qx, qx.by_key[int8_node])
    if wf is None or wq is None or wf.shape != wq.shape:
        return None
    den = np.linalg.norm(wf) * np.linalg.norm(wq)
    return float((wf * wq).sum() / den) if den > 0 else None
