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
from ..models import ModelPair
from ..models.task import anomaly_scores, detect_task
from ..plan.fit import fit_plan
from ..plan.model_file import (
    ModelFile,
    input_pre_shim,
    int8_input_change,
    repaired_model_file,
)
from ..plan.plan import RepairPlan
from ..plan.shims import AnomalyShim, ClassifierShim, shim_from_plan
from ..repairs import ScoreThreshold
from . import protocol as P
from . import session as S
from .diagnose import diagnose_differing
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
        model = self.report.get("model_on_device", {}).get("bit_exact_vs_python_reference", {"differ": 0})
        score = self.report.get("score_on_device", {})
        return (self.report["bit_exact"]["differ"] == 0 and model["differ"] == 0 and score.get("differ", 0) == 0
                and score.get("alarms_differ", 0) == 0)


def run_calibrate(link: DeviceLink, pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, out_dir: Path,
                  *, repairs: tuple[str, ...] | None = None, target_far: float = 0.01, anomaly_far: float = 0.1,
                  anomaly_boundary: str = "threshold", window: int = 32, resume: bool = False, program=None,
                  instructions_per_tick: int | None = None, progress=None, pre_shim: dict | None = None) -> DeviceRun:
    """``program``: the integer program the device's firmware was built from (repair.program), to check the
    device's model bit for bit; ``instructions_per_tick``: for QEMU -icount, to report instructions;
    ``pre_shim``: the model's input pre-shim, which the firmware runs in C on raw readings."""
    hello = link.hello()
    rc, rh = (S.raw_outputs(link, hello, pair, data, phase=phase, journal_dir=out_dir, resume=resume,
                            progress=progress, pre_shim=pre_shim)
              for data, phase in ((calib, "calib-raw"), (holdout, "holdout-raw")))
    plan = fit_plan(pair, calib, holdout, repairs=repairs, target_far=target_far, anomaly_far=anomaly_far,
                    anomaly_boundary=anomaly_boundary, window=window, raw_outputs=(rc["q"], rh["q"]),
                    source=rh["source"])
    run = judge_on_device(link, hello, pair, plan, holdout, rh["z"], rh["q"], rh["source"], out_dir, resume=resume,
                          progress=progress, calib=calib, command="calibrate")
    if hello.has_model:
        run.report["model_on_device"] = _model_report(rc, rh, plan.task == "classifier", program,
                                                      hello.counter_hz, instructions_per_tick)
        if pre_shim is not None and hello.capabilities & P.CAP_PRE_SHIM:
            run.report["model_on_device"]["input"] = (f"raw int16 readings ({pre_shim['features']} per sample) "
                                                      "through the input pre-shim in C")
        differ = run.report["model_on_device"].get("bit_exact_vs_python_reference", {}).get("differ", 0)
        if program is not None and differ:  # the device's model departs from the program: find the layer and why
            diagnosis = diagnose_differing(link, program, np.concatenate([rc["inputs"], rh["inputs"]]),
                                           np.concatenate([r["q"].reshape(len(r["q"]), -1) for r in (rc, rh)]))
            if diagnosis:
                run.report["diagnosis"] = diagnosis
        run.report["drift"]["device_vs_host_int8"] = run.report["model_on_device"]["device_vs_onnxruntime"]
        for r in (rc, rh):
            r["journal"].remove()
    return run


@dataclass
class InModelRepair:
    """The in-model repairs ``calibrate`` fitted before talking to the device: the repaired model (as the file to
    deploy, and as a pair loaded from a scratch copy, for the firmware and the host runs) and what each did."""

    pair: ModelPair
    file: ModelFile  # repaired_int8.onnx, or repaired_int8.tflite for a .tflite model
    result: object  # repair.repairs.in_model.InModelResult

    def pre_shim(self, reading_lsb=1.0) -> dict | None:
        """The repaired model's input pre-shim with its integer C form for readings worth ``reading_lsb``, when the
        firmware can run it (features last); else None (the host then pre-shims and quantizes)."""
        record = input_pre_shim(self.result.model, reading_lsb)
        return record if record and "integer" in record and record["features_last"] else None

    def record(self, run: DeviceRun, original: ModelPair, reading_lsb=1.0) -> None:
        """Into the run's plan and report: the repaired model the after-model repairs were fitted on."""
        run.plan.fitted_on(self.file.data, path=self.file.name,
                           original={"path": str(original.int8.path), "sha256": original.int8.sha256})
        model = {"path": self.file.name, "sha256": self.file.sha256}
        run.plan.in_model = {**self.result.to_dict(), "model": model}
        for key, value in (("input_pre_shim", input_pre_shim(self.result.model, reading_lsb)),
                           ("int8_input_changed", int8_input_change(original, self.result.model))):
            if value is not None:
                run.plan.in_model[key] = value
        h = self.result.holdout
        run.report["in_model"] = {"kept": self.result.kept, "metric": h["metric"], "int8": h["int8"],
                                  "repaired": h["repaired"], "judged_on": h.get("judged_on"),
                                  "decided_by": h.get("decided_by"), "folds": h.get("folds"), "model": model}
        m = run.report.get("metrics", {})
        if h["metric"] == "accuracy" and "accuracy" in m.get("float", {}):
            # the gap is the one the user had: the int8 model as given (program = device) to float
            f, start, end = m["float"]["accuracy"], h["int8"], m["device_shims"]["accuracy"]
            m["int8_as_given"] = {"accuracy": start}
            m["gap_recovered"] = (end - start) / (f - start) if f - start > 1e-12 else None


