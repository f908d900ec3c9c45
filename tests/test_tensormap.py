"""Tensor pairing: complete on real pairs, by name and by structure, and never wrong."""

from __future__ import annotations

import numpy as np
import pytest

from repair.errors import PairError
from repair.models import build_tensor_map, load_pair

from .conftest import TASKS, make_float_model, quantize_model, real_model, task_files

MLPERF = ("ad01", "kws_dscnn", "ic_resnet8", "vww_mobilenet", "sww")


def _sample(pair, seed=0):
    spec = pair.float.inputs[0]
    shape = [1 if isinstance(d, str) else d for d in spec.shape]
    q = pair.int8.inputs[0].quant
    rng = np.random.default_rng(seed)
    if pair.int8_io_is_integer:
        return {spec.name: q.dequantize(rng.integers(-128, 128, (1, *shape)))}
    return {spec.name: rng.uniform(0, 1, (1, *shape)).astype(np.float32)}


@pytest.mark.parametrize("task", TASKS)
def test_bundled_pairs_fully_paired_by_name(task):
    f = task_files(task)
    pair = load_pair(f["float"], f["int8"])
    m = build_tensor_map(pair, _sample(pair))
    assert m.coverage >= 0.9
    assert {p.how for p in m.pairs} == {"name"}


@pytest.mark.parametrize("task", TASKS)
def test_structure_agrees_with_names_on_ort_pairs(task):
    """Structure alone, on graphs whose names we know, finds exactly the pairs the names give."""
    f = task_files(task)
    pair = load_pair(f["float"], f["int8"])
    by_name = {p.int8_name: p.float_name for p in build_tensor_map(pair, _sample(pair), "name").pairs}
    by_struct = build_tensor_map(pair, _sample(pair), "structure")
    got = {p.int8_name: p.float_name for p in by_struct.pairs if p.how == "structure"}
    assert got  # structure really ran (the graph input pairs by its position)
    for int8_name, float_name in got.items():
        assert by_name[int8_name] == float_name
    assert by_struct.coverage == 1.0


@pytest.mark.real
@pytest.mark.parametrize("name", MLPERF)
def test_mlperf_pairs_at_least_90_percent_paired(name):
    pair = load_pair(*real_model(name))
    # kws float and int8 files hold different weights (see test_drift); pairing itself is structural
    m = build_tensor_map(pair, _sample(pair), check_weights=name != "kws_dscnn")
    assert m.coverage >= 0.9, m.unmatched
    assert any(p.how == "structure" for p in m.pairs)
    for p in m.pairs:
        assert p.op != "?"


def test_same_names_different_network_is_refused(tmp_path):
    """Two networks from one exporter share tensor names; pairing must look at structure too."""
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    a = make_float_model(tmp_path / "a.onnx", kernel=3)
    b = make_float_model(tmp_path / "b.onnx", kernel=5, seed=1)
    qb = quantize_model(b, tmp_path / "b_int8.onnx", x)
    pair = load_pair(a, qb)
    with pytest.raises(PairError, match="not float and int8 versions of one network"):
        build_tensor_map(pair, {"x": x[:1]})


def test_extra_layer_is_reported_not_mispaired(tmp_path):
    """A conv with different channel count: its tensors are unmatched with a reason, others still pair."""
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    a = make_float_model(tmp_path / "a.onnx", channels=4)
    b = make_float_model(tmp_path / "b.onnx", channels=6)
    qb = quantize_model(b, tmp_path / "b_int8.onnx", x)
    with pytest.raises(PairError) as exc:
        build_tensor_map(load_pair(a, qb), {"x": x[:1]})
    assert "Conv" in str(exc.value) or "correspond" in str(exc.value)


def test_qoperator_model_gets_output_level_only(tiny):
    pair = load_pair(tiny["float"], tiny["qop"])
    m = build_tensor_map(pair, {"x": np.zeros((1, 1, 8, 8), np.float32)})
    assert m.pairs == []
    assert m.unmatched and all("QOperator" in u.reason for u in m.unmatched)


@pytest.mark.parametrize("name", [*TASKS, "kws_dscnn", "ic_resnet8", "vww_mobilenet", "ad01"])
def test_inferred_shapes_equal_a_run_of_the_model(name):
    """Pairing reads per-sample shapes from ONNX shape inference instead of a probe run: for every tensor of both
    models that inference determines, the shape equals what onnxruntime produces on one sample."""
    pair = load_pair(*(real_model(name) if name not in TASKS else
                       (task_files(name)["float"], task_files(name)["int8"])))
    for model in (pair.float, pair.int8):
        known = model.index.per_sample_shapes
        names = [o for n in model.index.nodes for o in n.output if o in known]
        assert len(names) > 0.9 * sum(len(n.output) for n in model.index.nodes), "inference left most tensors open"
        feed = pair.int8_feed(_sample(pair)) if model is pair.int8 else _sample(pair)
        outs = model.session(tuple(names)).run(names, {k: v[:1] for k, v in feed.items()})
        assert {n: o.shape[1:] for n, o in zip(names, outs)} == {n: known[n] for n in names}
