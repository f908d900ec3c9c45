"""QdqModel: an editable view of an int8 QDQ ONNX model, for the in-model repairs.

The repairs change numbers, never structure: int8 weights and their scales, int32 biases and their
scales, and the scale / zero point of quantized activations. This module finds those numbers and
rewrites them consistently; the repairs (``bias_correction``, ``equalization``, ``thresholds``) only
decide *what* to write.

A **layer** is a Conv, Gemm or MatMul whose weight is ``DequantizeLinear(int8 initializer)``; its bias
is the ``DequantizeLinear(int32 initializer)`` on the node's third input (Conv, Gemm) or on the other
input of the ``Add`` after a MatMul. The bias scale is always ``input_scale · weight_scale[c]``
(the ONNX QDQ and TFLite convention), so whenever either scale changes the int32 bias is requantized
to keep its real value.

An **activation** is one quantized tensor: the int8 output of an activation ``QuantizeLinear`` with
every ``DequantizeLinear`` that reads it. Tensors that a layout op or pooling passes through with
identical parameters (``DQ → Flatten → Q``) form one group and change together, or the op in between
would clip. The model's int8 input and int8 output are its interface with the firmware and are never changed;
a float input's quantization and a float output's (float I/O: both inside the model) are ranges like any other
(the plan takes the output's from the repaired model).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ModelError
from ...models.graph import find_input_affine, node_links
from .parts import Activation, Layer

LAYER_OPS = ("Conv", "Gemm", "MatMul")
#: Ops through which a QDQ quantizer keeps one scale and zero point (output range = input range).
SAME_RANGE_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "AveragePool",
                            "Identity"})
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


class QdqModel:
    """A copy of an int8 QDQ model with its layers and activations indexed, edited in place, saved whole."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.model.graph.initializer}
        self._changed: set[str] = set()
        #: layer name or activation group key → equalization's per-channel divisor s: the int8 tensor ≈ float / s
        self.equalized: dict[str, np.ndarray] = {}
        self._index()

    def copy(self) -> "QdqModel":
        """A twin with its own graph and the same initializer arrays, frozen (edits replace arrays, never write
        into them): no serialization round trip, as the threshold search makes one per candidate."""
        twin = object.__new__(QdqModel)
        twin.model = onnx.ModelProto()
        twin.model.CopyFrom(self.model)
        for a in self.inits.values():
            a.flags.writeable = False
        twin.inits, twin._changed = dict(self.inits), set(self._changed)
        twin.equalized = {k: v.copy() for k, v in self.equalized.items()}
        twin._index()
        return twin

    def numbers(self) -> dict[tuple[int, int], tuple]:
        """Every constant a node reads, by (node position, input position): what the model computes with,
        whatever the initializers are named (an edit may give a tensor a new name)."""
        out = {}
        for k, node in enumerate(self.model.graph.node):
            for j, name in enumerate(node.input):
                if name in self.inits:
                    a = self.inits[name]
                    out[(k, j)] = (a.dtype.str, a.shape, a.tobytes())
        return out

    def differs_from(self, other: "QdqModel") -> bool:
        """Whether this model computes with other numbers (or nodes) than ``other``."""
        return len(self.model.graph.node) != len(other.model.graph.node) or self.numbers() != other.numbers()

    def channel_divisor(self, key: str, n: int) -> np.ndarray:
        """What the float counterpart of a layer's pre-activation or of an activation is divided by (1s if not
        equalized), length ``n``."""
        s = self.equalized.get(key)
        return np.ones(n) if s is None or s.size != n else s

    # ------------------------------------------------------------------ indexing
    def _index(self) -> None:
        g = self.model.graph
        self.producer, self.consumers = node_links(g.node)
        self.layers: list[Layer] = []
        self.skipped: dict[str, str] = {}  # compute node → why it is not an editable layer
        for n in g.node:
            if n.op_type in LAYER_OPS:
                layer = self._layer(n)
                if isinstance(layer, Layer):
                    self.layers.append(layer)
                else:
                    self.skipped[n.name or n.output[0]] = layer
        self.activations: dict[str, Activation] = {}
        self.group_of: dict[str, str] = {}  # int8 tensor name → group key (in graph order: an int8 input first)
        self._int8_input_groups()
        for n in g.node:
            if n.op_type == "QuantizeLinear" and n.input[0] not in self.inits and n.output[0] not in self.group_of:
                self._activation(n)
        affine = self.input_affine()
        inputs = {i.name for i in self.model.graph.input} | ({affine.output} if affine is not None else set())
        for a in self.activations.values():
            self._mark_interface(a, inputs)

    def _const_dq(self, name: str, dtype) -> object | None:
        p = self.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.inits and \
                self.inits[p.input[0]].dtype == dtype:
            return p
        return None

    def _layer(self, n) -> Layer | str:
        """The layer, or why this node is not one."""
        key = n.name or n.output[0]
        wdq = self._const_dq(n.input[1], np.int8) if len(n.input) > 1 else None
        xdq = self.producer.get(n.input[0])
        if wdq is None:
            return "its weight is not DequantizeLinear of an int8 initializer"
        if xdq is None or xdq.op_type != "DequantizeLinear" or xdq.input[0] in self.inits:
            return "its input is not a dequantized int8 activation"
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        bias_dq, bias_add, preact = None, None, n.output[0]
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2]:
            bias_dq = self._const_dq(n.input[2], np.int32)
            if bias_dq is None:
                raise ModelError(f"node {key!r} ({n.op_type}): its bias is not DequantizeLinear of an int32 "
                                 "initializer; tmlrepair edits QDQ models with int32 biases")
        if n.op_type == "MatMul":
            cs = self.consumers.get(n.output[0], [])
            if len(cs) == 1 and cs[0].op_type == "Add":
                other = [i for i in cs[0].input if i != n.output[0]]
                dq = self._const_dq(other[0], np.int32) if other else None
                if dq is not None:
                    bias_dq, bias_add, preact = dq, cs[0], cs[0].output[0]
        if n.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or
                                    attrs.get("transA", 0)):
            return "Gemm with alpha, beta or transA set"
        return Layer(key, n.op_type, n, xdq, wdq, bias_dq, bias_add, preact, group=int(attrs.get("group", 1)),
                     trans_b=bool(attrs.get("transB", 0)))

    def _activation(self, q) -> None:
        act = Activation(q.output[0])
        self.activations[act.key] = act
        todo = [q]
        while todo:
            node = todo.pop()
            act.q_nodes.append(node)
            self.group_of[node.output[0]] = act.key
            for c in self._int8_readers(node.output[0], act.key):
                act.dq_nodes.append(c)
                for follower in self._same_range_followers(c):
                    if follower.output[0] not in self.group_of:
                        todo.append(follower)

    def _int8_readers(self, tensor: str, key: str) -> list:
        """DequantizeLinear nodes reading an int8 tensor directly or through layout ops on the int8 values (``Q →
        Reshape → DQ``: tf2onnx, ``models.tflite_onnx``); those int8 tensors join group ``key``."""
        out, frontier = [], [tensor]
        while frontier:
            for c in self.consumers.get(frontier.pop(), []):
                if c.op_type == "DequantizeLinear":
                    out.append(c)
                elif c.op_type in SAME_RANGE_OPS and c.op_type not in ("MaxPool", "AveragePool"):
                    frontier.append(c.output[0])
                    self.group_of.setdefault(c.output[0], key)
        return out

    def _same_range_followers(self, dq) -> list:
        """Q nodes after ``dq → same-range op`` that requantize with exactly ``dq``'s parameters."""
        out = []
        for op in self.consumers.get(dq.output[0], []):
            if op.op_type not in SAME_RANGE_OPS:
                continue
            for q in self.consumers.get(op.output[0], []):
                if q.op_type == "QuantizeLinear" and self.params(q) == self.params(dq):
                    out.append(q)
        return out

    def _int8_input_groups(self) -> None:
        """An int8 graph input is quantized outside the model: its DQ readers form a fixed group."""
        for gi in self.model.graph.input:
            if gi.name in self.inits or gi.type.tensor_type.elem_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
                continue
            act = Activation(gi.name, model_input=True, int8_input=True)  # refitted, and the plan says so loudly
            act.dq_nodes.extend(self._int8_readers(gi.name, gi.name))
            self.activations[act.key] = act
            self.group_of[gi.name] = act.key

    def _mark_interface(self, act: Activation, inputs: set[str]) -> None:
        """``inputs``: the graph's inputs and the output of its input pre-shim, if it has one."""
        outputs = {o.name for o in self.model.graph.output}
        if act.interface:
            return
        if any(q.input[0] in inputs for q in act.q_nodes):  # float I/O: the model quantizes its own input
            act.model_input = True
        elif any(q.output[0] in outputs for q in act.q_nodes):  # an int8 output: the firmware reads these params
            act.interface = "is the model's output: shims and firmware read it with these parameters"

    def params(self, qdq) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor Q or DQ node."""
        s = self.inits[qdq.input[1]]
        zp = self.inits[qdq.input[2]] if len(qdq.input) > 2 and qdq.input[2] else np.zeros(1, np.int8)
        return float(s.reshape(-1)[0]), int(zp.reshape(-1)[0])

    def activation_params(self, key: str) -> tuple[float, int]:
        act = self.activations[key]
        return self.params(act.q_nodes[0] if act.q_nodes else act.dq_nodes[0])

    def input_activation(self, layer: Layer) -> str | None:
        """Group key of the quantized tensor a layer reads."""
        return self.group_of.get(layer.input_dq.input[0])

    def input_scale(self, layer: Layer) -> float:
        return self.params(layer.input_dq)[0]

    def weight_q(self, layer: Layer) -> np.ndarray:
        return self.inits[layer.weight_dq.input[0]]

    def weight_scale(self, layer: Layer) -> np.ndarray:
        """Per output channel (a per-tensor scale is repeated)."""
        s = self.inits[layer.weight_dq.input[1]].astype(np.float64).reshape(-1)
        return np.broadcast_to(s, (self.n_out(layer),)).copy() if s.size == 1 else s

    def weight_zero_point(self, layer: Layer) -> np.ndarray:
        d = layer.weight_dq
        return self.inits[d.input[2]].reshape(-1) if len(d.input) > 2 and d.input[2] else np.zeros(1, np.int8)

    def per_channel(self, layer: Layer) -> bool:
        return self.inits[layer.weight_dq.input[1]].size > 1

    def weights(self, layer: Layer) -> np.ndarray:
        """Dequantized weights, float64."""
        w = self.weight_q(layer).astype(np.float64)
        zp = self.weight_zero_point(layer).astype(np.float64)
        shape = [1] * w.ndim
        shape[layer.out_axis] = -1
        s = self.weight_scale(layer).reshape(shape)
        return (w - (zp.reshape(shape) if zp.size > 1 else zp[0])) * s

    def n_out(self, layer: Layer) -> int:
        return int(self.weight_q(layer).shape[layer.out_axis])

    def bias_lsb(self, layer: Layer) -> np.ndarray:
        """Real value of one bias unit per output channel: input scale · weight scale."""
        return self.input_scale(layer) * self.weight_scale(layer)

    def bias_int(self, layer: Layer) -> np.ndarray:
        if layer.bias_dq is None:
            return np.zeros(self.n_out(layer), np.int64)
        return np.broadcast_to(self.inits[layer.bias_dq.input[0]].astype(np.int64).reshape(-1),
                               (self.n_out(layer),)).copy()

    def bias(self, layer: Layer) -> np.ndarray:
        """Real bias per output channel (0 where the layer has none)."""
        return self.bias_int(layer) * self.bias_lsb(layer)

    # ------------------------------------------------------------------ writing numbers
    def _set(self, name: str, value: np.ndarray) -> None:
        self.inits[name] = value
        self._changed.add(name)

    def _own(self, node, slot: int, value: np.ndarray, suffix: str) -> None:
        """Point ``node.input[slot]`` at an initializer only it uses, holding ``value``."""
        old = node.input[slot]
        users = sum(1 for n in self.model.graph.node for i in n.input if i == old)
        if users > 1:
            new = f"{old}_{suffix}"
            k = 1
            while new in self.inits:
                k += 1
                new = f"{old}_{suffix}{k}"
            node.input[slot] = new
            old = new
        self._set(old, value)

    def set_bias_int(self, layer: Layer, q: np.ndarray) -> np.ndarray:
        """Write int32 biases (saturated); returns the mask of channels that saturated.

        A Conv or Gemm without a bias gets one (an int32 initializer behind a new DequantizeLinear with
        scale input_scale · weight_scale), so the graph keeps the same op types.
        """
        q = np.asarray(q, np.float64)  # float: a request beyond int64 must saturate, not wrap
        saturated = (q > INT32_MAX) | (q < INT32_MIN)
        q32 = np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)
        if layer.bias_dq is None:
            if layer.op == "MatMul":
                raise ModelError(f"layer {layer.name!r} is a MatMul without a bias Add: no bias to correct")
            self._add_bias(layer)
        old = self.inits[layer.bias_dq.input[0]]
        self._own(layer.bias_dq, 0, q32.reshape(old.shape) if old.size == q32.size else q32, "tmlr")
        self._sync_bias_scale(layer)
        return saturated

    def _add_bias(self, layer: Layer) -> None:
        base = f"{layer.name}_tmlr_bias"
        names = {k: f"{base}_{k}" for k in ("quantized", "scale", "zero_point", "out")}
        n = self.n_out(layer)
        self._set(names["quantized"], np.zeros(n, np.int32))
        self._set(names["scale"], self.bias_lsb(layer).astype(np.float32))
        self._set(names["zero_point"], np.zeros(n, np.int32))
        dq = helper.make_node("DequantizeLinear", [names["quantized"], names["scale"], names["zero_point"]],
                              [names["out"]], name=f"{base}_DequantizeLinear", axis=0)
        g = self.model.graph
        pos = list(g.node).index(layer.node)
        g.node.insert(pos, dq)
        while len(layer.node.input) < 3:
            layer.node.input.append("")
        layer.node.input[2] = names["out"]
        layer.bias_dq = g.node[pos]
        self.producer[names["out"]] = layer.bias_dq

    def _sync_bias_scale(self, layer: Layer) -> None:
        """Bias scale = input scale · weight scale, in the shape the bias DQ had (per channel or scalar)."""
        lsb = self.bias_lsb(layer).astype(np.float32)
        old = self.inits[layer.bias_dq.input[1]]
        value = lsb if old.size > 1 else np.asarray(lsb[0], np.float32).reshape(old.shape)
        if old.size == 1 and not np.allclose(lsb, lsb[0], rtol=0, atol=0):
            raise ModelError(f"layer {layer.name!r}: a per-tensor bias scale cannot hold per-channel weight scales")
        self._own(layer.bias_dq, 1, value, "tmlr")

    def set_weights(self, layer: Layer, w: np.ndarray, bias: np.ndarray, denominator: float) -> np.ndarray:
        """Quantize float weights with the layer's scheme, then its real bias in the new bias units.

        Scheme: symmetric (zero point 0), per channel if the model's weights are, scale = max|w| / denominator
        (ORT's symmetric int8 uses 127.5, TFLite 127; ``parts.weight_denominator`` reads which from the model).
        Returns the mask of channels whose bias saturated int32 in its new units.
        """
        if np.any(self.weight_zero_point(layer) != 0):
            raise ModelError(f"layer {layer.name!r}: asymmetric int8 weights are not re-quantized by tmlrepair")
        axes = tuple(i for i in range(w.ndim) if i != layer.out_axis)
        absmax = np.abs(w).max(axis=axes) if self.per_channel(layer) else np.array([np.abs(w).max()])
        old_scale = self.weight_scale(layer)[: absmax.size]
        # a dead channel (weights ~0) keeps its scale: its weights stay 0 and its bias keeps its units
        scale = np.where(absmax > 1e-12 * absmax.max(), absmax / denominator, old_scale)
        shape = [1] * w.ndim
        shape[layer.out_axis] = -1
        full = scale.reshape(shape) if scale.size > 1 else scale[0]
        q = np.clip(np.rint(w / full), -128, 127).astype(np.int8)
        self._own(layer.weight_dq, 0, q, "tmlr")
        old = self.inits[layer.weight_dq.input[1]]
        self._own(layer.weight_dq, 1, scale.astype(np.float32).reshape(old.shape), "tmlr")
        return self.set_bias_real(layer, bias)

    def set_bias_real(self, layer: Layer, bias: np.ndarray) -> np.ndarray:
        """Requantize a real bias in the layer's current bias units; returns the saturated mask."""
        if layer.bias_dq is None and not np.any(bias):
            return np.zeros(self.n_out(layer), bool)
        return self.set_bias_int(layer, np.rint(np.asarray(bias, np.float64) / self.bias_lsb(layer)))

    def set_activation(self, key: str, scale: float, zero_point: int) -> None:
        """New scale and zero point for one activation group, and the biases of the layers reading it."""
        act = self.activations[key]
        if act.interface:
            raise ModelError(f"activation {key!r} {act.interface}; it is not changed")
        readers = [lay for lay in self.layers if self.input_activation(lay) == key]
        biases = {lay.name: self.bias(lay) for lay in readers}
        for node in (*act.q_nodes, *act.dq_nodes):
            s_old = self.inits[node.input[1]]
            self._own(node, 1, np.asarray(scale, np.float32).reshape(s_old.shape), "tmlr")
            zp_old = self.inits[node.input[2]]
            self._own(node, 2, np.asarray(zero_point, zp_old.dtype).reshape(zp_old.shape), "tmlr")
        for lay in readers:
            self.set_bias_real(lay, biases[lay.name])

    def input_affine(self):
        """The model's input pre-shim (``models.graph.InputAffine``), or None."""
        names = [i.name for i in self.model.graph.input if i.name not in self.inits]
        return find_input_affine(self.model.graph.node, names[0], self.inits.get) if names else None

    def restructure(self, model: onnx.ModelProto) -> None:
        """Take ``model`` (this one with nodes added) and index it anew; what equalization did is kept."""
        self.__dict__.update({**QdqModel(model).__dict__, "equalized": self.equalized})

    # ------------------------------------------------------------------ output
    def to_model(self) -> onnx.ModelProto:
        """The edited model: initializers rewritten, unused ones dropped, nothing else touched."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        used = {i for n in m.graph.node for i in n.input}
        present = {i.name for i in m.graph.initializer}
        keep = [i for i in m.graph.initializer if i.name in used]
        for k, init in enumerate(keep):
            if init.name in self._changed:
                keep[k] = numpy_helper.from_array(self.inits[init.name], init.name)
        for name in sorted(self._changed - present):
            if name in used:
                keep.append(numpy_helper.from_array(self.inits[name], name))
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        return m

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)
