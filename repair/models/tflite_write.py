"""Write the numbers of an edited int8 graph back into a copy of the .tflite it was read from.

The in-model repairs edit the ONNX graph of a .tflite (``tflite_onnx``); this module carries their numbers
into the flatbuffer: int8 weights and their per-channel scales, int32 biases (and their scales s_x·s_w), the
scale and zero point of activations, a SOFTMAX's ``beta`` — same operators, same tensors. Where every new
value has the size of the old one the bytes are patched in place (the rest of the file, metadata included,
is untouched); otherwise (a bias added to a layer that had none, a per-tensor scale that became per-channel,
a beta the file left at its default) the model is re-serialized with the schema's object API. The original
bytes are never modified.

The graph's node names (``op{k}``, ``t{i}/q``) say which operator or tensor a number belongs to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from .graph import node_links
from .tflite_file import INT32, op_name, read_tflite, schema, tensor_data


@dataclass
class TfliteEdits:
    """What changes, by flatbuffer index."""

    data: dict[int, np.ndarray] = field(default_factory=dict)  # tensor → new constant values (its type, its shape)
    quant: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tensor → (scales, zero points)
    new_bias: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # operator → (int32, scales)
    beta: dict[int, float] = field(default_factory=dict)  # SOFTMAX operator → beta

    def __bool__(self) -> bool:
        return bool(self.data or self.quant or self.new_bias or self.beta)


def _to_file_layout(op: str, w: np.ndarray) -> np.ndarray:
    if op == "CONV_2D":
        return np.transpose(w, (0, 2, 3, 1))  # (O, I, KH, KW) → [O, KH, KW, I]
    if op == "DEPTHWISE_CONV_2D":
        return np.transpose(w, (1, 2, 3, 0))  # (C·M, 1, KH, KW) → [1, KH, KW, C·M]
    return w


def find_edits(model_t, edited: onnx.ModelProto) -> TfliteEdits:
    """Compare the numbers of ``edited`` (the ONNX graph of ``model_t``, edited) with the file's."""
    return _EditFinder(model_t, edited).find()


