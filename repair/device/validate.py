"""validate: a plan's shims on the device against the Python reference, bit for bit, with the task metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..data import CalibrationSet, check_fits
from ..errors import DataError
from ..models import check_one_network, load_pair
from ..plan.plan import RepairPlan
from . import session as S
from .calibrate import DeviceRun, judge_on_device
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
                 progress=None, check_weights: bool = True) -> DeviceRun:
    """Run ``plan``'s shims on the device over ``data``; the models default to those the plan was fitted on."""
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
        return run
