"""Anomaly scores logged from a device: load and check a CSV or NPZ file.

* CSV: rows ``id,score[,label]``, header optional. Without a label column, ``anomaly_prefix``
  derives labels from ids (DCASE / MLPerf Tiny file names start with ``normal_`` or
  ``anomaly_``).
* NPZ: ``score`` (N,), optional ``label`` (N,), optional ``id``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class ScoreSet:
    ids: list[str]
    score: np.ndarray
    label: np.ndarray | None
    source: str

    def subset(self, idx) -> "ScoreSet":
        idx = np.asarray(idx)
        return ScoreSet([self.ids[i] for i in idx], self.score[idx],
                        None if self.label is None else self.label[idx], self.source)


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def load_scores(path: str | Path, anomaly_prefix: str | None = None) -> ScoreSet:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"scores file {p}: no such file; check the path")
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                if "score" not in z.files:
                    raise DataError(f"{p} has no array 'score' (found: {', '.join(z.files) or 'none'})")
                score = np.asarray(z["score"], np.float64).reshape(-1)
                label = np.asarray(z["label"]).reshape(-1) if "label" in z.files else None
                ids = [str(i) for i in z["id"]] if "id" in z.files else [str(i) for i in range(len(score))]
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{p} cannot be read as .npz ({type(exc).__name__})") from None
    elif p.suffix.lower() == ".csv":
        with p.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        if rows and _number(rows[0][1] if len(rows[0]) > 1 else "") is None:
            rows = rows[1:]  # header
        if not rows:
            raise DataError(f"{p} holds no score rows; expected id,score[,label]")
        if any(len(r) < 2 for r in rows):
            raise DataError(f"{p}: every row needs at least id,score")
        ids = [r[0].strip() for r in rows]
        vals = [_number(r[1]) for r in rows]
        if any(v is None for v in vals):
            bad = next(i for i, v in enumerate(vals) if v is None)
            raise DataError(f"{p}: score {rows[bad][1]!r} on data row {bad + 1} is not a number")
        score = np.array(vals, np.float64)
        label = None
        if all(len(r) >= 3 for r in rows):
            labs = [_number(r[2]) for r in rows]
            if any(v is None or v not in (0.0, 1.0) for v in labs):
                raise DataError(f"{p}: labels must be 0 (normal) or 1 (anomaly)")
            label = np.array(labs, np.int64)
    else:
        raise DataError(f"scores file {p}: use .csv (id,score[,label]) or .npz (score[, label])")
    if score.size == 0:
        raise DataError(f"{p} holds no scores")
    bad = ~np.isfinite(score)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{p}: {int(bad.sum())} score(s) are NaN/Inf, the first for id {ids[first]!r}; "
                        "drop or fix them before fitting")
    if label is None and anomaly_prefix:
        label = np.array([i.startswith(anomaly_prefix) for i in ids], np.int64)
    if label is not None and label.shape != score.shape:
        raise DataError(f"{p}: {len(label)} labels for {len(score)} scores")
    if label is not None and not np.isin(label, (0, 1)).all():
        raise DataError(f"{p}: labels must be 0 (normal) or 1 (anomaly)")
    return ScoreSet(ids, score, None if label is None else label.astype(np.int64), str(p))


ANOMALY_WORDS = ("anomaly", "abnormal", "anomalous", "fault")


def unlabelled_anomaly_warning(scores: ScoreSet) -> str | None:
    """Scores without labels whose ids name anomalies (DCASE/MLPerf Tiny ``anomaly_id_01_….wav``): fitting a
    false-alarm rate over them treats anomalies as normal data. A one-line warning saying how to label, or None."""
    if scores.label is not None:
        return None
    prefixes = sorted({w for i in scores.ids for w in ANOMALY_WORDS if i.lower().startswith(w)})
    if not prefixes:
        return None
    n = sum(any(i.lower().startswith(w) for w in ANOMALY_WORDS) for i in scores.ids)
    return (f"{scores.source}: {n} of {len(scores.ids)} ids start with {prefixes[0]!r} but the scores have no "
            f"labels, so they are fitted as normal data; pass --anomaly-prefix {prefixes[0]} to label them "
            "(or add a label column)")
