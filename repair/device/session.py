"""What calibrate and validate share: raw outputs, running the shims on the device, and judging them.

Raw outputs come from the device when its firmware runs the model (hello reports a model), else from
onnxruntime on the host ("shim-only": the device applies the shims to the int8 outputs it is sent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics as M
from ..data import CalibrationSet
from ..errors import DeviceError
from ..models import ModelPair
from ..models.task import anomaly_scores, detect_task
from ..plan.fit import int8_outputs
from ..plan.shims import ClassifierShim
from . import protocol as P
from .journal import Journal
from .link import DeviceLink
from .protocol import Hello
from .stream import InferStream, ShimStream, shim_inputs


def float_outputs(pair: ModelPair, x: np.ndarray) -> np.ndarray:
    return pair.run_batched(pair.float.session(()), x, int8=False).astype(np.float64)


def device_inputs(pair: ModelPair, data: CalibrationSet, hello: Hello) -> np.ndarray:
    """The int8 inputs the device's model takes: the int8 model's feed, quantized with the device's input
    parameters where the model quantizes a float input itself; one flattened row per sample."""
    feed = pair.int8_input_integers(data.x, hello.model_input)
    if feed.shape[1] != hello.model_input.size:
        raise DeviceError(f"the device's model takes {hello.model_input.size} inputs, this model "
                          f"{feed.shape[1]}: flash the firmware built for this model (or use --shim-only)")
    return feed


def check_io(hello: Hello, pair: ModelPair) -> None:
    """The I/O glue, before any sample: the firmware's input and output quantization (from hello) must be the model
    file's. A zero point off by 128 (uint8 glue), a wrong scale or size is named in one line (DeviceError)."""
    import math

    ix = pair.int8.index
    want = {"input": ix.input_quant(pair.int8.inputs[0].name) or pair.int8.inputs[0].quant,
            "output": pair.int8.outputs[0].quant}
    for role, info in (("input", hello.model_input), ("output", hello.model_output)):
        q = want[role]
        if q is None or info is None:
            continue
        if info.zero_point != q.zero_point:
            raise DeviceError(f"the firmware quantizes its {role} with zero point {info.zero_point}; the model expects "
                              f"{q.zero_point}" + (" (uint8 glue code on an int8 model?)"
                                                   if abs(info.zero_point - q.zero_point) == 128 else "")
                              + ": fix the firmware's quantization of the model's " + role + ", or flash the firmware "
                              "built for this model")
        if not math.isclose(info.scale, q.scale, rel_tol=1e-6):
            raise DeviceError(f"the firmware's {role} scale is {info.scale:.9g}; the model's is {q.scale:.9g}: fix the "
                              f"firmware's {role} quantization, or flash the firmware built for this model")


