"""The bundled tasks are what the manifest and the README say they are."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from repair.data import CalibrationSet, load_calibration

from .conftest import DATASETS, TASKS, task_files


def test_manifest_matches_every_bundled_file():
    manifest = json.loads((DATASETS / "manifest.json").read_text())
    listed = set(manifest["files"])
    present = {str(p.relative_to(DATASETS)) for p in DATASETS.glob("*/*") if p.suffix in (".onnx", ".npz", ".tflite")}
    assert listed == present
    for rel, meta in manifest["files"].items():
        raw = (DATASETS / rel).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == meta["sha256"], rel
        assert len(raw) == meta["bytes"]


@pytest.mark.parametrize("task", TASKS)
def test_task_is_small_and_splits_are_disjoint(task):
    f = task_files(task)
    assert sum(p.stat().st_size for p in f.values()) < 2 * 1024 * 1024
    cal, ho = load_calibration(f["calib"]), load_calibration(f["holdout"])
    a = {hashlib.sha1(row.tobytes()).hexdigest() for row in cal.x}
    b = {hashlib.sha1(row.tobytes()).hexdigest() for row in ho.x}
    assert not a & b
    assert cal.y is not None and ho.y is not None


def test_anomaly_task_has_streams_and_both_classes_in_holdout():
    ho = load_calibration(task_files("ecg")["holdout"])
    cal = load_calibration(task_files("ecg")["calib"])
    assert set(np.unique(ho.y)) == {0, 1}
    assert set(np.unique(cal.y)) == {0}
    assert ho.signal is not None and ho.labels is not None and len(ho.signal) == len(ho.labels)


def test_split_holdout_is_disjoint_stratified_and_seeded():
    data = load_calibration(task_files("digits")["calib"])
    cal, ho = data.split_holdout(0.3, seed=1)
    assert len(cal) + len(ho) == len(data)
    a = {hashlib.sha1(r.tobytes()).hexdigest() for r in cal.x}
    assert not a & {hashlib.sha1(r.tobytes()).hexdigest() for r in ho.x}
    share = np.bincount(ho.y, minlength=10) / np.bincount(data.y, minlength=10)
    assert np.allclose(share, 0.3, atol=0.02)  # every class split in the same proportion
    again, _ = data.split_holdout(0.3, seed=1)
    assert again.sha256 == cal.sha256


def test_a_sets_hash_is_its_contents_dtype_shape_and_bytes():
    """``CalibrationSet.sha256`` (made when first asked for) is SHA-256 over x's then y's dtype, shape and bytes in C
    order, whatever the array's memory layout: the digest reports and plans carry, stable across versions."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = np.array([0, 1])
    h = hashlib.sha256()
    for a in (x, y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    assert CalibrationSet(x=x, y=y).sha256 == h.hexdigest()
    assert CalibrationSet(x=np.asfortranarray(x), y=y).sha256 == h.hexdigest()
    assert CalibrationSet(x=x).sha256 != h.hexdigest()
    assert CalibrationSet(x=x, y=y).summary()["sha256"] == h.hexdigest()
