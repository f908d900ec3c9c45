"""validate: a plan's shims on the device against the Python reference, bit for bit, with the task metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import metrics as M
from ..data import CalibrationSet, check_fits
from ..data.stream import KeywordStream
from ..errors import DataError
from ..models import check_one_network, load_pair
from ..plan.fit_stream import LATENCY_MS
from ..plan.plan import RepairPlan
from ..plan.shims import shim_from_plan
from . import session as S
from .calibrate import SCHEMA, DeviceRun, judge_on_device
from .diagnose import diagnose_differing
from .link import DeviceLink


def model_path(plan: RepairPlan, role: str, given: Path | None) -> Path:
    named = (plan.provenance.get("models") or {}).get(role) or {}
    path = Path(given) if given is not None else Path(named.get("path", ""))
    if given is None and not path.is_absolute() and plan.origin is not None and (plan.origin / path).is_file():
        path = plan.origin / path  # a repaired model written beside plan.json
    if not path.is_file():
        raise DataError(f"the {role} model {str(path) or '(not named in the plan)'} was not found: "
                        f"pass --{role} PATH")
    return path


def run_validate(link: DeviceLink, plan: RepairPlan, data: CalibrationSet, *, float_path: Path | None = None,
                 int8_path: Path | None = None, out_dir: Path | None = None, resume: bool = False,
                 progress=None, check_weights: bool = True, program=None) -> DeviceRun:
    """Run ``plan``'s shims on the device over ``data``; the models default to those the plan was fitted on.
    ``program``: the integer program the firmware runs (sim, qemu): its outputs are checked against the device's,
    and a difference is diagnosed (the layer, the cause)."""
    pair = load_pair(model_path(plan, "float", float_path), model_path(plan, "int8", int8_path))
    fitted = (plan.provenance.get("models") or {}).get("int8", {}).get("sha256")
    if fitted and fitted != pair.int8.sha256:
        raise DataError(f"{pair.int8.path} is not the int8 model the plan was fitted on (sha256 differs): "
                        f"validate with that model (by default the one the plan names), or refit the plan")
    n_classes = pair.float.outputs[0].shape[0] if plan.task == "classifier" else None
    data = check_fits(data, pair, n_classes)
    if check_weights:
        check_one_network(pair, data.x)
    if data.y is None:
        raise DataError(f"{data.source} has no labels (y): validation reports the task metrics, it needs them")
    hello = link.hello()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out_dir or scratch)
        r = S.raw_outputs(link, hello, pair, data, phase="validate-raw", journal_dir=folder, resume=resume,
                          progress=progress)
        run = judge_on_device(link, hello, pair, plan, data, r["z"], r["q"], r["source"], folder, resume=resume,
                              progress=progress, command="validate")
        if hello.has_model:
            run.report["drift"]["device_vs_host_int8"] = S.device_vs_host(r["q"], r["host_q"],
                                                                          plan.task == "classifier")
            r["journal"].remove()
            if program is not None:
                diagnosis = diagnose_differing(link, program, r["inputs"], r["q"])
                if diagnosis:
                    run.report["diagnosis"] = diagnosis
        return run


def run_validate_stream(link: DeviceLink, plan: RepairPlan, stream: KeywordStream, *, out_dir: Path | None = None,
                        resume: bool = False, progress=None) -> DeviceRun:
    """A keyword_stream plan's recognizer on the device over a labelled stream of int8 posteriors: every step's
    label, score and new-command flag against the twin, and the false accepts per hour and false rejects of the
    device's own detections."""
    shim = shim_from_plan(plan)
    if stream.num_classes != shim.num_classes:
        raise DataError(f"{stream.source} has {stream.num_classes} classes, the plan's recognizer {shim.num_classes}")
    need = stream.window_capacity(shim.window_ms)
    if need > shim.capacity:
        raise DataError(f"{stream.source} puts up to {need} results in one {shim.window_ms} ms window; the plan's "
                        f"ring holds {shim.capacity} (fitted on a slower stream): refit on a stream at this rate")
    hello = link.hello()
    sha = plan.sha256()
    values = np.column_stack([stream.scores, stream.times_ms])
    with tempfile.TemporaryDirectory() as scratch:
        device, recoveries = S.run_on_device(link, hello, shim, sha, values,
                                             journal_path=Path(out_dir or scratch) / ".journal-stream.jsonl",
                                             identity=S.identity("validate-stream", sha, stream, hello),
                                             resume=resume, progress=progress)
    reference = shim.run(values)
    fired = np.asarray(device["fired"]).astype(bool)
    rates = M.stream_detection_rates(stream.times_ms[fired], np.asarray(device["label"])[fired], stream.events,
                                     shim.keyword, stream.duration_ms, LATENCY_MS)
    report = {"schema": SCHEMA, "command": "validate",
              "device": {"board": hello.board, "url": link.name, "describe": hello.describe()},
              "plan_sha256": sha, "stream": stream.summary(), "bit_exact": S.bit_exact(device, reference),
              "detections": {k: int((np.asarray(o["fired"]).astype(bool) & (np.asarray(o["label"]) == shim.keyword)).sum())
                             for k, o in (("device", device), ("twin", reference))},
              "stream_rates": rates, "target_fa_per_hour": plan.provenance.get("target_fa_per_hour"),
              "link": {**vars(link.stats), "device_restarts_survived": recoveries}}
    return DeviceRun(plan, report)
