"""FitContext: what every in-model repair needs — both models run by onnxruntime on a split, and the
float counterpart of each int8 layer and activation.

The float model is run once per request and its reductions are cached (per-channel means of a layer's
pre-activation, per-channel ranges, a sample of an activation's values). The edited int8 model is run
fresh each time: its numbers change between measurements. Both run with graph optimisations off, so a
QDQ model computes exactly what its Q/DQ nodes state (``LoadedModel.session`` does the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ...errors import ModelError
from ...models import ModelPair, build_tensor_map
from ...models.graph import GraphIndex, ancestors
from ...models.pair import ort_session, run_in_batches
from ...models.structure import match_compute_nodes
from .qdq import Layer, QdqModel

#: Between a float layer and its pre-activation: a BatchNormalization an exporter left unfolded, a bias Add.
_PREACT_OPS = frozenset({"BatchNormalization", "Add"})
#: Values drawn per activation, over the whole calibration split, for choosing its clipping range.
VALUE_SAMPLE = 200_000


def session(model: onnx.ModelProto, outputs: list[str]):
    """An onnxruntime session computing exactly ``outputs`` (graph outputs replaced), optimisations off, and
    only the nodes they depend on: onnxruntime runs every node of a graph, so a request for an early layer's
    tensor (sequential bias correction asks for each layer's in turn) would otherwise pay for the whole model."""
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs)
    needed = ancestors(m.graph.node, outputs)
    kept = [n for k, n in enumerate(m.graph.node) if k in needed]
    if len(kept) < len(m.graph.node):
        del m.graph.node[:]
        m.graph.node.extend(kept)
        used = {i for n in kept for i in n.input}
        dropped = {i.name for i in m.graph.initializer if i.name not in used}
        inits = [i for i in m.graph.initializer if i.name not in dropped]
        del m.graph.initializer[:]
        m.graph.initializer.extend(inits)
        inputs = [i for i in m.graph.input if i.name not in dropped]  # an initializer listed as an input (IR < 4)
        del m.graph.input[:]
        m.graph.input.extend(inputs)
    return ort_session(m)


