"""TensorMap: one explicit, validated pairing of int8 quantized tensors with float tensors.

Every quantized activation of the int8 model (the output of each activation
QuantizeLinear, and each integer graph input) is paired with the float-model tensor
that carries the same values, or listed as unmatched with the reason. Two strategies:

``name``
    For pairs written by ``onnxruntime.quantization.quantize_static``: the tensor a
    QuantizeLinear quantizes keeps its float name (ORT's QDQ quantizer drops a Relu
    after Conv/Gemm but gives the Conv the Relu's output name, so the names still line
    up with the *post*-activation float tensor); a renamed final output is recognised
    through the DequantizeLinear that restores the graph output name. A name pair also
    needs equal *lineage* (a digest of the compute ops and attributes all the way up
    from the inputs): two different networks from one exporter share names.
``structure``
    For independently converted pairs (tf2onnx from TFLite: int8 I/O, unrelated names).
    Both graphs are reduced to their compute nodes (Q/DQ, layout ops, elementwise
    activations and constant bias adds are transparent), then matched in topological
    order (BatchNormalization counts as folded into its Conv): an int8 node pairs with
    the one float node of the same canonical op
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

from dataclasses import dataclass, replace

import numpy as np

from ..errors import PairError
from .graph import (
    QDQ_OPS,
    GraphIndex,
    QuantParams,
)
from .pair import ModelPair
from .structure import (
    _is_activation,
    _is_passthrough,
    _lineage,
    _match_structure,
    _same_lineage,
    _source,
)
from .weights import weight_similarity


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
    weight_cosine: float | None = None  # float weights vs dequantized int8 weights of the producing layer
    weight_signs: float | None = None  # share of nonzero int8 weights with the float weight's sign

    @property
    def channel_axis(self) -> int | None:
        """Axis of channels/features in the batched tensor (ONNX layout: NC..., so 1)."""
        return 1 if len(self.shape) >= 1 else None


@dataclass(frozen=True)
class Unmatched:
    int8_name: str
    reason: str


#: Below this cosine between float and dequantized int8 weights, a layer was not quantized
#: from that float layer (genuine pairs measure >= 0.997: the bundled tasks and four MLPerf Tiny pairs).
WEIGHT_COSINE_MIN = 0.9
#: ... unless at least this share of the weights keep their sign: a layer equalized (rescaled per channel) after
#: quantization, as tmlrepair's own repaired models are (digits: cosine 0.90, signs 1.00; kws float vs int8: 0.5).
WEIGHT_SIGNS_MIN = 0.9


@dataclass
class TensorMap:
    pairs: list[TensorPair]
    unmatched: list[Unmatched]
    strategy: str

    @property
    def weight_mismatches(self) -> list[TensorPair]:
        return [p for p in self.pairs if p.weight_cosine is not None and p.weight_cosine < WEIGHT_COSINE_MIN
                and (p.weight_signs is None or p.weight_signs < WEIGHT_SIGNS_MIN)]

    @property
    def quantized_total(self) -> int:
        return len(self.pairs) + len(self.unmatched)

    @property
    def coverage(self) -> float:
        return len(self.pairs) / self.quantized_total if self.quantized_total else 0.0


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
    """Per-sample shapes of ``names``: from ONNX shape inference where it determines them, else from one run of
    the model on one sample (a session of its own: the cost this avoids for most models)."""
    known = model.index.per_sample_shapes
    shapes = {k: tuple(v.shape[1:]) for k, v in feed.items()}
    missing = [n for n in dict.fromkeys(names) if n not in feed and n not in known]
    if missing:
        outs = model.session(tuple(missing)).run(missing, {k: v[:1] for k, v in feed.items()})
        shapes.update({n: tuple(o.shape[1:]) for n, o in zip(missing, outs)})
    shapes.update({n: known[n] for n in names if n not in shapes})
    return shapes


def build_tensor_map(pair: ModelPair, sample_feed: dict[str, np.ndarray], strategy: str = "auto",
                     check_weights: bool = True) -> TensorMap:
    """Pair every quantized activation of ``pair.int8`` with a float tensor, or say why not.

    ``sample_feed`` is one float-domain batch (only its first sample is used) for the
    probe run that reads per-sample shapes. Raises ``PairError`` if fewer than half of
    the quantized tensors pair, or (with ``check_weights``) if most paired layers hold
    weights unlike the float layer's: the models are then not float and int8 versions
    of one network, and any table would be nonsense.
    """
    if strategy not in ("auto", "name", "structure"):
        raise ValueError(f"unknown pairing strategy {strategy!r}")
    fx, qx = pair.float.index, pair.int8.index
    if qx.is_qoperator:
        qops = sorted({n.op_type for n in qx.nodes if n.op_type.startswith(("QLinear", "ConvInteger", "MatMulInteger"))})
        return TensorMap([], [Unmatched(n.output[0], f"QOperator graph ({', '.join(qops)}): only output-level "
                                        "drift is measured for this format")
                              for n in qx.nodes if n.op_type.startswith("QLinear")], "none")
    quantized = _quantized_tensors(pair)
    if not quantized:
        raise PairError(f"INT8 model {pair.int8.path} has no per-tensor quantized activations to compare")
    # candidate float tensors for each quantized tensor, by name and by structure
    by_name, name_reason = _by_name(fx, qx, quantized) if strategy in ("auto", "name") else ({}, {})
    by_struct, struct_reason, source_of = (_by_structure(fx, qx, quantized, by_name)
                                           if strategy in ("auto", "structure") else ({}, {}, {}))
    # one probe run per model for per-sample shapes
    f_names = list(by_name.values()) + [t for chain in by_struct.values() for t, _, _ in chain]
    f_shapes = _probe_shapes(pair.float, sample_feed, f_names)
    q_shapes = _probe_shapes(pair.int8, pair.int8_feed(sample_feed), [qt.int8_name for qt in quantized])
    pairs, unmatched = [], []
    for qt in quantized:
        src, chain = source_of.get(qt.int8_name) or _source(qx, qt.quantized_input)
        shape = q_shapes[qt.int8_name]
        if qt.quant is None:
            found = Unmatched(qt.int8_name, "per-channel or non-constant activation quantization")
        elif qt.int8_name in by_name:
            found = _named_pair(qt, by_name[qt.int8_name], f_shapes, shape, qx, src)
        elif qt.int8_name in by_struct:
            found = _structural_pair(qt, by_struct[qt.int8_name], chain, f_shapes, shape, qx, src)
        else:
            found = Unmatched(qt.int8_name, struct_reason.get(qt.int8_name)
                              or name_reason.get(qt.int8_name, "no float tensor of that name"))
        (unmatched if isinstance(found, Unmatched) else pairs).append(found)
    sims = [_layer_similarity(fx, qx, p) for p in pairs]
    pairs = [replace(p, weight_cosine=s[0], weight_signs=s[1]) if s else p for p, s in zip(pairs, sims)]
    return _checked(TensorMap(pairs, unmatched, strategy), check_weights)


def _by_name(fx, qx, quantized) -> tuple[dict[str, str], dict[str, str]]:
    """int8 tensor → the float tensor of the same name (the quantizer kept the float names), and why a same-named
    tensor was refused (it comes from a different lineage)."""
    f_values = set(fx.input_names) | {o for n in fx.nodes for o in n.output}
    f_lin, q_lin = _lineage(fx), _lineage(qx)
    by_name, reasons = {}, {}
    for qt in quantized:
        for cand in (qt.quantized_input, *qt.dq_outputs):
            if cand in f_values:
                why = _same_lineage(fx, qx, f_lin, q_lin, cand, qt.quantized_input)
                if why:
                    reasons[qt.int8_name] = why
                else:
                    by_name[qt.int8_name] = cand
                break
    return by_name, reasons


def _by_structure(fx, qx, quantized, by_name) -> tuple[dict[str, list], dict[str, str], dict[str, tuple]]:
    """For each int8 tensor not paired by name: the chain of float tensors after the float node its producer pairs
    with (``_match_structure``), or why there is none; and each one's int8 source."""
    mapping, reasons = _match_structure(fx, qx)
    f_node_out = {("node", n.name or n.output[0]): n.output[0] for n in fx.nodes}
    by_struct, why_not, source_of = {}, {}, {}
    for qt in quantized:
        if qt.int8_name in by_name:
            continue
        src, chain = _source(qx, qt.quantized_input)
        source_of[qt.int8_name] = (src, chain)
        if src is None:
            why_not[qt.int8_name] = "its value does not come from a graph input or compute node"
        elif src not in mapping:
            why_not[qt.int8_name] = f"producer {src[1]!r}: {reasons.get(src, 'not paired')}"
        else:
            fsrc = mapping[src]
            start = fx.input_names[fsrc[1]] if fsrc[0] == "input" else f_node_out[fsrc]
            by_struct[qt.int8_name] = _float_chain(fx, start)
    return by_struct, why_not, source_of


