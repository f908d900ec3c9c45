"""TensorMap: one explicit, validated pairing of int8 quantized tensors with float tensors.

Every quantized activation of the int8 model (the output of each activation
QuantizeLinear, and each integer graph input) is paired with the float-model tensor
that carries the same values, or listed as unmatched with the reason. Two strategies:

``name``
    For pairs written by ``onnxruntime.quantization.quantize_static``: the tensor a
    QuantizeLinear quantizes keeps its float name (ORT's QDQ quantizer drops a Relu
    after Conv/Gemm but gives the Conv the Relu's output name, so the names still line
    up with the *post*-activation float tensor); a renamed final output is recognised
    through the DequantizeLinear that restores the graph output name.
``structure``
    For independently converted pairs (tf2onnx from TFLite: int8 I/O, unrelated names).
    Both graphs are reduced to their compute nodes (Q/DQ, layout ops, elementwise
    activations and constant bias adds are transparent), then matched in topological
    order: an int8 node pairs with the one float node of the same canonical op
    (``Gemm`` = ``MatMul`` + bias), same attributes (group, kernel, output width) and
    already-paired inputs. Several candidates is *ambiguous* and nothing is paired. A
    quantized tensor then pairs with the float tensor downstream of the matched node
    with the same per-sample shape and the same activations applied; a missing Relu
    is accepted only where the int8 range itself clamps at zero (zero point = qmin),
    which is how quantizers fold it.

``auto`` (default) pairs by name first and by structure for what names leave.
Per-sample shapes come from one probe inference of each model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import PairError
from .graph import ACTIVATION_OPS, LAYOUT_OPS, QDQ_OPS, GraphIndex, QuantParams
from .pair import ModelPair

_AFFINE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
_COMMUTATIVE = frozenset({"Add", "Mul", "Sum", "Max", "Min"})


@dataclass(frozen=True)
class TensorPair:
    """A quantized int8 tensor and the float tensor it approximates."""

    float_name: str
    int8_name: str  # integer-valued tensor: a QuantizeLinear output or an int8 graph input
    op: str  # compute op that produced it in the int8 model ("input" for a graph input)
    node: str  # that node's name in the int8 model
    quant: QuantParams
    shape: tuple  # per sample
    how: str  # "name" or "structure"

    @property
    def channel_axis(self) -> int | None:
        """Axis of channels/features in the batched tensor (ONNX layout: NC..., so 1)."""
        return 1 if len(self.shape) >= 1 else None


@dataclass(frozen=True)
class Unmatched:
    int8_name: str
    reason: str


@dataclass
class TensorMap:
    pairs: list[TensorPair]
    unmatched: list[Unmatched]
    strategy: str
    output_pairs: list[tuple[str, str]] = field(default_factory=list)  # (float output, int8 output)

    @property
    def quantized_total(self) -> int:
        return len(self.pairs) + len(self.unmatched)

    @property
    def coverage(self) -> float:
        return len(self.pairs) / self.quantized_total if self.quantized_total else 0.0

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "quantized_total": self.quantized_total,
            "paired": len(self.pairs),
            "coverage": self.coverage,
            "pairs": [{**{k: v for k, v in asdict(p).items() if k != "quant"}, "shape": list(p.shape),
                       "quant": p.quant.to_dict()} for p in self.pairs],
            "unmatched": [asdict(u) for u in self.unmatched],
        }


@dataclass(frozen=True)
class _Quantized:
    """A quantized activation of the int8 model, before pairing."""

    int8_name: str
    quantized_input: str  # the float-valued tensor that was quantized (== int8_name for int8 inputs)
    quant: QuantParams | None
    dq_outputs: tuple[str, ...]


def _quantized_tensors(pair: ModelPair) -> list[_Quantized]:
    ix = pair.int8.index
    found = []
    for spec in pair.int8.inputs:
        if spec.quant is not None and spec.dtype in ("int8", "uint8", "int16", "uint16"):
            found.append(_Quantized(spec.name, spec.name, spec.quant, ()))
    for q in ix.activation_quantizers():
        dqs = tuple(c.output[0] for c in ix.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear")
        found.append(_Quantized(q.output[0], q.input[0], ix.quant_params(q), dqs))
    return found


def _is_passthrough(ix: GraphIndex, node) -> bool:
    if node.op_type in QDQ_OPS or node.op_type in LAYOUT_OPS or node.op_type in ACTIVATION_OPS:
        return True
    return node.op_type in _AFFINE_OPS and len(ix.activation_inputs(node)) == 1


def _is_activation(node) -> bool:
    """Activations are counted on both sides; a constant bias add is not (``Gemm`` holds its bias)."""
    return node.op_type in ACTIVATION_OPS


def _source(ix: GraphIndex, tensor: str) -> tuple[object, list]:
    """Walk back through transparent nodes to the compute node or graph input; return it and the ops passed."""
    chain = []
    while True:
        if tensor in ix.input_names:
            return ("input", ix.input_names.index(tensor)), chain
        node = ix.producer.get(tensor)
        if node is None:
            return None, chain
        if not _is_passthrough(ix, node):
            return ("node", node.name or node.output[0]), chain
        if node.op_type not in QDQ_OPS:
            chain.append(node)
        acts = ix.activation_inputs(node)
        if not acts:
            return None, chain
        tensor = acts[0]


def _signature(ix: GraphIndex, node) -> tuple:
    """Canonical op identity: Gemm and MatMul-with-constant are both Linear(out_features)."""
    op = node.op_type
    attrs = {a.name: a for a in node.attribute}

    def ints(name):
        return tuple(attrs[name].ints) if name in attrs else None

    if op == "Conv":
        w = ix.constant_value(node.input[1]) if len(node.input) > 1 else None
        group = attrs["group"].i if "group" in attrs else 1
        return ("Conv", group, None if w is None else tuple(w.shape))
    if op == "Gemm" or (op == "MatMul" and ix.is_constant(node.input[1])):
        w = ix.constant_value(node.input[1])
        if w is None:
            return ("Linear", None)
        trans_b = op == "Gemm" and "transB" in attrs and attrs["transB"].i == 1
        return ("Linear", int(w.shape[0] if trans_b else w.shape[-1]))
    if op in ("AveragePool", "MaxPool"):
        return (op, ints("kernel_shape"), ints("strides"))
    return (op,)


def _compute_nodes(ix: GraphIndex) -> list:
    return [n for n in ix.nodes if not _is_passthrough(ix, n) and n.op_type != "Constant"]


def _match_structure(fx: GraphIndex, qx: GraphIndex) -> tuple[dict, dict]:
    """Pair compute nodes of the int8 graph with those of the float graph; returns (mapping, reasons)."""
    mapping: dict = {("input", k): ("input", k) for k in range(len(qx.input_names))}
    reasons: dict = {}
    f_nodes = []
    for n in _compute_nodes(fx):
        srcs = tuple(_source(fx, t)[0] for t in fx.activation_inputs(n))
        f_nodes.append((("node", n.name or n.output[0]), _signature(fx, n), srcs, n.op_type in _COMMUTATIVE))
    used = set()
    for n in _compute_nodes(qx):
        key = ("node", n.name or n.output[0])
        srcs = [_source(qx, t)[0] for t in qx.activation_inputs(n)]
        if any(s not in mapping for s in srcs):
            reasons[key] = "an input of this node has no float counterpart"
            continue
        want = tuple(mapping[s] for s in srcs)
        sig = _signature(qx, n)
        cands = [fk for fk, fsig, fsrcs, comm in f_nodes if fk not in used and fsig == sig and
                 (sorted(map(str, fsrcs)) == sorted(map(str, want)) if comm else fsrcs == want)]
        if len(cands) == 1:
            mapping[key] = cands[0]
            used.add(cands[0])
        else:
            reasons[key] = (f"{len(cands)} float nodes fit {sig[0]} here: ambiguous, not paired" if cands
                            else f"no float node with op {sig} and the same inputs")
    return mapping, reasons


def _float_chain(fx: GraphIndex, start: str) -> list[tuple[str, int, str | None]]:
    """Tensors from ``start`` down a single-consumer chain of transparent nodes: (name, activations, last op)."""
    out = [(start, 0, None)]
    cur, n_value = start, 0
    while True:
        cs = fx.consumers.get(cur, [])
        if len(cs) != 1 or not _is_passthrough(fx, cs[0]) or cs[0].op_type in QDQ_OPS:
            return out
        node = cs[0]
        if _is_activation(node):
            n_value += 1
        cur = node.output[0]
        out.append((cur, n_value, node.op_type))


def _probe_shapes(model, feed: dict, names: list[str]) -> dict[str, tuple]:
    names = [n for n in dict.fromkeys(names) if n not in feed]
    sess = model.session(tuple(names))
    outs = sess.run(names, {k: v[:1] for k, v in feed.items()})
    shapes = {n: tuple(o.shape[1:]) for n, o in zip(names, outs)}
    shapes.update({k: tuple(v.shape[1:]) for k, v in feed.items()})
    return shapes


def build_tensor_map(pair: ModelPair, sample_feed: dict[str, np.ndarray], strategy: str = "auto") -> TensorMap:
    """Pair every quantized activation of ``pair.int8`` with a float tensor, or say why not.

    ``sample_feed`` is one float-domain batch (only its first sample is used) for the
    probe run that reads per-sample shapes. Raises ``PairError`` if the outputs cannot
    be paired or fewer than half of the quantized tensors pair: the models are then not
    float and int8 versions of one network, and any table would be nonsense.
    """
    if strategy not in ("auto", "name", "structure"):
        raise ValueError(f"unknown pairing strategy {strategy!r}")
    fx, qx = pair.float.index, pair.int8.index
    output_pairs = [(f.name, q.name) for f, q in zip(pair.float.outputs, pair.int8.outputs)]
    if qx.is_qoperator:
        qops = sorted({n.op_type for n in qx.nodes if n.op_type.startswith(("QLinear", "ConvInteger", "MatMulInteger"))})
        return TensorMap([], [Unmatched(n.output[0], f"QOperator graph ({', '.join(qops)}): only output-level "
                                        "drift is measured for this format")
                              for n in qx.nodes if n.op_type.startswith("QLinear")], "none", output_pairs)
    quantized = _quantized_tensors(pair)
    if not quantized:
        raise PairError(f"INT8 model {pair.int8.path} has no per-tensor quantized activations to compare")
    f_values = set(fx.input_names) | {o for n in fx.nodes for o in n.output}
    q_feed = pair.int8_feed(sample_feed)

    # candidate float tensors for each quantized tensor, by name and by structure
    by_name: dict[str, str] = {}
    if strategy in ("auto", "name"):
        for qt in quantized:
            for cand in (qt.quantized_input, *qt.dq_outputs):
                if cand in f_values:
                    by_name[qt.int8_name] = cand
                    break
    by_struct: dict[str, list] = {}
    struct_reason: dict[str, str] = {}
    source_of: dict[str, tuple] = {}
    if strategy in ("auto", "structure"):
        mapping, reasons = _match_structure(fx, qx)
        f_node_out = {("node", n.name or n.output[0]): n.output[0] for n in fx.nodes}
        for qt in quantized:
            if qt.int8_name in by_name:
                continue
            src, chain = _source(qx, qt.quantized_input)
            source_of[qt.int8_name] = (src, chain)
            if src is None:
                struct_reason[qt.int8_name] = "its value does not come from a graph input or compute node"
            elif src not in mapping:
                struct_reason[qt.int8_name] = f"producer {src[1]!r}: {reasons.get(src, 'not paired')}"
            else:
                fsrc = mapping[src]
                start = fx.input_names[fsrc[1]] if fsrc[0] == "input" else f_node_out[fsrc]
                by_struct[qt.int8_name] = _float_chain(fx, start)

    # one probe run per model for per-sample shapes
    f_names = list(by_name.values()) + [t for chain in by_struct.values() for t, _, _ in chain]
    q_names = [qt.int8_name for qt in quantized]
    f_shapes = _probe_shapes(pair.float, sample_feed, f_names)
    q_shapes = _probe_shapes(pair.int8, q_feed, q_names)

    pairs, unmatched = [], []
    for qt in quantized:
        shape = q_shapes[qt.int8_name]
        src, chain = source_of.get(qt.int8_name) or _source(qx, qt.quantized_input)
        from_input = src is None or src[0] == "input"
        op = "input" if from_input else _producer_op(qx, src)
        node = "" if from_input else src[1]
        if qt.quant is None:
            unmatched.append(Unmatched(qt.int8_name, "per-channel or non-constant activation quantization"))
            continue
        if qt.int8_name in by_name:
            fname = by_name[qt.int8_name]
            if f_shapes[fname] != shape:
                unmatched.append(Unmatched(qt.int8_name, f"float tensor {fname!r} has shape {list(f_shapes[fname])}, "
                                                         f"int8 has {list(shape)}"))
            else:
                pairs.append(TensorPair(fname, qt.int8_name, op, node, qt.quant, shape, "name"))
            continue
        if qt.int8_name not in by_struct:
            unmatched.append(Unmatched(qt.int8_name, struct_reason.get(qt.int8_name, "no float tensor of that name")))
            continue
        k = sum(_is_activation(n) for n in chain)
        cands = [(t, nv, last) for t, nv, last in by_struct[qt.int8_name] if f_shapes[t] == shape]
        exact = [t for t, nv, _ in cands if nv == k]
        implicit_relu = qt.quant.zero_point == qt.quant.qmin
        folded = [t for t, nv, last in cands if nv == k + 1 and last in ("Relu", "Clip")] if implicit_relu else []
        chosen = exact or folded
        if chosen:
            pairs.append(TensorPair(chosen[-1], qt.int8_name, op, node, qt.quant, shape, "structure"))
        else:
            unmatched.append(Unmatched(qt.int8_name, f"no float tensor after {node!r} with shape {list(shape)} "
                                                     f"and the same activations"))
    tmap = TensorMap(pairs, unmatched, strategy, output_pairs)
    if tmap.coverage < 0.5:
        first = unmatched[0] if unmatched else None
        raise PairError(f"only {len(pairs)} of {tmap.quantized_total} quantized tensors of INT8 correspond to FLOAT "
                        f"(first: {first.int8_name!r}: {first.reason}): they are not float and int8 versions of "
                        "one network; check the files")
    return tmap


def _producer_op(ix: GraphIndex, src: tuple) -> str:
    for n in ix.nodes:
        if (n.name or n.output[0]) == src[1]:
            return n.op_type
    return "?"