class _EditFinder:
    """What differs between a .tflite file and its edited ONNX graph: weights and biases of the compute
    operators, Softmax betas, tensor quantizations (activations, the int8 input, and the tensors that must keep
    their input's)."""

    def __init__(self, model_t, edited: onnx.ModelProto):
        self.model_t, self.g = model_t, model_t.subgraphs[0]
        self.by_name = {n.name: n for n in edited.graph.node}
        self.producer = node_links(edited.graph.node)[0]
        self.inits = {i.name: numpy_helper.to_array(i) for i in edited.graph.initializer}
        self.edited, self.edits = edited, TfliteEdits()

    def find(self) -> TfliteEdits:
        g, inits = self.g, self.inits
        for k, op in enumerate(g.operators):
            name, node = op_name(self.model_t, op), self.by_name.get(f"op{k}")
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                self._layer(k, op, name, node)
            elif name == "SOFTMAX":
                self._softmax(k, op, node)
        for node in self.edited.graph.node:
            if node.op_type == "QuantizeLinear" and node.name.startswith("t") and node.name.endswith("/q"):
                self._set_quant(int(node.name[1:-2]), inits[node.input[1]], inits[node.input[2]])
        i0 = int(g.inputs[0])
        dq = _input_dequantize(self.edited)
        if g.tensors[i0].quantization is not None and dq is not None:  # an int8 input's quantization, refitted
            self._set_quant(i0, inits[dq.input[1]], inits[dq.input[2]])
        for op in g.operators:  # RESHAPE, PAD and pools keep their input's quantization (TFLM requires it of pools)
            if op_name(self.model_t, op) in ("RESHAPE", "PAD", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
                i, o = int(op.inputs[0]), int(op.outputs[0])
                if g.tensors[i].quantization is not None and g.tensors[o].quantization is not None:
                    self._set_quant(o, *self._quant_of(i))
        return self.edits

    def _quant_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self.edits.quant:
            return self.edits.quant[i]
        q = self.g.tensors[i].quantization
        return np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64)

    def _set_quant(self, i: int, scale: np.ndarray, zp: np.ndarray) -> None:
        old_s, old_z = self._quant_of(i)
        scale, zp = np.asarray(scale, np.float32).reshape(-1), np.asarray(zp, np.int64).reshape(-1)
        if old_s.size > 1 and scale.size == 1:  # keep the file's per-channel form
            scale, zp = np.repeat(scale, old_s.size), np.repeat(zp, old_s.size)
        if old_s.size == 1 and scale.size > 1 and np.all(scale == scale[0]) and np.all(zp == zp[0]):
            scale, zp = scale[:1], zp[:1]
        if old_s.shape != scale.shape or old_z.shape != zp.shape or np.any(old_s != scale) or np.any(old_z != zp):
            self.edits.quant[i] = (scale, zp)

    def _dq_numbers(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dq = self.producer[name]
        zp = self.inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else np.zeros(1, np.int64)
        return self.inits[dq.input[0]], self.inits[dq.input[1]].reshape(-1), zp.reshape(-1)

    def _layer(self, k: int, op, name: str, node) -> None:
        """A compute operator's weights and bias (a bias the edit added goes to ``new_bias``)."""
        model_t, g, edits = self.model_t, self.g, self.edits
        wi = int(op.inputs[1])
        q, s, _ = self._dq_numbers(node.input[1])
        w = _to_file_layout(name, q).astype(np.int8)
        if w.tobytes() != tensor_data(model_t, g.tensors[wi]).tobytes():
            edits.data[wi] = w
        self._set_quant(wi, s, np.zeros(s.size, np.int64))
        if len(node.input) > 2 and node.input[2]:
            b, bs, _ = self._dq_numbers(node.input[2])
            b = b.reshape(-1).astype(np.int32)
            bi = int(op.inputs[2]) if len(op.inputs) > 2 else -1
            if bi < 0:
                edits.new_bias[k] = (b, bs.astype(np.float32))
            else:
                if b.tobytes() != tensor_data(model_t, g.tensors[bi]).tobytes():
                    edits.data[bi] = b
                self._set_quant(bi, bs, np.zeros(bs.size, np.int64))

    def _softmax(self, k: int, op, node) -> None:
        """A Softmax's beta (a folded temperature); its input must be dequantized with the tensor's own scale."""
        feed = self.producer.get(node.input[0])
        beta = 1.0
        if feed is not None and feed.op_type == "Mul":
            beta = float(self.inits[feed.input[1]].reshape(-1)[0])
        elif feed is not None and feed.op_type == "DequantizeLinear":
            i = int(op.inputs[0])
            q_node = self.by_name.get(f"t{i}/q")
            s_dq = float(self.inits[feed.input[1]].reshape(-1)[0])
            s_t = (float(self.inits[q_node.input[1]].reshape(-1)[0]) if q_node is not None
                   else float(self._quant_of(i)[0][0]))
            if s_dq != s_t:
                raise ModelError(f"operator {k} (SOFTMAX): its input is dequantized with scale {s_dq:.9g}, not "
                                 f"the tensor's {s_t:.9g}; a .tflite carries a temperature as beta only")
        old = float(op.builtinOptions.beta) if op.builtinOptions is not None else 1.0
        if np.float32(beta) != np.float32(old):
            self.edits.beta[k] = float(np.float32(beta))


def _input_dequantize(edited: onnx.ModelProto):
    """The first DequantizeLinear reading the int8 graph input (through the layout ops in front of it), or None."""
    names, g = {edited.graph.input[0].name}, edited.graph
    for node in g.node:
        if node.input and node.input[0] in names:
            if node.op_type == "DequantizeLinear":
                return node
            if node.op_type in ("Transpose", "Reshape"):
                names.add(node.output[0])
    return None


def repaired_tflite(original: bytes, edited: onnx.ModelProto) -> bytes:
    """The .tflite ``original`` with the numbers of ``edited`` (its ONNX graph after the in-model repairs)."""
    model_t = read_tflite(original)
    edits = find_edits(model_t, edited)
    if not edits:
        return bytes(original)
    patched = _patch_in_place(original, model_t, edits)
    return patched if patched is not None else _repack(model_t, edits)


def _patch_in_place(original: bytes, model_t, edits: TfliteEdits) -> bytes | None:
    """The edited bytes when every change fits the space the old value had (None otherwise)."""
    if edits.new_bias:
        return None
    g = model_t.subgraphs[0]
    users: dict[int, int] = {}
    for t in g.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    if any(users[g.tensors[i].buffer] > 1 for i in edits.data):  # a buffer shared by two tensors
        return None
    S = schema()
    buf = bytearray(original)
    root = S.Model.GetRootAs(buf, 0)
    sg = root.Subgraphs(0)
    for i, values in edits.data.items():
        view = root.Buffers(g.tensors[i].buffer).DataAsNumpy()
        raw = np.frombuffer(values.tobytes(), np.uint8)
        if isinstance(view, int) or view.size != raw.size:
            return None
        view[:] = raw
    for i, (scale, zp) in edits.quant.items():
        q = sg.Tensors(i).Quantization()
        s_view, z_view = q.ScaleAsNumpy(), q.ZeroPointAsNumpy()
        if isinstance(s_view, int) or isinstance(z_view, int) or s_view.size != scale.size or z_view.size != zp.size:
            return None
        s_view[:] = scale
        z_view[:] = zp
    for k, beta in edits.beta.items():
        table = sg.Operators(k).BuiltinOptions()
        if table is None:
            return None
        offset = table.Offset(4)  # SoftmaxOptions.beta
        if offset == 0:  # left at the schema default: no bytes to patch
            return None
        struct.pack_into("<f", buf, table.Pos + offset, beta)
    return bytes(buf)


def _repack(model_t, edits: TfliteEdits) -> bytes:
    """Re-serialize with the object API: new buffers for changed data, a new int32 tensor for an added bias."""
    import flatbuffers

    S = schema()
    g = model_t.subgraphs[0]

    def new_buffer(values: np.ndarray) -> int:
        b = S.BufferT()
        b.data = np.frombuffer(values.tobytes(), np.uint8).copy()
        model_t.buffers.append(b)
        return len(model_t.buffers) - 1

    def quantization(scale: np.ndarray, zp: np.ndarray, axis: int):
        q = S.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(v) for v in scale], [int(v) for v in zp], axis
        return q

    for i, values in edits.data.items():
        g.tensors[i].buffer = new_buffer(values)
    for i, (scale, zp) in edits.quant.items():
        t = g.tensors[i]
        axis = t.quantization.quantizedDimension if t.quantization is not None else 0
        t.quantization = quantization(scale, zp, axis)
    for k, (values, scale) in edits.new_bias.items():
        op = g.operators[k]
        t = S.TensorT()
        t.shape, t.type, t.buffer = [len(values)], INT32, new_buffer(values)
        t.name = f"tmlrepair/op{k}/bias".encode()
        t.quantization = quantization(scale, np.zeros(len(scale), np.int64), 0)
        g.tensors.append(t)
        inputs = list(op.inputs)
        inputs = inputs[:2] + [len(g.tensors) - 1] + inputs[3:]
        op.inputs = inputs
    for k, beta in edits.beta.items():
        op = g.operators[k]
        if op.builtinOptions is None:
            op.builtinOptions, op.builtinOptionsType = S.SoftmaxOptionsT(), S.BuiltinOptions.SoftmaxOptions
        op.builtinOptions.beta = beta
    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
