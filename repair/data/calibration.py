"""CalibrationSet: the inputs (and labels) a repair is fitted on or judged on.

File formats (DESIGN.md):

* ``.npz`` with ``x`` (inputs as the float model takes them, batch first), optional
  ``y`` (class ids; for anomaly tasks 0 = normal, 1 = anomaly), and for streams
  ``signal`` (T[, C]) and ``labels`` (T);
* ``.npy``: ``x`` only;
* ``.csv``: one sample per row, flattened; a column named ``y`` or ``label`` holds labels.

Everything that can be wrong with a set is checked here, once, with a message that
says what to do: emptiness, NaN/Inf, dtype, shape against the model, label range.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataError

_FLOAT_KINDS = "f"
_LABEL_KINDS = "iub"


@dataclass(frozen=True)
class CalibrationSet:
    """Inputs ``x`` (N first), optional labels ``y``, optional stream, and provenance."""

    x: np.ndarray
    y: np.ndarray | None = None
    signal: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: str = "<memory>"
    split: str = "all"
    seed: int | None = None

    @cached_property
    def sha256(self) -> str:
        """The content's hash (x, y), independent of file format and name; made when first asked for (``summary``),
        so ``measure_drift`` hashes the set in a thread of its pass, not before it (9 ms at digits' 5,000 samples)."""
        h = hashlib.sha256()
        for arr in (self.x, self.y):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.reshape(-1).view(np.uint8))  # the bytes tobytes() gives, without copying them
        return h.hexdigest()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def label_counts(self) -> dict[int, int]:
        if self.y is None:
            return {}
        vals, counts = np.unique(self.y, return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}

    def batches(self, batch_size: int):
        """Yield (start, x_batch) over the set in order."""
        for i in range(0, len(self), batch_size):
            yield i, self.x[i:i + batch_size]

    def subset(self, idx: np.ndarray, split: str) -> "CalibrationSet":
        return replace(self, x=self.x[idx], y=None if self.y is None else self.y[idx],
                       signal=None, labels=None, split=split)

    def split_holdout(self, fraction: float = 0.5, seed: int = 0) -> tuple["CalibrationSet", "CalibrationSet"]:
        """Disjoint (calibration, holdout) split, stratified by label when labels exist."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"holdout fraction {fraction} must be between 0 and 1")
        if len(self) < 2:
            raise DataError(f"{self.source} has {len(self)} sample(s): at least 2 are needed to split "
                            "into calibration and holdout")
        rng = np.random.default_rng(seed)
        groups = [np.arange(len(self))] if self.y is None else [np.flatnonzero(self.y == c) for c in np.unique(self.y)]
        hold = []
        for g in groups:
            g = rng.permutation(g)
            hold.extend(g[:int(round(len(g) * fraction))])
        mask = np.zeros(len(self), bool)
        mask[hold] = True
        cal, ho = np.flatnonzero(~mask), np.flatnonzero(mask)
        if len(cal) == 0 or len(ho) == 0:
            raise DataError(f"{self.source}: a {fraction:.0%} holdout split leaves one side empty; use more samples")
        return (replace(self.subset(cal, "calibration"), seed=seed),
                replace(self.subset(ho, "holdout"), seed=seed))

    def summary(self) -> dict:
        d = {"source": self.source, "split": self.split, "n": len(self), "x_shape": list(self.x.shape[1:]),
             "x_dtype": str(self.x.dtype), "sha256": self.sha256}
        if self.y is not None:
            d["label_counts"] = {str(k): v for k, v in self.label_counts().items()}
        if self.signal is not None:
            d["stream_length"] = int(self.signal.shape[0])
        return d


def _check_finite(name: str, arr: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise DataError(f"{source}: {name} has {int(bad.sum())} NaN/Inf value(s), the first at index "
                        f"{tuple(int(i) for i in first)}; remove or impute them")


def _as_labels(name: str, arr: np.ndarray, n: int, source: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        _check_finite(name, arr, source)
        if not np.all(arr == np.round(arr)):
            raise DataError(f"{source}: {name} holds non-integer values; labels must be class ids 0..K-1")
    elif arr.dtype.kind not in _LABEL_KINDS:
        raise DataError(f"{source}: {name} has dtype {arr.dtype}; labels must be integer class ids")
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{source}: {name} has {arr.shape[0]} entries but there are {n} samples; they must match")
    if n and arr.min() < 0:
        raise DataError(f"{source}: {name} has negative value {int(arr.min())}; labels must be class ids 0..K-1")
    return arr.astype(np.int64)


def _read_csv(p: Path) -> dict[str, np.ndarray]:
    import csv

    with p.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{p} is empty: it must hold one sample per row")
    header = [h.strip() for h in rows[0]]
    has_header = any(not _is_number(h) for h in header)
    body = [r for r in (rows[1:] if has_header else rows) if r]
    if not body:
        raise DataError(f"{p} has a header but no rows: it must hold one sample per row")
    try:
        table = np.array([[float(v) for v in r] for r in body], dtype=np.float64).reshape(len(body), -1)
    except ValueError:
        raise DataError(f"{p}: a value is not a number; the CSV must hold numbers only (and a header)") from None
    label_col = next((i for i, h in enumerate(header) if h.lower() in ("y", "label")), None) if has_header else None
    out = {"x": np.delete(table, label_col, axis=1) if label_col is not None else table}
    if label_col is not None:
        out["y"] = table[:, label_col]
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_calibration(path: str | Path) -> CalibrationSet:
    """Read and check a calibration/holdout set; raises ``DataError`` with a one-line reason."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p}: no such file; check the path")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix == ".npy":
            arrays = {"x": np.load(p, allow_pickle=False)}
        elif suffix == ".csv":
            arrays = _read_csv(p)
        else:
            raise DataError(f"data file {p}: unknown format {suffix!r}; use .npz (x, y), .npy or .csv")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"data file {p} cannot be read ({type(exc).__name__}): is it a valid {suffix} file?") from None
    if "x" not in arrays:
        raise DataError(f"{p} has no array 'x' (found: {', '.join(sorted(arrays)) or 'none'}); "
                        "store the model inputs as x, batch first")
    x = np.asarray(arrays["x"])
    if x.dtype.kind not in _FLOAT_KINDS + "iu":
        raise DataError(f"{p}: x has dtype {x.dtype}; inputs must be numbers as the float model takes them")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{p}: x is empty (shape {list(x.shape)}); the set needs at least one sample")
    _check_finite("x", x, str(p))
    n = x.shape[0]
    y = _as_labels("y", arrays["y"], n, str(p)) if "y" in arrays else None
    signal = labels = None
    if "signal" in arrays:
        signal = np.asarray(arrays["signal"])
        if signal.dtype.kind not in _FLOAT_KINDS + "iu" or signal.shape[0] == 0:
            raise DataError(f"{p}: signal must be a non-empty numeric array (T[, C])")
        _check_finite("signal", signal, str(p))
        if "labels" in arrays:
            labels = _as_labels("labels", arrays["labels"], signal.shape[0], str(p))
    return CalibrationSet(x=x, y=y, signal=signal, labels=labels, source=str(p))


