"""ModelPair: a float model and its int8 model, loaded, validated and ready to run.

Handles both int8 styles met in practice:

* QDQ models written by ``onnxruntime.quantization.quantize_static``: float inputs and
  outputs, a QuantizeLinear right after each input and a DequantizeLinear before each
  output, tensor names shared with the float model;
* models converted from TFLite (tf2onnx, MLPerf Tiny): **int8 inputs and outputs**, whose
  scale and zero point are those of the first DequantizeLinear after the input and the
  last QuantizeLinear before the output, names unrelated to the float model's.

``ModelPair.int8_feed`` quantizes float inputs for an int8-input model and
``ModelPair.int8_output_to_float`` dequantizes its outputs, so callers always speak
float, in the units of the float model.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import ModelError, PairError
from .graph import INT_DTYPES, GraphIndex, QuantParams
from .tflite_file import is_hybrid, is_tflite, read_tflite
from .tflite_onnx import tflite_to_onnx


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, per-sample shape (batch dim dropped), element type."""

    name: str
    shape: tuple  # per sample; symbolic dims as strings
    dtype: str
    quant: QuantParams | None = None  # for int8 I/O, or the first/last Q of float I/O

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quant is not None:
            d["quant"] = self.quant.to_dict()
        return d


@dataclass
class LoadedModel:
    """One model file (ONNX, or .tflite read as its ONNX graph), parsed and indexed."""

    path: Path
    sha256: str
    index: GraphIndex
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tflite: bytes | None = None  # the file's bytes when it is a .tflite (``proto`` is then its ONNX graph)
    _sessions: dict = field(default_factory=dict, repr=False)

    @property
    def format(self) -> str:
        return "tflite" if self.tflite is not None else "onnx"

    @property
    def proto(self):
        return self.index.model

    def session(self, extra_outputs: tuple[str, ...] = (), optimize: bool = False, threads: int = 0):
        """An onnxruntime session, optionally with intermediate tensors exposed as outputs.

        Graph optimisations are off by default so that QDQ models run with exactly the
        semantics their Q/DQ nodes state (the way ``qdq_loss_debug`` runs them), whether
        or not intermediates are exposed. ``threads``: intra-op threads (0: onnxruntime's one per core).
        """
        key = (extra_outputs, optimize, threads)
        if key not in self._sessions:
            model = self.proto
            if extra_outputs:
                from onnx import helper

                model = type(model)()
                model.CopyFrom(self.proto)
                known = {o.name for o in model.graph.output}
                for name in extra_outputs:
                    if name not in known:
                        model.graph.output.append(helper.make_empty_tensor_value_info(name))
            self._sessions[key] = ort_session(model, optimize, threads)
        return self._sessions[key]


_process_arena: list[bool] = []  # [registered]: set at the first session
_arena_lock = threading.Lock()


def _shared_arena(ort) -> bool:
    """One CPU memory arena for every session of the process (registered with onnxruntime's environment once;
    sessions opt in with ``session.use_env_allocators``), where each session would otherwise grow and fault in its
    own: `tmlrepair fit` on digits makes ~70 sessions (the search's model parts, the program's layers), and with
    one arena took 73,000 page faults and 335 MB at most where it took 130,000 and 510 MB (``/usr/bin/time``, two
    runs each; wall 3.1–3.3 s against 3.3–3.5). False where this onnxruntime cannot register one: then each session
    keeps its own."""
    with _arena_lock:
        if not _process_arena:
            from onnxruntime.capi import onnxruntime_pybind11_state as state

            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # defaults: no limit
                _process_arena.append(True)
            except (AttributeError, TypeError, state.Fail, state.InvalidArgument):  # older, or refusing
                _process_arena.append(False)
        return _process_arena[0]


def ort_session(model, optimize: bool = False, threads: int = 0):
    """An onnxruntime CPU session for an in-memory model; graph optimisations off unless ``optimize``; ``threads``
    intra-op threads (0: onnxruntime's default, one per core); its memory from the process's one arena
    (``_shared_arena``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if _shared_arena(ort):
        opts.add_session_config_entry("session.use_env_allocators", "1")
    # ORT's pool threads spin after each run; between runs numpy needs those cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_in_batches(sess, names: list[str] | None, x: np.ndarray, feed, batch: int):
    """The one batched onnxruntime loop: ``sess``'s outputs ``names`` (None: all) on float-model inputs ``x``,
    ``batch`` samples at a time, one list per batch; ``feed`` turns a batch into the session's feed."""
    for i in range(0, len(x), batch):
        yield sess.run(names, feed(x[i:i + batch]))