def pre_shim_readings(pre_shim: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sensor's int16 readings of float inputs ``x`` (r = round(x / lsb), saturated), and the int8 inputs the
    device's C pre-shim makes of them (its twin, ``fixedpoint.input_pre_shim_s8``)."""
    from .. import fixedpoint as fp

    lsb = np.asarray(pre_shim["reading_lsb"], np.float64)
    readings = np.clip(np.rint(np.asarray(x, np.float64).reshape(len(x), -1) / lsb), -32768, 32767).astype(np.int16)
    i = pre_shim["integer"]
    q = fp.input_pre_shim_s8(readings, i["multipliers"], i["shifts"], i["offsets"], pre_shim["input_zero_point"])
    return readings, q.astype(np.int8)


def raw_outputs(link: DeviceLink, hello: Hello, pair: ModelPair, data: CalibrationSet, *, phase: str,
                journal_dir: Path | None, resume: bool, progress=None, pre_shim: dict | None = None) -> dict:
    """The int8 model's output on ``data``: the device's when its firmware runs the model, else onnxruntime's.
    ``pre_shim``: the model's input pre-shim (``model_file.input_pre_shim``): a device that has it in C is sent the
    sensor's raw int16 readings and quantizes them itself.

    Returns {"z": dequantized, "q": integers, "source": text, and with a device model: "inputs" (the int8 inputs
    the model ran on), "host_q" (onnxruntime's integers, for device-vs-host drift), "model_ticks", "recoveries"}.
    """
    z_host, q_host = int8_outputs(pair, data.x, runtime="onnxruntime")  # the device is compared with ORT too
    if not hello.has_model:
        return {"z": z_host, "q": q_host, "source": "onnxruntime (shim-only firmware)"}
    check_io(hello, pair)
    raw = pre_shim is not None and bool(hello.capabilities & P.CAP_PRE_SHIM)
    readings, x = pre_shim_readings(pre_shim, data.x) if raw else (None, device_inputs(pair, data, hello))
    out_info = hello.model_output
    if out_info.size != q_host.reshape(len(data), -1).shape[1]:
        raise DeviceError(f"the device's model gives {out_info.size} outputs, this model "
                          f"{q_host.reshape(len(data), -1).shape[1]}: flash the firmware built for this model")
    journal = phase_journal(journal_dir, phase, "", data, hello, resume)
    stream = InferStream(link, out_info.size, journal=journal, progress=progress, raw=raw)
    out = stream.run(readings if raw else x)
    q = np.asarray(out["raw"], np.int64).reshape(q_host.shape)
    z = (q - out_info.zero_point).astype(np.float64) * out_info.scale
    return {"z": z, "q": q, "source": f"the device's model ({hello.board})", "inputs": x, "host_q": q_host,
            "model_ticks": np.asarray(out["model_ticks"]), "recoveries": stream.recoveries, "journal": journal}


def device_vs_host(q_device: np.ndarray, q_host: np.ndarray, classifier: bool) -> dict:
    """How the device's int8 outputs differ from onnxruntime's on the same inputs."""
    d = np.abs(q_device.reshape(len(q_device), -1) - q_host.reshape(len(q_host), -1))
    out = {"equal": float((d == 0).mean()), "within_1_lsb": float((d <= 1).mean()), "max_abs_lsb": int(d.max())}
    if classifier:
        out["top1_agreement"] = float((q_device.reshape(len(d), -1).argmax(1)
                                       == q_host.reshape(len(d), -1).argmax(1)).mean())
    return out


def shim_values(pair: ModelPair, shim, data: CalibrationSet, z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What the shim consumes: the int8 logits, or the anomaly score in int16 (an autoencoder's: computed from its
    int8 input and output, as the device does)."""
    if isinstance(shim, ClassifierShim):
        return q.reshape(len(data), -1)
    if shim.recon is not None:
        return shim.scores(pair.int8_input_integers(data.x), q)
    return shim_inputs(shim, anomaly_scores(detect_task(pair), data.x, z))


def scores_on_device(link: DeviceLink, hello: Hello, pair: ModelPair, shim, plan_sha256: str, data: CalibrationSet,
                     *, journal_dir: Path | None, resume: bool, progress=None) -> tuple[np.ndarray, dict]:
    """An autoencoder's anomaly path on the device: its model and its score in one INFER per sample (and a
    threshold's alarm). Returns the device's int16 scores, and how they compare with the twin's on the device's own
    int8 inputs and outputs (and, for a threshold, the device's alarms with the plan's)."""
    x = device_inputs(pair, data, hello)
    journal = phase_journal(journal_dir, "holdout-scores", plan_sha256, data, hello, resume)
    stream = InferStream(link, hello.model_output.size, shim=shim, params_id=params_id(plan_sha256),
                         journal=journal, progress=progress)
    out = stream.run(x)
    scores = np.asarray(out["score"], np.int64)
    want = shim.scores(x, np.asarray(out["raw"]))
    differ = np.flatnonzero(scores != want)
    report = {"samples": int(len(scores)), "differ": int(len(differ)), "first_differing": differ[:10].tolist(),
              "device_restarts_survived": stream.recoveries}
    if "alarm" in out:
        report["alarms_differ"] = int((np.asarray(out["alarm"]) != shim.run(scores)["alarm"]).sum())
    if journal:
        journal.remove()
    return scores, report


def params_id(plan_sha256: str) -> int:
    """The 32-bit id the device reports for the uploaded parameters: the plan hash's first 8 hex digits."""
    return int(plan_sha256[:8], 16) or 1


def run_on_device(link: DeviceLink, hello: Hello, shim, plan_sha256: str, values: np.ndarray, *,
                  journal_path: Path | None, identity: dict, resume: bool, progress=None
                  ) -> tuple[dict[str, np.ndarray], int]:
    """The device's shim outputs for ``values`` (journaled if a path is given), and how many resets it survived."""
    journal = Journal(journal_path, identity, resume=resume) if journal_path else None
    stream = ShimStream(link, shim, params_id(plan_sha256), max_payload=hello.max_payload, journal=journal,
                        progress=progress)
    out = stream.run(values)
    return out, stream.recoveries


def bit_exact(device: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """Samples where any device output differs from the Python reference (repair.plan.shims)."""
    n = len(next(iter(reference.values())))
    differ = np.zeros(n, bool)
    for k, want in reference.items():
        got = np.asarray(device[k]).reshape(n, -1)
        differ |= (got != np.asarray(want).reshape(n, -1)).any(axis=1)
    idx = np.flatnonzero(differ)
    return {"samples": int(n), "differ": int(len(idx)), "first_differing": idx[:10].tolist()}


def phase_journal(journal_dir: Path | None, phase: str, plan_sha256: str, data, hello: Hello,
                  resume: bool) -> Journal | None:
    """The journal of one phase of a run (``.journal-PHASE.jsonl`` in ``journal_dir``), or None without a folder."""
    if journal_dir is None:
        return None
    return Journal(journal_dir / f".journal-{phase}.jsonl", identity(phase, plan_sha256, data, hello), resume=resume)


def identity(kind: str, plan_sha256: str, data: CalibrationSet, hello: Hello) -> dict:
    return {"phase": kind, "plan_sha256": plan_sha256, "data_sha256": data.sha256, "board": hello.board,
            "samples": len(data)}


def classifier_metrics(y: np.ndarray, z_float: np.ndarray, z_raw: np.ndarray, q_raw: np.ndarray, out_scale: float,
                       device: dict) -> dict:
    """Holdout metrics: float; int8 as a device ships it without repairs (the TFLM int8 softmax of its logits,
    by the Python twin); and the device's shim outputs. Both int8 probability sets have a resolution of 1/256
    and are floored at 1/512 for NLL."""
    from .. import fixedpoint as fp

    q_probs = fp.softmax_s8(q_raw.reshape(len(y), -1), *fp.softmax_params(1.0, out_scale))
    p_raw = M.int8_probabilities(q_probs)
    p_dev = M.int8_probabilities(device["probs"])
    acc_f = float((z_float.argmax(1) == y).mean())
    acc_r = float((z_raw.argmax(1) == y).mean())
    acc_d = float((p_dev.argmax(1) == y).mean())
    out = {"float": {"accuracy": acc_f, "nll": M.nll(M.as_probabilities(z_float), y)},
           "int8": {"accuracy": acc_r, "nll": M.nll(np.maximum(p_raw, M.INT8_PROBABILITY_FLOOR), y), "ece": M.ece(p_raw, y)},
           "device_shims": {"accuracy": acc_d, "nll": M.nll(np.maximum(p_dev, M.INT8_PROBABILITY_FLOOR), y),
                            "ece": M.ece(p_dev, y)},
           "gap_recovered": (acc_d - acc_r) / (acc_f - acc_r) if acc_f - acc_r > 1e-12 else None}
    if "decision" in device:
        rates = M.accept_reject_rates(np.asarray(device["decision"]), y, z_raw.shape[1])
        out["device_shims"]["far_macro"] = rates["far_macro"]
        out["device_shims"]["frr_macro"] = rates["frr_macro"]
    return out


def anomaly_metrics(y: np.ndarray, s_float: np.ndarray, s_raw: np.ndarray, device: dict,
                    before_threshold: float | None, skip: int, target: float | None = None) -> dict:
    """Holdout metrics: AUROC of float and int8 scores; alarm rates of the device's shim and, when given, of
    the float model's threshold applied to the int8 scores (what ships without a refit). The first ``skip``
    samples (the window's warm-up) are left out of the rates."""
    int8 = {"auroc": M.auroc(s_raw, y)}
    if before_threshold is not None:
        int8.update(M.alarm_rates(s_raw[skip:] > before_threshold, y[skip:]))
    out = {"float": {"auroc": M.auroc(s_float, y)}, "int8": int8,
           "device_shims": M.alarm_rates(np.asarray(device["alarm"])[skip:], y[skip:])}
    check = M.target_check(np.asarray(device["alarm"])[skip:], y[skip:], target) if target is not None else None
    if check:
        out["target_check"] = check
        warning = M.target_warning(check, "the holdout (device)")
        if warning:
            out["warning"] = warning
    return out


def output_drift(task: str, z_float: np.ndarray, z_raw: np.ndarray) -> dict:
    """Device-vs-float drift at the output (raw device outputs against the float model's)."""
    f, r = z_float.reshape(len(z_float), -1), z_raw.reshape(len(z_raw), -1)
    out = {"sqnr_db": M.sqnr_db(float((f ** 2).sum()), float(((f - r) ** 2).sum()))}
    if task == "classifier":
        out["top1_agreement"] = float((f.argmax(1) == r.argmax(1)).mean())
    return out