def _origin(qx, src) -> tuple[str, str]:
    """(op, node) an int8 tensor comes from: ("input", "") for a graph input."""
    from_input = src is None or src[0] == "input"
    return ("input", "") if from_input else (_producer_op(qx, src), src[1])


def _named_pair(qt, fname: str, f_shapes, shape, qx, src) -> TensorPair | Unmatched:
    if f_shapes[fname] != shape:
        return Unmatched(qt.int8_name, f"float tensor {fname!r} has shape {list(f_shapes[fname])}, int8 has "
                                       f"{list(shape)}")
    return TensorPair(fname, qt.int8_name, *_origin(qx, src), qt.quant, shape, "name")


def _structural_pair(qt, f_chain, chain, f_shapes, shape, qx, src) -> TensorPair | Unmatched:
    """The float tensor along ``f_chain`` with the int8 tensor's shape and as many activations applied."""
    k = sum(_is_activation(n) for n in chain)
    cands = [(t, nv, last) for t, nv, last in f_chain if f_shapes[t] == shape]
    exact = [t for t, nv, _ in cands if nv == k]
    # A range that starts at 0.0 (zero point = qmin) cannot hold negatives: the quantizer
    # folded the ReLU that follows, so the float tensor to compare with is after it.
    implicit_relu = qt.quant.zero_point == qt.quant.qmin
    folded = [t for t, nv, last in cands if nv == k + 1 and last in ("Relu", "Clip")] if implicit_relu else []
    chosen = folded or exact
    op, node = _origin(qx, src)
    if not chosen:
        return Unmatched(qt.int8_name, f"no float tensor after {node!r} with shape {list(shape)} and the same "
                                       "activations")
    return TensorPair(chosen[-1], qt.int8_name, op, node, qt.quant, shape, "structure")


