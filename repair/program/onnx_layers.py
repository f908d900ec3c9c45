"""The integer parameters of an ONNX QDQ layer, as the lowering writes them into the program: per-channel
Q0.31 multipliers and shifts (TFLite's ``QuantizeMultiplier`` of s_x·s_w,c / s_y), int32 biases at scale s_x·s_w,
conv geometry (pads, strides, dilations, groups), and the int32 accumulator bound."""

from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from ..errors import ModelError


def multiplier(real: float, node: str) -> tuple[int, int]:
    m, s = fp.quantize_multiplier(real)  # below 2^-32 it is (0, 0): the output is the zero point, as in TFLite
    if s > 30:
        raise ModelError(f"node {node!r}: requantization factor {real:.3g} is too large for a Q0.31 multiplier")
    return m, s


class LayerParams:
    """Mixed into the ONNX lowering: ``fail(node, what)`` comes from it."""

    def _requant_per_channel(self, node, src_scale, w_scale, out_scale, n_out):
        ws = np.broadcast_to(w_scale, (n_out,)) if w_scale.size == 1 else w_scale
        pairs = [multiplier(src_scale * float(s) / out_scale, node.name) for s in ws]
        return [m for m, _ in pairs], [s for _, s in pairs]

    def _int_bias(self, node, bias, src_scale, w_scale, n_out):
        if bias is None:
            return [0] * n_out
        ws = np.broadcast_to(w_scale, (n_out,))
        if "real" not in bias:
            q = np.broadcast_to(bias["q"].reshape(-1), (n_out,))
            if bias["q"].dtype == np.int32 and not np.any(bias["zp"]) and \
                    np.allclose(np.broadcast_to(bias["scale"].reshape(-1), (n_out,)), src_scale * ws, rtol=1e-6, atol=0):
                return q.astype(np.int64).tolist()  # int32 at scale s_x·s_w: the integers TFLM adds, as they are
        real = bias["real"] if "real" in bias else (bias["q"].astype(np.float64) - bias["zp"].astype(np.float64)) * \
            bias["scale"]
        b = np.rint(np.asarray(real, np.float64).reshape(-1) / (src_scale * ws))
        if np.any(np.abs(b) > 2 ** 31 - 1):
            self.fail(node, "a bias does not fit int32 at scale s_x·s_w")
        return b.astype(np.int64).tolist()

    def _conv_params(self, pend, src, out_scale):
        node, attrs, w = pend.node, pend.p["attrs"], pend.p["w"]
        q = w["q"]
        group = int(attrs.get("group", 1))
        if q.ndim == 3:  # 1-D conv
            q4 = q[:, :, None, :]
            pads = list(attrs.get("pads", [0, 0]))
            strides, dil = [1] + list(attrs.get("strides", [1])), [1] + list(attrs.get("dilations", [1]))
            pads4 = (0, pads[0], 0, pads[1])
            in_hw = (1, src.shape[1])
        elif q.ndim == 4:
            q4 = q
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            pads4 = (pads[0], pads[1], pads[2], pads[3])
            strides, dil = list(attrs.get("strides", [1, 1])), list(attrs.get("dilations", [1, 1]))
            in_hw = src.shape[1:]
        else:
            self.fail(node, "only 1-D and 2-D convolutions are supported")
        cout, cg, kh, kw = q4.shape
        if src.shape[0] != cg * group or cout % group:
            self.fail(node, f"channels {src.shape[0]} do not match weights {list(q.shape)} with group {group}")
        ho = (in_hw[0] + pads4[0] + pads4[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
        wo = (in_hw[1] + pads4[1] + pads4[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
        if w["scale"].size not in (1, cout):
            self.fail(node, "weight scales must be per tensor or per output channel")
        mult, shift = self._requant_per_channel(node, src.scale, w["scale"], out_scale, cout)
        bias = self._int_bias(node, pend.p["bias"], src.scale, w["scale"], cout)
        self._check_accumulator(node, cg * kh * kw, bias)
        p = {"weights": q4.astype(np.int8), "bias": bias, "mult": mult, "shift": shift, "group": group,
             "strides": tuple(strides), "dilations": tuple(dil), "pads": pads4, "in_hw": tuple(in_hw),
             "out_hw": (ho, wo)}
        shape = (cout, ho, wo) if q.ndim == 4 else (cout, wo)
        return p, shape

    def _fc_params(self, pend, src, out_scale):
        node, w = pend.node, pend.p["w"]
        q = w["q"] if pend.p["trans"] else w["q"].T  # → (out, in)
        if q.ndim != 2 or q.shape[1] != src.size:
            self.fail(node, f"weights {list(w['q'].shape)} do not match an input of {src.size} values")
        n_out = q.shape[0]
        if w["scale"].size not in (1, n_out):
            self.fail(node, "weight scales must be per tensor or per output channel")
        mult, shift = self._requant_per_channel(node, src.scale, w["scale"], out_scale, n_out)
        bias = self._int_bias(node, pend.p["bias"], src.scale, w["scale"], n_out)
        self._check_accumulator(node, q.shape[1], bias)
        return {"weights": np.ascontiguousarray(q, np.int8), "bias": bias, "mult": mult, "shift": shift}, (n_out,)

    def _check_accumulator(self, node, depth, bias):
        if depth * 255 * 128 + max((abs(b) for b in bias), default=0) >= 2 ** 31:
            self.fail(node, f"an accumulation over {depth} products could overflow int32")