def check_fits(data: CalibrationSet, pair, n_classes: int | None = None) -> CalibrationSet:
    """Check ``data`` against the float model's (single) input; cast x to its float dtype.

    ``n_classes``: if given, labels must lie in [0, n_classes).
    """
    spec = pair.float.inputs[0]
    if len(pair.float.inputs) != 1:
        raise DataError(f"the model has {len(pair.float.inputs)} inputs; tmlrepair supports single-input models")
    want = spec.shape
    got = tuple(data.x.shape[1:])
    fixed = all(isinstance(w, int) and w > 0 for w in want)
    if data.x.ndim == 2 and len(want) > 1 and fixed and got[0] == math.prod(want):
        # flat rows (a CSV, a flattened array) for a model with a multi-dimensional input: each row is one sample
        # in C order, as numpy's ravel() and the firmware's input buffer lay it out
        data = replace(data, x=data.x.reshape(len(data.x), *want))
        got = tuple(want)
    if len(got) != len(want) or any(not isinstance(w, str) and w != g for w, g in zip(want, got)):
        raise DataError(f"{data.source}: samples have shape {list(got)} but the model input {spec.name!r} takes "
                        f"{list(want)} ({math.prod(w for w in want if isinstance(w, int))} values per sample); "
                        f"reshape x to (N, {', '.join(map(str, want))})")
    if data.x.dtype.kind != "f":
        raise DataError(f"{data.source}: x has dtype {data.x.dtype} but the float model takes {spec.dtype}; "
                        "give inputs as real values (dequantized), as the float model takes them")
    if n_classes is not None and data.y is not None and len(data.y) and data.y.max() >= n_classes:
        raise DataError(f"{data.source}: label {int(data.y.max())} is out of range for a model with {n_classes} "
                        f"outputs; labels must be 0..{n_classes - 1}")
    if data.x.dtype != np.dtype(spec.dtype):
        data = replace(data, x=data.x.astype(spec.dtype))
    return data


def random_in_range(pair, n: int, seed: int, source: str = "random") -> CalibrationSet:
    """``n`` inputs drawn uniformly from the int8 model's input grid, as the float model takes them.

    For models that ship without data (MLPerf Tiny's): every int8 level of the input is equally likely,
    so both models see exactly the same values (the float input is the dequantized int8 one).
    """
    spec = pair.int8.inputs[0]
    quant = spec.quant or pair.int8.index.input_quant(spec.name)
    if quant is None:
        raise DataError(f"INT8 input {spec.name!r} has no per-tensor quantization: no range to draw from")
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in pair.float.inputs[0].shape]
    q = np.random.default_rng(seed).integers(quant.qmin, quant.qmax + 1, size=[n, *shape])
    return CalibrationSet(x=quant.dequantize(q).astype(np.float32), source=f"{source} (seed {seed})", seed=seed)
