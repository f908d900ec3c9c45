"""A labelled keyword stream: a device's int8 posteriors over time, and the utterances in it.

``.npz`` with ``scores`` (T, K) int8 posteriors (the model's output integers, one row per inference),
``times_ms`` (T,) increasing inference times in milliseconds, and ``events`` (E, 3) rows
(start_ms, end_ms, label) of the utterances spoken in it (labels are class indices of the model). Optional
``duration_ms`` (the stream's length; default the span of ``times_ms``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class KeywordStream:
    scores: np.ndarray  # (T, K) int64 holding int8
    times_ms: np.ndarray  # (T,) int64, strictly increasing
    events: np.ndarray  # (E, 3) int64
    duration_ms: float
    source: str

    def __len__(self) -> int:
        return int(len(self.times_ms))

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for a in (self.scores, self.times_ms, self.events):
            h.update(np.ascontiguousarray(a, np.int64).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        return {"source": self.source, "steps": int(len(self.times_ms)), "classes": self.num_classes,
                "utterances": int(len(self.events)), "hours": self.duration_ms / 3.6e6, "sha256": self.sha256}

    def window_capacity(self, window_ms: int) -> int:
        """The most results one averaging window of ``window_ms`` holds on this stream (the C ring's size)."""
        t = self.times_ms
        return int(np.max(np.arange(1, len(t) + 1) - np.searchsorted(t, t - window_ms, side="left")))


def load_stream(path: str | Path) -> KeywordStream:
    """Read and check a keyword stream file (module docstring); DataError names what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"stream file {p}: no such file; check the path")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("scores", "times_ms", "events") if k not in z.files]
            if missing:
                raise DataError(f"{p} has no array {', '.join(repr(m) for m in missing)} (found: "
                                f"{', '.join(z.files) or 'none'}): a stream needs scores, times_ms and events")
            scores, times, events = (np.asarray(z[k]) for k in ("scores", "times_ms", "events"))
            duration = float(np.asarray(z["duration_ms"]).reshape(-1)[0]) if "duration_ms" in z.files else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{p} cannot be read as .npz ({type(exc).__name__}): write it with numpy.savez") from None
    for name, a in (("scores", scores), ("times_ms", times), ("events", events)):
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{p}: {name} must be integers (the device's int8 outputs, times and labels in ms), "
                            f"got {a.dtype}")
    if scores.ndim != 2 or scores.shape[1] < 1 or len(scores) < 2:
        raise DataError(f"{p}: scores must be (steps ≥ 2, classes), got shape {list(scores.shape)}")
    if scores.min() < -128 or scores.max() > 127:
        raise DataError(f"{p}: scores must be int8 posteriors (−128..127), found {scores.min()}..{scores.max()}")
    if times.shape != (len(scores),) or np.any(np.diff(times.astype(np.int64)) <= 0):
        raise DataError(f"{p}: times_ms must be one strictly increasing time per step ({len(scores)})")
    if np.abs(times).max() >= 2 ** 31:
        raise DataError(f"{p}: times_ms must fit in int32 milliseconds (the device's clock)")
    events = events.reshape(-1, 3) if events.size else np.zeros((0, 3), np.int64)
    if events.ndim != 2 or events.shape[1] != 3 or np.any(events[:, 1] < events[:, 0]):
        raise DataError(f"{p}: events must be rows (start_ms, end_ms, label) with end ≥ start")
    if len(events) and (events[:, 2].min() < 0 or events[:, 2].max() >= scores.shape[1]):
        raise DataError(f"{p}: event labels must be class indices 0..{scores.shape[1] - 1}")
    span = float(times[-1] - times[0])
    if duration is not None and not (np.isfinite(duration) and duration >= span > 0):
        raise DataError(f"{p}: duration_ms {duration} must be at least the span of times_ms ({span:g})")
    return KeywordStream(scores.astype(np.int64), times.astype(np.int64), events.astype(np.int64),
                         duration if duration is not None else span, str(p))