def repair_in_model(pair: ModelPair, calib: CalibrationSet, holdout: CalibrationSet, scratch: Path,
                    progress: bool = False, repairs: tuple[str, ...] | None = None) -> InModelRepair:
    """Fit the in-model repairs on the integer program (= the reference device's arithmetic) and load the repaired
    model as a pair (written to ``scratch``), so the firmware is rebuilt from it and the shims fitted on it."""
    from ..models import load_pair
    from ..repairs.in_model import fit_in_model

    result = fit_in_model(pair, calib, holdout, repairs=repairs, progress=progress)
    file = repaired_model_file(pair, result.model, holdout.x)
    path = scratch / file.name
    path.write_bytes(file.data)
    return InModelRepair(load_pair(pair.float.path, path), file, result)


def judge_on_device(link, hello, pair: ModelPair, plan: RepairPlan, holdout: CalibrationSet, zh: np.ndarray,
                    qh: np.ndarray, source: str, out_dir: Path, *, resume: bool, progress, command: str,
                    calib: CalibrationSet | None = None) -> DeviceRun:
    """Steps 5–6: the holdout through the device's shims, against the reference, with metrics."""
    shim = shim_from_plan(plan)
    sha = plan.sha256()
    score_report = None
    if isinstance(shim, AnomalyShim) and shim.recon is not None and hello.has_model:
        # the whole anomaly path on the device: model and score in INFER, then its threshold or window below
        values, score_report = S.scores_on_device(link, hello, pair, shim, sha, holdout, journal_dir=out_dir,
                                                  resume=resume, progress=progress)
    else:
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
              **({"score_on_device": score_report} if score_report else {}),
              "link": {**vars(link.stats), "device_restarts_survived": recoveries}}
    if isinstance(shim, ClassifierShim):
        report["metrics"] = S.classifier_metrics(holdout.y, zf, zh, qh, plan.provenance["int8_output_quant"]["scale"],
                                                 device)
    else:
        sf = anomaly_scores(task, holdout.x, zf)
        sr = (values * shim.score_scale if shim.recon is not None  # the integer score the device computes
              else anomaly_scores(task, holdout.x, zh))
        before = _float_threshold(pair, task, calib, plan) if calib is not None else None
        target = next((r.params["target_far"] for r in plan.kept() if "target_far" in r.params), None)
        report["metrics"] = S.anomaly_metrics(holdout.y, sf, sr, device, before, shim.window or 0, target)
    return DeviceRun(plan, report)


def _model_report(rc: dict, rh: dict, classifier: bool, program, hz: int, per_tick: int | None) -> dict:
    q_dev = np.concatenate([rc["q"].reshape(len(rc["q"]), -1), rh["q"].reshape(len(rh["q"]), -1)])
    q_host = np.concatenate([r["host_q"].reshape(len(r["host_q"]), -1) for r in (rc, rh)])
    ticks = np.concatenate([rc["model_ticks"], rh["model_ticks"]])
    out = {"samples": int(len(q_dev)), "device_vs_onnxruntime": S.device_vs_host(q_dev, q_host, classifier),
           "counter_ticks_per_inference_median": float(np.median(ticks)), "counter_hz": hz,
           "device_restarts_survived": rc["recoveries"] + rh["recoveries"]}
    if per_tick:
        out["instructions_per_inference"] = int(np.median(ticks)) * per_tick
    if program is not None:
        want = np.concatenate([program.run(r["inputs"]).reshape(len(r["inputs"]), -1) for r in (rc, rh)])
        differ = np.flatnonzero((want.astype(np.int64) != q_dev).any(axis=1))
        out["bit_exact_vs_python_reference"] = {"samples": int(len(q_dev)), "differ": int(len(differ)),
                                                "first_differing": differ[:10].tolist()}
    return out


def _float_threshold(pair: ModelPair, task: str, calib: CalibrationSet, plan: RepairPlan) -> float:
    """The threshold one would ship without tmlrepair: fitted on the float model's calib scores."""
    far = next((r.params["target_far"] for r in plan.kept() if "target_far" in r.params), 0.1)
    s = anomaly_scores(task, calib.x, S.float_outputs(pair, calib.x))
    return float(ScoreThreshold(far).fit(s, calib.y).threshold_)