def channel_view(a: np.ndarray, axis: int) -> np.ndarray:
    """(samples, channels, rest) view of a batched tensor with channels on ``axis``."""
    a = np.moveaxis(np.asarray(a, np.float64), axis, 1)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _sample_range(a: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample, per-channel (min, max) of a batch (channels on axis 1), taken in the batch's own dtype (min and
    max round nothing, so the same values as in float64) and returned as float64."""
    a = np.asarray(a)
    v = a.reshape(a.shape[0], a.shape[1], -1)
    return v.min(axis=2).astype(np.float64), v.max(axis=2).astype(np.float64)


@dataclass
class FitContext:
    """Models, splits and float-side caches shared by the in-model repairs of one fit."""

    pair: ModelPair
    calib_x: np.ndarray
    batch_size: int = 256
    check_weights: bool = True
    _float_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.float_input = self.pair.float.inputs[0].name
        self.node_map, self.node_unpaired = match_compute_nodes(self.pair)
        tmap = build_tensor_map(self.pair, {self.float_input: self.calib_x[:1]}, check_weights=self.check_weights)
        self.float_of_tensor = {p.int8_name: p.float_name for p in tmap.pairs}
        self.tensor_unpaired = {u.int8_name: u.reason for u in tmap.unmatched}

    def on_subset(self, index: np.ndarray) -> "FitContext":
        """The same models and tensor pairing over the calibration samples ``index`` (a cross-validation fold),
        with its own float caches; no second pairing pass."""
        sub = object.__new__(FitContext)
        sub.__dict__.update(self.__dict__)
        sub.calib_x = self.calib_x[index]
        sub._float_cache = {}
        sub._parent, sub._index = self, np.asarray(index)
        return sub

    @property
    def batch(self) -> int:
        return self.pair.batch(self.batch_size)

    # ------------------------------------------------------------------ running
    def run(self, model: onnx.ModelProto, names: list[str], x: np.ndarray, *, int8: bool):
        """Yield each batch's outputs (dict name → array) of ``model`` on ``x``."""
        for outs in run_in_batches(session(model, names), names, x, self.feeder(model, int8=int8), self.batch):
            yield dict(zip(names, outs))

    def feeder(self, model: onnx.ModelProto, *, int8: bool):
        """float inputs → the feed dict of ``model`` (the float model, or an int8 one: ``int8``)."""
        if not int8:
            return lambda xb: {self.float_input: xb}
        q_input = self.pair.int8.inputs[0].name
        # an int8 input is quantized with ``model``'s own parameters (a repair may have refitted them)
        quant = GraphIndex(model).input_quant(q_input) if self.pair.int8.inputs[0].dtype.startswith("int") else None
        if quant is not None:
            return lambda xb: {q_input: quant.quantize(xb)}
        return lambda xb: {q_input: self.pair.int8_feed({self.float_input: xb})[q_input]}

    def outputs(self, model: onnx.ModelProto, x: np.ndarray, *, int8: bool) -> np.ndarray:
        """The model's first output on ``x`` as float64 (int8 outputs dequantized)."""
        name = model.graph.output[0].name
        out = np.concatenate([b[name] for b in self.run(model, [name], x, int8=int8)])
        if int8:
            out = self.pair.int8_output_to_float(0, out)
        return np.asarray(out, np.float64).reshape(len(x), -1)

    # ------------------------------------------------------------------ float counterparts
    def float_node(self, layer: Layer):
        name = self.node_map.get(layer.name)
        return self.pair.float.index.by_key.get(name) if name else None

    def float_preact(self, layer: Layer) -> str | None:
        """The float tensor equal to ``layer``'s pre-activation: the paired node's output, past BN / bias Add."""
        node = self.float_node(layer)
        if node is None:
            return None
        ix = self.pair.float.index
        name = node.output[0]
        while True:
            cs = ix.consumers.get(name, [])
            if len(cs) != 1 or cs[0].op_type not in _PREACT_OPS:
                return name
            if cs[0].op_type == "Add" and len(ix.activation_inputs(cs[0])) != 1:
                return name
            name = cs[0].output[0]

    def float_weights(self, layer: Layer, qm: QdqModel) -> tuple[np.ndarray, np.ndarray, str]:
        """The layer's weights and bias in full precision when the float model holds them in the same layout
        (cosine ≥ 0.99 with the int8 weights), else the int8 model's dequantized ones; and which it was."""
        w_q, b_q = qm.weights(layer), qm.bias(layer)
        node = self.float_node(layer)
        if node is None or len(node.input) < 2:
            return w_q, b_q, "int8 (no float layer paired)"
        ix = self.pair.float.index
        w = ix.constant_value(node.input[1])
        if w is None or w.shape != w_q.shape:
            return w_q, b_q, "int8 (float weights in another layout)"
        w = w.astype(np.float64)
        cos = float((w * w_q).sum() / (np.linalg.norm(w) * np.linalg.norm(w_q) + 1e-30))
        if cos < 0.99:
            return w_q, b_q, f"int8 (float weights differ: cosine {cos:.3f})"
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = ix.constant_value(node.input[2])
        elif layer.op == "MatMul":
            cs = ix.consumers.get(node.output[0], [])
            if len(cs) == 1 and cs[0].op_type == "Add":
                consts = [ix.constant_value(i) for i in cs[0].input if ix.is_constant(i)]
                b = consts[0] if consts else None
        b = np.zeros(len(b_q)) if b is None else np.asarray(b, np.float64).reshape(-1)
        if b.shape != b_q.shape:
            return w_q, b_q, "int8 (float bias in another layout)"
        return w, b, "float model"

    def float_tensor(self, act_key: str) -> str | None:
        return self.float_of_tensor.get(act_key)

    # ------------------------------------------------------------------ float reductions (cached)
    def float_channel_means(self, names: list[str], axes: dict[str, int]) -> dict[str, np.ndarray]:
        """Per-sample, per-channel means of float tensors on calib: name → (samples, channels). A fold's
        context takes its rows from the whole split's (one float pass for all folds)."""
        if getattr(self, "_parent", None) is not None:
            return {n: m[self._index] for n, m in self._parent.float_channel_means(names, axes).items()}
        return self._reduce("means", names, lambda a, n: channel_view(a, axes[n]).mean(axis=2),
                            lambda parts: np.concatenate(parts))

    def float_channel_ranges(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-channel (min, max) of float tensors on calib (channels on axis 1; 1-D per-sample: axis 1 too),
        reduced from per-sample ranges, so that a fold's context reuses the whole split's float pass."""
        if getattr(self, "_parent", None) is not None:
            per = self._parent._sample_ranges(names)
        else:
            per = self._sample_ranges(names)
        idx = getattr(self, "_index", slice(None))
        return {n: (lo[idx].min(axis=0), hi[idx].max(axis=0)) for n, (lo, hi) in per.items()}

    def _sample_ranges(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-sample, per-channel (min, max): name → ((samples, channels), (samples, channels))."""
        return self._reduce("sample_ranges", names, _sample_range,
                            lambda parts: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))

    def float_values(self, name: str, divisor: np.ndarray | None = None) -> np.ndarray:
        """A seeded uniform sample (≈ VALUE_SAMPLE) of a float tensor's values on calib, plus its extremes;
        with ``divisor``, channel c (axis 1) divided by divisor[c] first (an equalized activation)."""
        return self.float_values_of([(name, divisor)])[0]

    def float_values_of(self, requests: list[tuple[str, np.ndarray | None]]) -> list[np.ndarray]:
        """``float_values`` of several (name, divisor) requests. The values are drawn once, in the whole split's
        float pass (``_value_draws``); a fold's context keeps the draws from its own samples and the extremes of
        its own samples' ranges, so the folds run no float pass of their own."""
        root = getattr(self, "_parent", None) or self
        index = getattr(self, "_index", None)
        names = list(dict.fromkeys(name for name, _ in requests))
        draws, ranges = root._value_draws(names), root._sample_ranges(names)
        out = []
        for name, divisor in requests:
            key = ("values", name, None if divisor is None else np.asarray(divisor).tobytes())
            if key in self._float_cache:
                out.append(self._float_cache[key])
                continue
            values, samples, channels = draws[name]
            lo, hi = ranges[name]
            if index is not None:
                member = np.zeros(len(lo), bool)
                member[index] = True
                keep = member[samples]
                values, channels, lo, hi = values[keep], channels[keep], lo[index], hi[index]
            if divisor is not None and lo.shape[1] == divisor.size:
                d = np.asarray(divisor, np.float64)
                values = values / d[channels]
                lo, hi = np.minimum(lo / d, hi / d), np.maximum(lo / d, hi / d)
            self._float_cache[key] = np.concatenate([values, [lo.min(), hi.max()]])
            out.append(self._float_cache[key])
        return out

    def _value_draws(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per float tensor, ≈ VALUE_SAMPLE of its values over calib drawn uniformly (with replacement, seeded, in
        proportion to each batch's size), each with its sample and its channel (axis 1): name → (values as float64,
        samples, channels). The per-sample ranges are reduced in the same float pass."""
        todo = [n for n in dict.fromkeys(names) if ("draws", n) not in self._float_cache]
        if not todo:
            return {n: self._float_cache[("draws", n)] for n in names}
        rngs = {n: np.random.default_rng(0) for n in todo}  # each tensor drawn as its own pass would draw it
        parts: dict[str, list] = {n: [] for n in todo}
        ranges: dict[str, list] = {n: [] for n in todo}
        total, first = max(1, len(self.calib_x)), 0
        for outs in self._float_batches(todo):
            for n in todo:
                a = np.asarray(outs[n])
                a = a.reshape(len(a), a.shape[1] if a.ndim > 1 else 1, -1)
                count = max(1, round(VALUE_SAMPLE * len(a) / total))
                at = rngs[n].integers(0, a.size, count)
                sample, within = np.divmod(at, a.shape[1] * a.shape[2])
                parts[n].append((a.reshape(-1)[at].astype(np.float64), sample + first, within // a.shape[2]))
                ranges[n].append(_sample_range(a, n))
            first += len(next(iter(outs.values())))
        for n in todo:
            self._float_cache[("draws", n)] = tuple(np.concatenate(c) for c in zip(*parts[n]))
            self._float_cache.setdefault(("sample_ranges", n), (np.concatenate([r[0] for r in ranges[n]]),
                                                                np.concatenate([r[1] for r in ranges[n]])))
        return {n: self._float_cache[("draws", n)] for n in names}

    def _reduce(self, kind: str, names: list[str], per_batch, combine) -> dict:
        todo = [n for n in dict.fromkeys(names) if (kind, n) not in self._float_cache]
        if todo:
            parts: dict[str, list] = {n: [] for n in todo}
            for outs in self._float_batches(todo):
                for n in todo:
                    parts[n].append(per_batch(outs[n], n))
            for n in todo:
                self._float_cache[(kind, n)] = combine(parts[n])
        return {n: self._float_cache[(kind, n)] for n in names}


    def _float_batches(self, names: list[str]):
        """Float model tensors ``names`` batch by batch on calib; the model's input is the data itself."""
        model_names = [n for n in names if n != self.float_input]
        if not model_names:
            for i in range(0, len(self.calib_x), self.batch):
                yield {self.float_input: self.calib_x[i:i + self.batch]}
            return
        for i, outs in enumerate(self.run(self.pair.float.proto, model_names, self.calib_x, int8=False)):
            yield {**outs, self.float_input: self.calib_x[i * self.batch:(i + 1) * self.batch]}


def require_layers(qm: QdqModel) -> None:
    if not qm.layers:
        why = "; ".join(f"{k}: {v}" for k, v in list(qm.skipped.items())[:3])
        raise ModelError("the int8 model has no Conv/Gemm/MatMul with int8 QDQ weights to repair"
                         + (f" ({why})" if why else "") + "; in-model repairs need a QDQ model")