def _checked(tmap: TensorMap, check_weights: bool) -> TensorMap:
    """Refuse a map that says the two models are not versions of one network (PairError)."""
    weighted = [p for p in tmap.pairs if p.weight_cosine is not None]
    bad = tmap.weight_mismatches
    if check_weights and weighted and len(bad) > len(weighted) / 2:
        raise PairError(f"FLOAT and INT8 have the same layers but different weights ({len(bad)} of {len(weighted)} "
                        f"layers, e.g. {_clip(bad[0].node)!r}: weight cosine {bad[0].weight_cosine:.2f}, signs agree on {bad[0].weight_signs:.0%}): INT8 was not "
                        "quantized from this FLOAT; pass the float model it came from (or --ignore-weights to "
                        "measure anyway)")
    if tmap.coverage < 0.5:
        first = tmap.unmatched[0] if tmap.unmatched else None
        raise PairError(f"only {len(tmap.pairs)} of {tmap.quantized_total} quantized tensors of INT8 correspond to "
                        f"FLOAT (first: {first.int8_name!r}: {first.reason}): they are not float and int8 versions of "
                        "one network; check the files")
    return tmap


def _clip(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def _layer_similarity(fx: GraphIndex, qx: GraphIndex, p: TensorPair) -> tuple[float, float] | None:
    """The weight (cosine, sign agreement) of a pair's layers (None when the tensor is not a layer's output)."""
    if not p.node:
        return None
    fs, _ = _source(fx, p.float_name)
    if fs is None or fs[0] != "node":
        return None
    return weight_similarity(fx, qx, fs[1], p.node)


def _producer_op(ix: GraphIndex, src: tuple) -> str:
    return ix.by_key[src[1]].op_type


def check_one_network(pair: ModelPair, sample_x: np.ndarray) -> None:
    """Refuse (PairError) a FLOAT/INT8 pair that is not one network: the rule ``drift`` and ``fit`` apply,
    for commands that need no tensor map themselves (``calibrate``, ``validate``)."""
    build_tensor_map(pair, {pair.float.inputs[0].name: sample_x[:1]}, check_weights=True)
