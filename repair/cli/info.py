"""``tmlrepair info``: a plain-text account of what was loaded, so a user can check it."""

from __future__ import annotations

from ..data import check_fits, load_calibration
from ..models import load_pair
from ..models.task import detect_task


def _spec_line(s) -> str:
    shape = "x".join(str(d) for d in ("N", *s.shape))
    q = f"  scale {s.quant.scale:.9g}, zero point {s.quant.zero_point} ({s.quant.dtype})" if s.quant else ""
    return f"    {s.name!r:<34} {s.dtype:<8} [{shape}]{q}"


def describe(float_path, int8_path, data_path=None) -> str:
    """Describe a model pair (and optionally a data set checked against it)."""
    pair = load_pair(float_path, int8_path)
    lines = []
    for role, m in (("float", pair.float), ("int8", pair.int8)):
        ix = m.index
        kind = "QOperator" if ix.is_qoperator else ("QDQ" if ix.has_qdq else "float")
        if m.format == "tflite":
            kind = f"TFLite {'int8' if ix.has_qdq else 'float'}, read as its ONNX graph: ops below"
        lines.append(f"{role} model  {m.path}  ({kind}, sha256 {m.sha256[:16]})")
        lines.append("  ops: " + ", ".join(f"{op}×{n}" for op, n in ix.op_counts.items()))
        lines.append("  inputs:")
        lines += [_spec_line(s) for s in m.inputs]
        lines.append("  outputs:")
        lines += [_spec_line(s) for s in m.outputs]
    io = "integer (int8 I/O, quantize inputs / dequantize outputs with the params above)" \
        if pair.int8_io_is_integer else "float (Q/DQ inside the graph)"
    task = detect_task(pair)
    lines.append(f"int8 I/O: {io}")
    lines.append(f"task: {task}")
    if data_path is not None:
        data = load_calibration(data_path)
        n_classes = pair.float.outputs[0].shape[0] if task == "classifier" else None
        data = check_fits(data, pair, n_classes)
        s = data.summary()
        lines.append(f"data  {s['source']}: {s['n']} samples of shape {s['x_shape']} ({s['x_dtype']}), "
                     f"sha256 {s['sha256'][:16]}")
        if "label_counts" in s:
            lines.append("  labels: " + ", ".join(f"{k}: {v}" for k, v in s["label_counts"].items()))
        else:
            lines.append("  labels: none")
        if "stream_length" in s:
            lines.append(f"  stream: {s['stream_length']} samples")
    return "\n".join(lines) + "\n"
