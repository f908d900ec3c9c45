"""Many edits of one int8 model, run through one onnxruntime session over only the part of the graph they reach.

An activation-range candidate changes a few constants: the activation's Q/DQ scale and zero point, and the
biases of the layers reading it. ``edited_outputs(ctx, base, edits, x)`` finds those constants by comparing
each edit's numbers with the base model's (``QdqModel.numbers``: what each node reads, by position), turns
them into graph inputs, and keeps the nodes they reach on the way to the output. The tensors entering that
part (the cut) are computed once, by the base model; each edit then runs the part alone, fed the cut and its
own constants. Same kernels on the same values as running each edited model whole, so the same outputs, for
one session instead of one per edit and a fraction of the model per run (the later the activation, the
smaller the part).

An edit that adds or removes nodes, changes a constant outside a Q/DQ node, or changes how an int8 input is
quantized from the float data (the feed itself), is run whole.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...models.graph import GraphIndex, ancestors
from ...models.pair import ort_session
from .context import FitContext
from .qdq import QdqModel

_EDITABLE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def edited_outputs(ctx: FitContext, base: QdqModel, edits: list[QdqModel], x: np.ndarray) -> list[np.ndarray]:
    """The first output of each edited model on float inputs ``x``, as ``FitContext.outputs`` gives it."""
    model = base.to_model()
    nodes = list(model.graph.node)
    before = base.numbers()
    slots: dict[tuple[int, int], int] = {}  # (node, input) → graph-input number
    values: list[dict | None] = []
    feed_quant = _feed_quant(ctx, base)
    for e in edits:
        after = e.numbers()
        if len(e.model.graph.node) != len(nodes) or after.keys() != before.keys() or \
                _feed_quant(ctx, e) != feed_quant:
            values.append(None)
            continue
        changed = [k for k in after if after[k] != before[k]]
        if any(nodes[k].op_type not in _EDITABLE_OPS for k, _ in changed):
            values.append(None)
            continue
        values.append({k: e.inits[e.model.graph.node[k[0]].input[k[1]]] for k in changed})
        for k in changed:
            slots.setdefault(k, len(slots))
    part = _Part(ctx, model, slots, base, x) if slots else None
    if part is not None and not part.usable:
        values = [None] * len(edits)
    out, base_out = [], None
    for e, v in zip(edits, values):
        if v is None:
            out.append(ctx.outputs(e.to_model(), x, int8=True))
        elif not v:  # computes with the base model's numbers
            base_out = ctx.outputs(model, x, int8=True) if base_out is None else base_out
            out.append(base_out)
        else:
            out.append(part.run(v))
    return out


def _feed_quant(ctx: FitContext, qm: QdqModel):
    """How ``qm``'s int8 input is quantized from float data (None for a float input): an edit that changes it
    changes the feed itself, which the cut (computed from the base model's feed) cannot show."""
    if not ctx.pair.int8.inputs[0].dtype.startswith("int"):
        return None
    return GraphIndex(qm.to_model()).input_quant(ctx.pair.int8.inputs[0].name)


class _Part:
    """The nodes downstream of the edited constants (and on the way to the output), as a model of its own, run on
    the float inputs ``x``: the tensors entering it are computed from them once, at the first run."""

    def __init__(self, ctx: FitContext, model: onnx.ModelProto, slots: dict, base: QdqModel, x: np.ndarray):
        self.ctx, self.model, self.x = ctx, model, x
        nodes = model.graph.node
        output = model.graph.output[0].name
        inits = {i.name for i in model.graph.initializer}
        reached, produced = {k for k, _ in slots}, set()
        constant, known = set(), set(inits)  # nodes computing from constants only (weight DQs): not batched
        for k, node in enumerate(nodes):
            if k in reached or any(i in produced for i in node.input if i):
                reached.add(k)
                produced.update(node.output)
            elif all(i in known for i in node.input if i):
                constant.add(k)
                known.update(node.output)
        # the part: what the output needs from the reached nodes and the constant ones; everything it reads
        # besides is batched, computed once by the base model (the cut)
        keep = sorted(ancestors(nodes, [output], within=reached | constant))
        inside = {o for k in keep for o in nodes[k].output}
        self.cut = list(dict.fromkeys(
            name for k in keep for j, name in enumerate(nodes[k].input)
            if name and (k, j) not in slots and name not in inits and name not in inside))
        self.names = {key: f"tmlr_edit_{key[0]}_{key[1]}" for key in slots}
        self.base_values = {key: base.inits[nodes[key[0]].input[key[1]]] for key in slots}
        self.keep, self.output = keep, output
        self._session, self._cut = None, None
        self.usable = output in inside  # the part must produce the output

    def _build(self, cut_values: dict[str, np.ndarray]):
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        g = m.graph
        part = []
        for k in self.keep:
            node = onnx.NodeProto()
            node.CopyFrom(g.node[k])
            for j in range(len(node.input)):
                if (k, j) in self.names:
                    node.input[j] = self.names[(k, j)]
            part.append(node)
        used = {i for n in part for i in n.input}
        inits = [i for i in g.initializer if i.name in used]
        del g.node[:], g.initializer[:], g.input[:]
        g.node.extend(part)
        g.initializer.extend(inits)
        typed = {**cut_values, **{self.names[key]: v for key, v in self.base_values.items()}}
        g.input.extend(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype),
                                                     None) for name, v in typed.items())
        return ort_session(m)

    def run(self, edit: dict) -> np.ndarray:
        """The output with the constants of ``edit`` ((node, input) → array; the rest as in the base model)."""
        x, cut = self.x, self._cut_values()
        if self._session is None:
            self._session = self._build({name: v[:1] for name, v in cut.items()})
        params = {self.names[key]: np.asarray(edit.get(key, v)) for key, v in self.base_values.items()}
        parts = []
        for i in range(0, len(x), self.ctx.batch):
            feed = {name: v[i:i + self.ctx.batch] for name, v in cut.items()}
            parts.append(self._session.run([self.output], {**feed, **params})[0])
        y = self.ctx.pair.int8_output_to_float(0, np.concatenate(parts))
        return np.asarray(y, np.float64).reshape(len(x), -1)

    def _cut_values(self) -> dict[str, np.ndarray]:
        """The tensors entering the part, computed by the base model on ``x`` (once)."""
        x = self.x
        if self._cut is None:
            graph_inputs = {i.name for i in self.model.graph.input}
            inner = [n for n in self.cut if n not in graph_inputs]
            feed = self.ctx.feeder(self.model, int8=True)
            runs = self.ctx.run(self.model, inner, x, int8=True) if inner else None
            parts: dict[str, list] = {n: [] for n in self.cut}
            for i in range(0, len(x), self.ctx.batch):
                given = {**feed(x[i:i + self.ctx.batch]), **(next(runs) if runs else {})}
                for n in self.cut:
                    parts[n].append(given[n])
            self._cut = {n: np.concatenate(v) for n, v in parts.items()}
        return self._cut
