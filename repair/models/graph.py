"""A read-only index over an ONNX graph: producers, consumers, constants, quantization.

Graph structure is read here and nowhere else. Everything the pairing
and the measurement need from a graph is asked here, so the rest of the package
deals in tensor names and numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Ops that only move or reshape data: values are unchanged, only the layout.
LAYOUT_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast"})
#: Per-channel affine ops a converter may fold into the preceding Conv/Gemm.
FOLDABLE_OPS = frozenset({"BatchNormalization"})
#: Elementwise activations that may be folded into a quantization range by a quantizer.
ACTIVATION_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"})
#: Quantize/dequantize nodes: transparent for structure, they carry the quantization.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: Ops of QOperator-format models; the graph then has no per-layer float view.
QOPERATOR_PREFIX = ("QLinear", "ConvInteger", "MatMulInteger", "DynamicQuantize")

INT_DTYPES = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: real = scale · (q − zero_point), q in [qmin, qmax]."""

    scale: float
    zero_point: int
    dtype: str  # "int8", "uint8", "int16", "uint16"
    #: ties: "half_even" (ONNX QuantizeLinear) or "half_away" (TFLite's QUANTIZE and firmware's round(), TfLiteRound)
    rounding: str = "half_even"

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def quantize(self, x: np.ndarray, codes: bool = False) -> np.ndarray:
        """q = clamp(round(x / scale) + zp), x / scale in float32, ties to even as ONNX QuantizeLinear defines it,
        or away from zero as TFLite's QUANTIZE (``TfLiteRound``) for a .tflite model; with ``codes``, the same
        integers left in the float32 array (what the integer program computes in: no int8 copy to convert back)."""
        v = np.asarray(x, np.float32) / np.float32(self.scale)
        if self.rounding == "half_even":
            np.rint(v, out=v)  # in place: one buffer, not four (input quantization is in every program run)
        else:
            v = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
        v += np.float32(self.zero_point)
        np.clip(v, self.qmin, self.qmax, out=v)
        return v if codes else v.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype,
                **({"rounding": self.rounding} if self.rounding != "half_even" else {})}


@dataclass(frozen=True)
class InputAffine:
    """An input pre-shim in a graph: its nodes, its output (what the input QuantizeLinear reads), x·a + b."""

    nodes: tuple
    output: str
    a: np.ndarray
    b: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) * self.a + self.b


def find_input_affine(nodes, name: str, constant) -> InputAffine | None:
    """The per-feature affine x·a + b (``Mul`` then ``Add`` by constants, either may be absent) between a float
    graph input ``name`` and its QuantizeLinear — an input pre-shim (``repairs.in_model.input_scaling``) — or None.
    ``constant(name)``: a constant's value, None for a computed tensor."""
    found, a, b, cur = [], np.float32(1), np.float32(0), name
    for op in ("Mul", "Add"):
        cs = [n for n in nodes if cur in n.input]
        value = constant(cs[0].input[1]) if len(cs) == 1 and cs[0].op_type == op and cs[0].input[0] == cur else None
        if value is not None:
            a, b = (np.asarray(value, np.float32), b) if op == "Mul" else (a, np.asarray(value, np.float32))
            found.append(cs[0])
            cur = cs[0].output[0]
    return InputAffine(tuple(found), cur, a, b) if found else None


def node_links(nodes) -> tuple[dict[str, object], dict[str, list]]:
    """tensor → the node producing it, and tensor → the nodes reading it (in graph order): the one place graph
    links are built (``GraphIndex``, and ``QdqModel`` for the graph it edits)."""
    producer: dict[str, object] = {}
    consumers: dict[str, list] = {}
    for n in nodes:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    return producer, consumers


def ancestors(nodes, outputs: list[str], within: set[int] | None = None) -> set[int]:
    """Positions of the ``nodes`` (in topological order) that ``outputs`` depend on; with ``within``, only
    through those positions (a tensor produced elsewhere is taken as given)."""
    wanted, needed = set(outputs), set()
    for k in range(len(nodes) - 1, -1, -1):
        if (within is None or k in within) and any(o in wanted for o in nodes[k].output):
            needed.add(k)
            wanted.update(i for i in nodes[k].input if i)
    return needed