def _per_sample(shape: list) -> tuple:
    return tuple(shape[1:]) if shape else ()


def _dtype_name(elem_type: int) -> str:
    if elem_type in INT_DTYPES:
        return INT_DTYPES[elem_type]
    return {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool"}.get(elem_type, f"onnx:{elem_type}")


def load_model(path: str | Path, role: str) -> LoadedModel:
    """Parse and check one ONNX or .tflite file; ``role`` ("FLOAT" or "INT8") names it in messages."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{role} model {p}: no such file; check the path")
    raw = p.read_bytes()
    tflite = raw if is_tflite(raw) else None
    if tflite is not None:
        model = tflite_model(raw, p, role)
    else:
        try:
            model = onnx.load_from_string(raw)
        except Exception as exc:  # protobuf raises several types for corrupt bytes
            raise ModelError(f"{role} model {p} is not a readable ONNX or TFLite file ({type(exc).__name__}): "
                             "it may be truncated or another format; re-export it") from None
    if not model.graph.node:
        raise ModelError(f"{role} model {p} has no nodes: it is empty or not an ONNX model; re-export it")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{role} model {p} fails the ONNX checker: {first}") from None
    index = GraphIndex(model)
    inputs = [TensorSpec(n, _per_sample(index.io_shape(n)), _dtype_name(index.elem_type(n)), index.input_quant(n))
              for n in index.input_names]
    if tflite is not None:  # TFLite quantizes an input with TfLiteRound: ties away from zero
        inputs = [replace(s, quant=replace(s.quant, rounding="half_away")) if s.quant else s for s in inputs]
    outputs = [TensorSpec(n, _per_sample(index.io_shape(n)), _dtype_name(index.elem_type(n)), index.output_quant(n))
               for n in index.output_names]
    return LoadedModel(p, hashlib.sha256(raw).hexdigest(), index, inputs, outputs, tflite=tflite)


def tflite_model(raw: bytes, path: Path, role: str):
    """The ONNX graph of a .tflite file (``tflite_onnx``), refusing a dynamic-range ("hybrid") model as INT8."""
    model_t = read_tflite(raw, name=f"{role} model {path}")
    if role == "INT8" and is_hybrid(model_t):
        raise ModelError(f"INT8 model {path} is a hybrid (dynamic-range) model: int8 weights but float "
                         "activations, which TFLite Micro does not run; give the fully int8 model (full-integer "
                         "quantization with a representative dataset)")
    return tflite_to_onnx(model_t, str(path), role)



def _shapes_fit(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x == y or isinstance(x, str) or isinstance(y, str) for x, y in zip(a, b))


@dataclass
class ModelPair:
    """A float model and its int8 counterpart, checked to correspond at the I/O."""

    float: LoadedModel
    int8: LoadedModel

    @cached_property
    def max_batch(self) -> int | None:
        """Largest batch both models accept: a fixed batch dimension (often 1 in TF exports) caps it."""
        fixed = [m.index.io_shape(s.name)[0] for m in (self.float, self.int8) for s in m.inputs]
        fixed = [d for d in fixed if isinstance(d, int) and d > 0]
        return min(fixed) if fixed else None

    @cached_property
    def int8_io_is_integer(self) -> bool:
        return any(s.dtype in INT_DTYPES.values() for s in (*self.int8.inputs, *self.int8.outputs))

    def int8_feed(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map a float-model feed to an int8-model feed (quantize where the int8 input is integer)."""
        out = {}
        for f_spec, q_spec in zip(self.float.inputs, self.int8.inputs):
            x = feed[f_spec.name]
            if q_spec.dtype in INT_DTYPES.values():
                x = q_spec.quant.quantize(x)
            out[q_spec.name] = x
        return out

    def run_batched(self, sess, x: np.ndarray, *, int8: bool, batch_size: int = 256) -> np.ndarray:
        """The first output of ``sess`` — an onnxruntime session of this pair's float model, or of its int8 model (or
        an edited copy: ``int8`` feeds quantize where its input is integer) — on float-model inputs ``x``, in
        batches the models accept, concatenated."""
        name = self.float.inputs[0].name
        feed = (lambda xb: self.int8_feed({name: xb})) if int8 else (lambda xb: {name: xb})
        return np.concatenate([outs[0] for outs in run_in_batches(sess, None, x, feed, self.batch(batch_size))])

    def batch(self, batch_size: int) -> int:
        """``batch_size``, or less where a model takes at most that many samples at once."""
        return min(batch_size, self.max_batch or batch_size)

    def int8_input_integers(self, x: np.ndarray, quant: QuantParams | None = None) -> np.ndarray:
        """The int8 input the int8 model's integer program (and a device) takes for float-model inputs ``x``: the
        int8 feed as is, or the float feed through the model's input pre-shim (if any) and its input quantization
        (``quant`` in its place, e.g. a device's); one flat int8 row per sample."""
        spec = self.int8.inputs[0]
        feed = self.int8_feed({self.float.inputs[0].name: x})[spec.name]
        if not np.issubdtype(np.asarray(feed).dtype, np.integer):
            affine = self.int8.index.input_affine(spec.name)
            if affine is not None:
                feed = affine.apply(feed)
            quant = quant or spec.quant
            if quant is None:
                raise ModelError(f"{self.int8.path.name}: its input {spec.name!r} is not quantized by one "
                                 "QuantizeLinear: its int8 input is unknown")
            quant = QuantParams(quant.scale, quant.zero_point, "int8", spec.quant.rounding if spec.quant else "half_even")
            feed = quant.quantize(feed)
        return np.asarray(feed).reshape(len(x), -1).astype(np.int8)

    def int8_output_to_float(self, k: int, y: np.ndarray) -> np.ndarray:
        spec = self.int8.outputs[k]
        if spec.dtype in INT_DTYPES.values():
            return spec.quant.dequantize(y)
        return np.asarray(y, np.float32)

    def to_dict(self) -> dict:
        return {role: {"path": str(m.path), "sha256": m.sha256,
                       "inputs": [s.to_dict() for s in m.inputs],
                       "outputs": [s.to_dict() for s in m.outputs],
                       "ops": m.index.op_counts}
                for role, m in (("float", self.float), ("int8", self.int8))}


def load_pair(float_path: str | Path, int8_path: str | Path) -> ModelPair:
    """Load both models and check they can be a float/int8 pair of one network.

    Raises ``ModelError`` for an unreadable file or a model in the wrong role, and
    ``PairError`` when inputs or outputs do not correspond.
    """
    f = load_model(float_path, "FLOAT")
    q = load_model(int8_path, "INT8")
    if f.index.has_qdq or f.index.is_qoperator:
        raise ModelError(f"FLOAT model {f.path} is already quantized ({_quant_summary(f.index)}): "
                         "give the float model first and the int8 model second")
    if not (q.index.has_qdq or q.index.is_qoperator):
        raise ModelError(f"INT8 model {q.path} has no quantization (no QuantizeLinear/DequantizeLinear or "
                         "QLinear ops): it looks like a float model; give the int8 model second")
    if f.sha256 == q.sha256:
        raise PairError("FLOAT and INT8 are the same file; give the float model and its int8 model")
    for what, fs, qs in (("inputs", f.inputs, q.inputs), ("outputs", f.outputs, q.outputs)):
        if len(fs) != len(qs):
            raise PairError(f"FLOAT has {len(fs)} {what} but INT8 has {len(qs)}: "
                            "they are not the float and int8 versions of one network")
        for a, b in zip(fs, qs):
            if not _shapes_fit(a.shape, b.shape):
                raise PairError(f"FLOAT {what[:-1]} {a.name!r} has per-sample shape {list(a.shape)} but INT8 "
                                f"{what[:-1]} {b.name!r} has {list(b.shape)}: they are not the same network")
            if a.dtype not in ("float32", "float16", "float64"):
                raise ModelError(f"FLOAT {what[:-1]} {a.name!r} is {a.dtype}: tmlrepair needs a float model "
                                 "with float inputs and outputs")
            if b.dtype in INT_DTYPES.values() and b.quant is None:
                raise ModelError(f"INT8 {what[:-1]} {b.name!r} is {b.dtype} but no per-tensor "
                                 "QuantizeLinear/DequantizeLinear gives its scale and zero point")
    return ModelPair(f, q)


def _quant_summary(index: GraphIndex) -> str:
    counts = index.op_counts
    parts = [f"{counts[k]} {k}" for k in counts if k in ("QuantizeLinear", "DequantizeLinear") or k.startswith("QLinear")]
    return ", ".join(parts)
