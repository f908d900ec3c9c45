"""A per-sample journal of device results, so an interrupted run resumes without losing or repeating one.

JSON lines: a header ``{"journal": "tmlrepair.journal/1", "identity": {...}}``, then one line per
sample ``{"i": index, "out": {name: [values]}}``, flushed and fsynced after every batch. On resume the
header must match the run (same plan, data, device and phase); a last line cut short by the interruption
is dropped and the file truncated to the last complete line. Samples are recorded in order, so the
journal always holds a prefix 0..k-1 of the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

SCHEMA = "tmlrepair.journal/1"


class Journal:
    def __init__(self, path: str | Path, identity: dict, *, resume: bool):
        self.path = Path(path)
        self.identity = identity
        self.records: list[dict[str, list]] = []
        if self.path.exists():
            if not resume:
                raise DataError(f"{self.path} holds an unfinished run: pass --resume to continue it, "
                                f"or delete it to start over")
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as f:
                f.write(json.dumps({"journal": SCHEMA, "identity": identity}, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        lines = raw.split(b"\n")
        for n, line in enumerate(lines[:-1]):  # the text after the last newline is a torn write
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if n == 0:
                if rec.get("journal") != SCHEMA or rec.get("identity") != self.identity:
                    raise DataError(f"{self.path} belongs to another run (other plan, data, device or phase): "
                                    f"delete it or write to another output folder")
            elif rec.get("i") != len(self.records):
                break
            else:
                self.records.append(rec["out"])
            good_end += len(line) + 1
        if good_end == 0:
            raise DataError(f"{self.path} is not a tmlrepair journal: delete it")
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    @property
    def done(self) -> int:
        return len(self.records)

    def record(self, start: int, outputs: dict[str, np.ndarray]) -> None:
        """Append samples start, start+1, ... (start must be the next one); durable when this returns."""
        if start != self.done:
            raise ValueError(f"journal holds {self.done} samples, cannot record from {start}")
        n = len(next(iter(outputs.values())))
        lines = []
        for j in range(n):
            out = {k: np.asarray(v[j]).tolist() for k, v in outputs.items()}
            lines.append(json.dumps({"i": start + j, "out": out}, separators=(",", ":")))
            self.records.append(out)
        with open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def outputs(self) -> dict[str, np.ndarray]:
        if not self.records:
            return {}
        return {k: np.array([r[k] for r in self.records]) for k in self.records[0]}

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def journaled_samples(path: str | Path) -> int:
    """How many complete sample lines a journal holds (0 if unreadable): for the message after Ctrl-C."""
    try:
        lines = Path(path).read_bytes().split(b"\n")[:-1]
    except OSError:
        return 0
    return max(0, len(lines) - 1)