class GraphIndex:
    """Producers, consumers, constants and per-sample shapes of one ONNX model's graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute:
                a = n.attribute[0]
                if a.name == "value":
                    self.constants[n.output[0]] = numpy_helper.to_array(a.t)
        self.by_key = {(n.name or n.output[0]): n for n in self.nodes}  # node name, or first output if unnamed
        self.producer, self.consumers = node_links(self.nodes)
        self.input_names = [i.name for i in self.graph.input if i.name not in self.constants]
        self.output_names = [o.name for o in self.graph.output]

    # ------------------------------------------------------------------ basic facts
    @cached_property
    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return dict(sorted(counts.items()))

    @cached_property
    def is_qoperator(self) -> bool:
        return any(n.op_type.startswith(QOPERATOR_PREFIX) for n in self.nodes)

    @cached_property
    def has_qdq(self) -> bool:
        return any(n.op_type in QDQ_OPS for n in self.nodes)

    def elem_type(self, name: str) -> int:
        for vi in (*self.graph.input, *self.graph.output, *self.graph.value_info):
            if vi.name == name:
                return vi.type.tensor_type.elem_type
        return 0

    @cached_property
    def per_sample_shapes(self) -> dict[str, tuple]:
        """Per-sample shapes (the batch dimension dropped) that ONNX shape inference fully determines, by tensor
        name; a tensor whose shape inference leaves open (or fails on) is not listed."""
        from onnx import shape_inference

        try:
            inferred = shape_inference.infer_shapes(self.model)
        except Exception:  # noqa: BLE001  (an unusual model: the caller measures shapes by running it instead)
            return {}
        shapes = {}
        for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape") and len(t.shape.dim) >= 1 and all(d.HasField("dim_value") for d in t.shape.dim[1:]):
                shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim[1:])
        return shapes

    def io_shape(self, name: str) -> list:
        """Declared shape of a graph input or output; symbolic dims as strings."""
        for vi in (*self.graph.input, *self.graph.output):
            if vi.name == name:
                return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                        for d in vi.type.tensor_type.shape.dim]
        raise KeyError(name)

    def is_constant(self, name: str) -> bool:
        """True for initializers, Constant outputs and DequantizeLinear of a constant (QDQ weights)."""
        if name in self.constants:
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type in ("DequantizeLinear", "Cast", "Identity") and self.is_constant(p.input[0])

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor, dequantized if it is a QDQ weight."""
        if name in self.constants:
            return self.constants[name]
        p = self.producer.get(name)
        if p is None or not self.is_constant(name):
            return None
        if p.op_type == "DequantizeLinear":
            q = self.constant_value(p.input[0]).astype(np.float64)
            s = self.constant_value(p.input[1]).astype(np.float64)
            zp = self.constant_value(p.input[2]).astype(np.float64) if len(p.input) > 2 and p.input[2] else 0.0
            axis = next((a.i for a in p.attribute if a.name == "axis"), 1)
            if np.ndim(s) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s, zp = s.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
            return (q - zp) * s
        return self.constant_value(p.input[0])

    def activation_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and not self.is_constant(i)]

    # ------------------------------------------------------------------ quantization
    def quant_params(self, node) -> QuantParams | None:
        """Scale, zero point and integer type of a per-tensor Q or DQ node; None if per-channel."""
        scale = self.constants.get(node.input[1])
        if scale is None or scale.size != 1:
            return None
        if len(node.input) > 2 and node.input[2]:
            zp = self.constants.get(node.input[2])
            if zp is None:
                return None
            dtype = str(zp.dtype)
            zp_val = int(zp.reshape(-1)[0])
        else:
            dtype, zp_val = "uint8", 0
        return QuantParams(float(scale.reshape(-1)[0]), zp_val, dtype)

    def activation_quantizers(self) -> list:
        """QuantizeLinear nodes that quantize activations (not weights or biases)."""
        return [n for n in self.nodes if n.op_type == "QuantizeLinear" and not self.is_constant(n.input[0])]

    def follow_layout(self, name: str, forward: bool):
        """Walk from ``name`` through layout-only nodes; yields each node passed."""
        while True:
            if forward:
                cs = self.consumers.get(name, [])
                if len(cs) != 1 or cs[0].op_type not in LAYOUT_OPS:
                    return
                node = cs[0]
                name = node.output[0]
            else:
                node = self.producer.get(name)
                if node is None or node.op_type not in LAYOUT_OPS:
                    return
                name = node.input[0]
            yield node

    def input_affine(self, name: str) -> InputAffine | None:
        """The input pre-shim after graph input ``name`` (``find_input_affine``), or None."""
        return find_input_affine(self.graph.node, name, self.constant_value)

    def input_quant(self, name: str) -> QuantParams | None:
        """Quantization of a graph input: an int8 input's first DQ, or a float input's first Q (after its
        pre-shim, if it has one)."""
        cur = name
        affine = self.input_affine(name)
        if affine is not None:
            cur = affine.output
        for node in self.follow_layout(cur, forward=True):
            cur = node.output[0]
        for c in self.consumers.get(cur, []):
            if c.op_type in QDQ_OPS and c.input[0] == cur:
                return self.quant_params(c)
        return None

    def output_quant(self, name: str) -> QuantParams | None:
        """Quantization of a graph output: the last Q before it (through a trailing DQ or layout ops)."""
        cur = name
        for node in self.follow_layout(name, forward=False):
            cur = node.input[0]
        p = self.producer.get(cur)
        if p is not None and p.op_type == "DequantizeLinear":
            return self.quant_params(p)
        if p is not None and p.op_type == "QuantizeLinear":
            return self.quant_params(p)
        return None
