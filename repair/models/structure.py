"""Pairing float and int8 graphs by structure: the sequence of compute ops between Q/DQ nodes, with their
attributes and what feeds them, whatever the tensors are called (tf2onnx pairs share no names)."""

from __future__ import annotations

from .graph import ACTIVATION_OPS, FOLDABLE_OPS, LAYOUT_OPS, QDQ_OPS, GraphIndex
from .pair import ModelPair

_AFFINE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
_COMMUTATIVE = frozenset({"Add", "Mul", "Sum", "Max", "Min"})


def _is_passthrough(ix: GraphIndex, node) -> bool:
    if node.op_type in QDQ_OPS or node.op_type in LAYOUT_OPS or node.op_type in ACTIVATION_OPS \
            or node.op_type in FOLDABLE_OPS:
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


def match_compute_nodes(pair: ModelPair) -> tuple[dict[str, str], dict[str, str]]:
    """int8 compute node → the float compute node it was quantized from (by structure), and why others are not."""
    mapping, reasons = _match_structure(pair.float.index, pair.int8.index)
    return ({q[1]: f[1] for q, f in mapping.items() if q[0] == "node"},
            {q[1]: why for q, why in reasons.items()})


def _lineage(ix: GraphIndex) -> dict:
    """Digest of each compute node's signature and, recursively, of everything upstream of it.

    Equal lineage means the same ops with the same attributes in the same arrangement
    from the graph inputs down to that node, whatever the names.
    """
    import hashlib

    memo: dict = {("input", k): f"input{k}" for k in range(len(ix.input_names))}
    for n in ix.nodes:  # ONNX graphs are topologically sorted
        if _is_passthrough(ix, n) or n.op_type == "Constant":
            continue
        srcs = [memo.get(_source(ix, t)[0], "?") for t in ix.activation_inputs(n)]
        if n.op_type in _COMMUTATIVE:
            srcs.sort()
        memo[("node", n.name or n.output[0])] = hashlib.sha1(repr((_signature(ix, n), srcs)).encode()).hexdigest()
    return memo


def _same_lineage(fx: GraphIndex, qx: GraphIndex, f_lin: dict, q_lin: dict, f_name: str, q_name: str) -> str:
    """'' if two same-named tensors come from identical upstream graphs, else why not.

    Names alone never pair: two different networks exported by one tool share names.
    """
    fs, _ = _source(fx, f_name)
    qs, _ = _source(qx, q_name)
    if fs is None or qs is None or f_lin.get(fs) is None or f_lin.get(fs) != q_lin.get(qs):
        return "same name, but the layers upstream of it differ between FLOAT and INT8"
    return ""
