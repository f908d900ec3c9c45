"""Lower an int8 QDQ ONNX model to the integer program of the reference device (``program.IntProgram``).

The graph is evaluated symbolically, node by node in order: QuantizeLinear outputs are int8 tensors,
DequantizeLinear of one is its float view, DequantizeLinear of an initializer is a constant (int8 weights,
int32 bias). A compute node over float views (Conv, Gemm, MatMul [+ Add bias], pooling, Add, Softmax) stays
pending, gathers a following Relu/Clip, and becomes one integer layer at the QuantizeLinear that ends it —
which fixes the output scale and zero point. Reshape/Flatten/Transpose apply to int8 tensors directly.
Anything else is refused with the op and node named.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .. import fixedpoint as fp
from ..errors import ModelError
from ..models.graph import find_input_affine
from ..models.tflite_file import is_tflite
from .ir import ADD_LEFT_SHIFT, IntProgram, Layer, QTensor
from .onnx_layers import LayerParams, multiplier

SUPPORTED = ("Conv (incl. depthwise/grouped, 1-D and 2-D)", "Gemm", "MatMul (+ Add bias)", "Add", "Relu", "Clip",
             "AveragePool", "GlobalAveragePool", "MaxPool", "Reshape", "Flatten", "Transpose", "Softmax",
             "Mul (a Softmax's beta)",
             "QuantizeLinear", "DequantizeLinear")


class _Pending:
    """A float compute node waiting for the QuantizeLinear that gives its output integers."""

    def __init__(self, op, node, inputs, **p):
        self.op, self.node, self.inputs, self.p = op, node, inputs, p
        self.act = (None, None)  # float clamp range from Relu/Clip


class _Lowering(LayerParams):
    def __init__(self, model: onnx.ModelProto):
        self.g = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.env: dict[str, tuple] = {}
        self.tensors: dict[str, QTensor] = {}
        self.layers: list[Layer] = []
        self.input_name: str | None = None
        self.graph_input = self.g.input[0] if len(self.g.input) else None
        self.pre_shim_output, self.input_affine = None, None
        self._count = 0

    # -------------------------------------------------------------- helpers
    def fail(self, node, what: str):
        raise ModelError(f"node {node.name or node.output[0]!r} ({node.op_type}): {what}")

    def new_tensor(self, name: str, shape, scale: float, zp: int) -> str:
        key = name
        while key in self.tensors:
            self._count += 1
            key = f"{name}#{self._count}"
        self.tensors[key] = QTensor(key, tuple(int(d) for d in shape), float(scale), int(zp))
        return key

    def scalar(self, name: str, node) -> np.ndarray:
        if name not in self.inits:
            self.fail(node, f"input {name!r} must be a constant initializer")
        return self.inits[name]

    def input_shape(self) -> tuple[int, ...]:
        dims = self.graph_input.type.tensor_type.shape.dim
        return tuple(d.dim_value for d in dims[1:])

    def view(self, name: str, node) -> str:
        """The int8 tensor behind a float input of a compute node."""
        v = self.env.get(name)
        if v is not None and v[0] == "dq_scaled":
            self.fail(node, f"input {name!r} is dequantized with another scale than it was quantized with; only a "
                            "Softmax may take such an input (a folded temperature)")
        if v is None or v[0] != "dq":
            self.fail(node, f"input {name!r} is not a dequantized int8 activation (only QDQ models are supported)")
        return v[1]

    # -------------------------------------------------------------- nodes
    def run(self) -> IntProgram:
        if self.graph_input is None:
            raise ModelError("the model has no input")
        if self.graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT8:
            self._register_int8_input()
        affine = find_input_affine(self.g.node, self.graph_input.name, self.inits.get)
        skip = set()
        if affine is not None:  # the input pre-shim: the host applies it before quantizing, as it quantizes
            self.pre_shim_output, self.input_affine = affine.output, (affine.a, affine.b)
            skip = {id(n) for n in affine.nodes}
        for node in self.g.node:
            if id(node) in skip:
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                self.fail(node, "not supported by the reference device; supported: " + ", ".join(SUPPORTED))
            handler(node)
        out = self.env.get(self.g.output[0].name)
        if out is None or out[0] not in ("q", "dq"):
            raise ModelError(f"the output {self.g.output[0].name!r} does not end in a QuantizeLinear: not an int8 model")
        if self.input_name is None:
            raise ModelError("the model's input is never quantized: not an int8 model")
        aliases = {name: v[1] for name, v in self.env.items() if v[0] in ("q", "dq")}
        aliases[self.g.output[0].name] = out[1]
        return IntProgram(self.tensors, self.layers, self.input_name, out[1], aliases, self.input_affine)

    def _register_int8_input(self):
        """An int8 graph input: its scale and zero point are those of the first DequantizeLinear it reaches
        (through Reshape/Transpose/Flatten, as TFLite-converted graphs have it)."""
        frontier, layout = {self.graph_input.name}, ("Reshape", "Transpose", "Flatten")
        for node in self.g.node:
            if not frontier.intersection(node.input):
                continue
            if node.op_type == "DequantizeLinear":
                zp = self.inits.get(node.input[2]) if len(node.input) > 2 else None
                self.input_name = self.new_tensor(self.graph_input.name, self.input_shape(),
                                                  float(self.scalar(node.input[1], node).reshape(-1)[0]),
                                                  int(zp.reshape(-1)[0]) if zp is not None else 0)
                self.env[self.graph_input.name] = ("q", self.input_name)
                return
            if node.op_type in layout:
                frontier.add(node.output[0])
        raise ModelError("the model's int8 input never reaches a DequantizeLinear: cannot tell its scale")

    def op_QuantizeLinear(self, node):
        x = node.input[0]
        scale = float(self.scalar(node.input[1], node).reshape(-1)[0])
        zp_arr = self.inits.get(node.input[2]) if len(node.input) > 2 else None
        zp = int(zp_arr.reshape(-1)[0]) if zp_arr is not None else 0
        if zp_arr is not None and zp_arr.dtype != np.int8:
            self.fail(node, f"quantizes to {zp_arr.dtype}; the reference device runs int8 only")
        v = self.env.get(x)
        if x in (self.graph_input.name, self.pre_shim_output) and self.input_name is None:
            self.input_name = self.new_tensor(node.output[0], self.input_shape(), scale, zp)
            self.env[node.output[0]] = ("q", self.input_name)
        elif v is not None and v[0] == "pending":
            self.env[node.output[0]] = ("q", self.finish(v[1], node.output[0], scale, zp))
        elif v is not None and v[0] == "dq":
            src = self.tensors[v[1]]
            if math.isclose(src.scale, scale, rel_tol=1e-6) and src.zero_point == zp:
                self.env[node.output[0]] = ("q", v[1])
            else:
                pend = _Pending("requant", node, [v[1]])
                self.env[node.output[0]] = ("q", self.finish(pend, node.output[0], scale, zp))
        else:
            self.fail(node, f"quantizes {x!r}, which is not the output of a supported op")

    def op_DequantizeLinear(self, node):
        x = node.input[0]
        scale = self.scalar(node.input[1], node).astype(np.float64)
        zp = self.inits.get(node.input[2]) if len(node.input) > 2 else None
        if x in self.inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            q = self.inits[x]
            zp = np.zeros(1, q.dtype) if zp is None else zp
            self.env[node.output[0]] = ("const", {"q": q, "scale": scale.reshape(-1), "zp": zp.reshape(-1),
                                                   "axis": axis})
            return
        v = self.env.get(x)
        if v is None or v[0] != "q":
            self.fail(node, f"dequantizes {x!r}, which is not an int8 tensor of the model")
        t = self.tensors[v[1]]
        s = float(scale.reshape(-1)[0])
        if (zp is not None and int(zp.reshape(-1)[0]) != t.zero_point) or scale.size != 1:
            self.fail(node, f"dequantizes {x!r} with other quantization parameters than it was quantized with")
        if math.isclose(s, t.scale, rel_tol=1e-6):
            self.env[node.output[0]] = ("dq", v[1])
        else:  # a temperature folded into the input scale of a Softmax (repair.plan.model_softmax); nothing else
            self.env[node.output[0]] = ("dq_scaled", v[1], s)

    def _weights(self, name, node):
        c = self.env.get(name)
        if c is None or c[0] != "const":
            self.fail(node, f"weights {name!r} are not a dequantized int8 initializer")
        c = c[1]
        if c["q"].dtype != np.int8 or np.any(c["zp"] != 0):
            self.fail(node, "weights must be int8 with zero point 0 (symmetric), as TFLite and quantize_static write")
        return c

    def _bias(self, name, node):
        c = self.env.get(name)
        if c is None:
            if name in self.inits:  # a float bias
                return {"real": self.inits[name].astype(np.float64)}
            self.fail(node, f"bias {name!r} is not a constant")
        if c[0] != "const":
            self.fail(node, f"bias {name!r} is not a constant")
        return c[1]

    def op_Conv(self, node):
        x = self.view(node.input[0], node)
        w = self._weights(node.input[1], node)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, "auto_pad is not supported: export with explicit pads")
        bias = self._bias(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        self.env[node.output[0]] = ("pending", _Pending("conv", node, [x], w=w, bias=bias, attrs=attrs))

    def op_Gemm(self, node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            self.fail(node, "only Gemm with transA=0, alpha=1, beta=1 is supported")
        x = self.view(node.input[0], node)
        w = self._weights(node.input[1], node)
        bias = self._bias(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        self.env[node.output[0]] = ("pending", _Pending("fc", node, [x], w=w, bias=bias, trans=bool(attrs.get("transB", 0))))

    def op_MatMul(self, node):
        x = self.view(node.input[0], node)
        w = self._weights(node.input[1], node)
        self.env[node.output[0]] = ("pending", _Pending("fc", node, [x], w=w, bias=None, trans=False))

    def op_Add(self, node):
        a, b = (self.env.get(i) for i in node.input)
        is_constant = (b is not None and b[0] == "const") or node.input[1] in self.inits
        if a is not None and a[0] == "pending" and a[1].op == "fc" and a[1].p["bias"] is None and is_constant:
            a[1].p["bias"] = self._bias(node.input[1], node)
            self.env[node.output[0]] = a
            return
        xa, xb = self.view(node.input[0], node), self.view(node.input[1], node)
        if self.tensors[xa].shape != self.tensors[xb].shape:
            self.fail(node, "Add with broadcasting is not supported")
        self.env[node.output[0]] = ("pending", _Pending("add", node, [xa, xb]))

    def _activation(self, node, lo, hi):
        v = self.env.get(node.input[0])
        if v is not None and v[0] == "dq":
            v = ("pending", _Pending("requant", node, [v[1]]))
        if v is None or v[0] != "pending":
            self.fail(node, "follows an op the reference device cannot fuse it into")
        plo, phi = v[1].act
        v[1].act = (lo if plo is None else max(lo, plo), hi if phi is None else (phi if hi is None else min(hi, phi)))
        self.env[node.output[0]] = v

    def op_Relu(self, node):
        self._activation(node, 0.0, None)

    def op_Clip(self, node):
        lo = float(self.scalar(node.input[1], node)) if len(node.input) > 1 and node.input[1] else -math.inf
        hi = float(self.scalar(node.input[2], node)) if len(node.input) > 2 and node.input[2] else None
        self._activation(node, lo, hi)

    def _pool(self, node, op, global_pool):
        x = self.view(node.input[0], node)
        shape = self.tensors[x].shape
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        spatial = shape[1:]
        if global_pool:
            kernel, strides = list(spatial), [1] * len(spatial)
        else:
            kernel, strides = list(attrs["kernel_shape"]), list(attrs.get("strides", [1] * len(spatial)))
            if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1])):
                self.fail(node, "pooling with pads, ceil_mode or dilations is not supported")
        if len(spatial) == 1:
            kernel, strides = [1] + kernel, [1] + strides
        self.env[node.output[0]] = ("pending", _Pending(op, node, [x], kernel=kernel, strides=strides))

    def op_GlobalAveragePool(self, node):
        self._pool(node, "avgpool", True)

    def op_AveragePool(self, node):
        self._pool(node, "avgpool", False)

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "MaxPool with indices is not supported")
        self._pool(node, "maxpool", False)

    def op_Mul(self, node):
        """Only softmax(β·x): a scalar constant times a dequantized int8 tensor that a Softmax reads (the form of
        a .tflite SOFTMAX's ``beta``, see ``models.tflite_onnx``)."""
        beta = self.inits.get(node.input[1])
        users = [n for n in self.g.node if node.output[0] in n.input]
        if beta is None or beta.size != 1 or len(users) != 1 or users[0].op_type != "Softmax":
            self.fail(node, "only a scalar constant Mul in front of a Softmax (its beta) is supported")
        self.env[node.output[0]] = ("dq_beta", self.view(node.input[0], node), float(beta.reshape(-1)[0]))

    def op_Softmax(self, node):
        v = self.env.get(node.input[0])
        scaled = v[2] if v is not None and v[0] == "dq_scaled" else None  # β·s folded into the input's scale
        beta = v[2] if v is not None and v[0] == "dq_beta" else 1.0  # TFLM: β · s_in, in double
        x = v[1] if v is not None and v[0] in ("dq_scaled", "dq_beta") else self.view(node.input[0], node)
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if axis not in (-1, len(self.tensors[x].shape)):
            self.fail(node, "Softmax must be over the last axis")
        self.env[node.output[0]] = ("pending", _Pending("softmax", node, [x], input_scale=scaled, beta=beta))

    def _layout(self, node, new_shape, op="reshape", **p):
        v = self.env.get(node.input[0])
        if v is None or v[0] not in ("q", "dq"):
            self.fail(node, "applies to a tensor that is not an int8 activation")
        src = self.tensors[v[1]]
        if math.prod(new_shape) != src.size:
            self.fail(node, f"reshapes {src.size} values to {list(new_shape)}")
        out = self.new_tensor(node.output[0], new_shape, src.scale, src.zero_point)
        self.layers.append(Layer(op, [v[1]], out, node.name or node.output[0], p))
        self.env[node.output[0]] = (v[0], out)

    def op_Reshape(self, node):
        v = self.env.get(node.input[0])
        if v is None or v[0] not in ("q", "dq"):
            self.fail(node, "applies to a tensor that is not an int8 activation")
        target = [int(d) for d in self.scalar(node.input[1], node).reshape(-1)][1:]
        size = self.tensors[v[1]].size
        if target.count(-1) == 1:
            known = math.prod(d for d in target if d != -1)
            target[target.index(-1)] = size // known
        self._layout(node, tuple(target))

    def op_Flatten(self, node):
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if axis != 1:
            self.fail(node, "only Flatten with axis=1 is supported")
        v = self.env.get(node.input[0])
        size = self.tensors[v[1]].size if v and v[0] in ("q", "dq") else 0
        self._layout(node, (size,))

    def op_Transpose(self, node):
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        v = self.env.get(node.input[0])
        if not perm or perm[0] != 0 or v is None or v[0] not in ("q", "dq"):
            self.fail(node, "only a Transpose that keeps the batch axis first is supported")
        shape = self.tensors[v[1]].shape
        inner = [d - 1 for d in perm[1:]]
        self._layout(node, tuple(shape[i] for i in inner), op="transpose", perm=inner)

    # -------------------------------------------------------------- integer layers
    def finish(self, pend: _Pending, name: str, scale: float, zp: int) -> str:
        node = pend.node
        src = self.tensors[pend.inputs[0]]
        lo, hi = pend.act
        qmin = -128 if lo is None else max(-128, min(127, int(round(lo / scale)) + zp))
        qmax = 127 if hi is None else min(127, max(-128, int(round(hi / scale)) + zp))
        base = {"in_zp": src.zero_point, "out_zp": zp, "act_min": qmin, "act_max": qmax}
        if pend.op == "conv":
            p, shape = self._conv_params(pend, src, scale)
        elif pend.op == "fc":
            p, shape = self._fc_params(pend, src, scale)
        elif pend.op in ("avgpool", "maxpool"):
            (kh, kw), (sh, sw) = pend.p["kernel"], pend.p["strides"]
            spatial = src.shape[1:] if len(src.shape) == 3 else (1,) + src.shape[1:]
            ho, wo = (spatial[0] - kh) // sh + 1, (spatial[1] - kw) // sw + 1
            real = src.scale / (scale * kh * kw) if pend.op == "avgpool" else src.scale / scale
            m, s = multiplier(real, node.name)
            p = {"kernel": (kh, kw), "strides": (sh, sw), "mult": [m], "shift": [s]}
            if pend.op == "avgpool" and math.isclose(src.scale, scale, rel_tol=1e-6) and src.zero_point == zp:
                pend.op = "avgpool_tflm"  # TFLite's AVERAGE_POOL_2D form: TFLM averages the raw values
            shape = (src.shape[0], ho, wo) if len(src.shape) == 3 else (src.shape[0], wo)
        elif pend.op == "requant":
            m, s = multiplier(src.scale / scale, node.name)
            p, shape = {"mult": [m], "shift": [s]}, src.shape
        elif pend.op == "add":
            other = self.tensors[pend.inputs[1]]
            twice = 2 * max(src.scale, other.scale)
            m1, s1 = multiplier(src.scale / twice, node.name)
            m2, s2 = multiplier(other.scale / twice, node.name)
            mo, so = multiplier(twice / ((1 << ADD_LEFT_SHIFT) * scale), node.name)
            p = {"mult1": m1, "shift1": s1, "mult2": m2, "shift2": s2, "mult": [mo], "shift": [so],
                 "in1_zp": other.zero_point}
            shape = src.shape
        elif pend.op == "softmax":
            if not (math.isclose(scale, 1 / 256, rel_tol=1e-6) and zp == -128):
                self.fail(node, f"Softmax output must be quantized with scale 1/256 and zero point -128 "
                                f"(TFLite Micro's int8 softmax); it is {scale:.6g}, {zp}")
            mult, shift, diff_min = fp.softmax_params(pend.p["beta"], pend.p.get("input_scale") or src.scale)
            p, shape = {"mult": mult, "shift": shift, "diff_min": diff_min}, src.shape
        else:  # pragma: no cover - every _Pending op is handled above
            raise AssertionError(pend.op)
        out = self.new_tensor(name, shape, scale, zp)
        self.layers.append(Layer(pend.op, list(pend.inputs), out, node.name or node.output[0], {**base, **p}))
        return out


def lower(model: onnx.ModelProto | str | Path) -> IntProgram:
    """The integer program of an int8 QDQ model (see module docstring), or of the int8 .tflite or ONNX file at a
    path; ModelError names what is unsupported."""
    name = "the int8 model" if isinstance(model, onnx.ModelProto) else str(model)
    if not isinstance(model, onnx.ModelProto):
        raw = Path(model).read_bytes()
        if is_tflite(raw):
            from .lower_tflite import lower_tflite

            return lower_tflite(raw, name)
        model = onnx.load_from_string(raw)
    try:
        return _Lowering(model).run()
    except ModelError as e:
        raise ModelError(f"{name}: {e}") from None
