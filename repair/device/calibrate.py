"""calibrate: fit the after-model repairs on a device's own outputs, upload them, judge them on the device.

1. hello: what the device is and whether it runs the model;
2. raw outputs on the calibration and holdout splits (the device's, or onnxruntime's on shim-only firmware);
3. drift of those outputs against the float model;
4. fit_plan on them (fit on calib, judge on holdout, as always);
5. set-params, then the holdout through the device's shims (journaled: ``resume`` continues a cut run);
6. the device's outputs against the Python reference, bit for bit, and the metrics before and after;
7. the plan, a report, and the final C (``emit``) into the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import CalibrationSet
from ..drift.measure import anomaly_scores, detect_task
from ..fitting import fit_plan
from ..models import ModelPair
from ..plan import RepairPlan
from ..repairs import ScoreThreshold
from ..shims import ClassifierShim, shim_from_plan
from . import session as S
from .link import DeviceLink

SCHEMA = "tmlrepair.device_run/1"
JOURNAL = ".journal-holdout.jsonl"


@dataclass
class DeviceRun:
    """What calibrate (or validate) found: JSON-ready ``report`` and the plan it ran."""

    plan: RepairPlan
    report: dict

    @property
    def bit_exact(self) -> bool:
        return self.report["bit_exact"]["differ"] == 0


def run_calibrate(link: DeviceLink, pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, out_dir: Path,
                  *, repairs: tuple[str, ...] | None = None, target_far: float = 0.01, anomaly_far: float = 0.1,
                  anomaly_boundary: str = "threshold", window: int = 32, resume: bool = False,
                  progress=None) -> DeviceRun:
    hello = link.hello()
    zc, qc, source = S.raw_outputs(pair, calib, hello)
    zh, qh, _ = S.raw_outputs(pair, holdout, hello)
    plan = fit_plan(pair, calib, holdout, repairs=repairs, target_far=target_far, anomaly_far=anomaly_far,
                    anomaly_boundary=anomaly_boundary, window=window, raw_outputs=(qc, qh), source=source)
    return judge_on_device(link, hello, pair, plan, holdout, zh, qh, source, out_dir, resume=resume,
                           progress=progress, calib=calib, command="calibrate")


def judge_on_device(link, hello, pair: ModelPair, plan: RepairPlan, holdout: CalibrationSet, zh: np.ndarray,
                    qh: np.ndarray, source: str, out_dir: Path, *, resume: bool, progress, command: str,
                    calib: CalibrationSet | None = None) -> DeviceRun:
    """Steps 5–6: the holdout through the device's shims, against the reference, with metrics."""
    shim = shim_from_plan(plan)
    sha = plan.sha256()
    values = S.shim_values(pair, shim, holdout, zh, qh)
    device, recoveries = S.run_on_device(link, hello, shim, sha, values, journal_path=out_dir / JOURNAL,
                                         identity=S.identity(command, sha, holdout, hello), resume=resume,
                                         progress=progress)
    reference = shim.run(values)
    task = detect_task(pair)
    zf = S.float_outputs(pair, holdout.x)
    report = {"schema": SCHEMA, "command": command, "device": {"board": hello.board, "url": link.name,
                                                               "describe": hello.describe()},
              "raw_outputs_from": source, "plan_sha256": sha, "holdout": holdout.summary(),
              "drift": {"device_vs_float": S.output_drift(task, zf, zh),
                        "device_vs_host_int8": None if not hello.has_model else {}},
              "bit_exact": S.bit_exact(device, reference),
              "link": {**vars(link.stats), "device_restarts_survived": recoveries}}
    if isinstance(shim, ClassifierShim):
        report["metrics"] = S.classifier_metrics(holdout.y, zf, zh, qh, plan.provenance["int8_output_quant"]["scale"],
                                                 device)
    else:
        sf, sr = anomaly_scores(task, holdout.x, zf), anomaly_scores(task, holdout.x, zh)
        before = _float_threshold(pair, task, calib, plan) if calib is not None else None
        report["metrics"] = S.anomaly_metrics(holdout.y, sf, sr, device, before, shim.window or 0)
    return DeviceRun(plan, report)


def _float_threshold(pair: ModelPair, task: str, calib: CalibrationSet, plan: RepairPlan) -> float:
    """The threshold one would ship without tmlrepair: fitted on the float model's calib scores."""
    far = next((r["params"]["target_far"] for r in plan.kept() if "target_far" in r["params"]), 0.1)
    s = anomaly_scores(task, calib.x, S.float_outputs(pair, calib.x))
    return float(ScoreThreshold(far).fit(s, calib.y).threshold_)
