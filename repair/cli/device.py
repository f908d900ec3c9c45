"""The commands that talk to a device over a serial link: hello, calibrate, validate."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from ..errors import DataError
from ..progress import progress_wanted as _progress_wanted
from . import _PATH, main, parse_numbers, parse_repairs


def _link_options(f):
    """--serial, --baud, --timeout, --retries, --trace: how to reach the device."""
    f = click.option("--trace", "trace_path", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Hex dump of every byte on the link to this file ('-' for stderr).")(f)
    f = click.option("--retries", type=click.IntRange(0, 100), default=8, show_default=True,
                     help="Retransmissions of a request before giving up.")(f)
    f = click.option("--timeout", type=click.FloatRange(0.05, 3600), default=10.0, show_default=True,
                     help="Overall seconds per request, retries included (a reply attempt waits ≤ 1 s).")(f)
    f = click.option("--baud", type=int, default=115200, show_default=True, help="Serial speed (real ports only).")(f)
    return click.option("--serial", "url", default="sim", show_default=True,
                        help="/dev/ttyACM0, socket://HOST:PORT, loop://, 'sim' (virtual device) or 'qemu' "
                             "(emulated Cortex-M4).")(f)


def _open_link(ctx, url, baud, timeout, retries, trace_path, model_c=None):
    from ..device.link import Timeouts, Trace
    from ..device.targets import open_link

    trace = None
    if trace_path:
        stream = sys.stderr if trace_path == "-" else ctx.with_resource(open(trace_path, "w"))
        trace = Trace(stream)
    timeouts = Timeouts(reply=min(1.0, timeout), overall=timeout)
    return ctx.with_resource(open_link(url, timeouts=timeouts, retries=retries, trace=trace, baudrate=baud,
                                       model_c=model_c))


def _firmware_model(url: str, int8_path: Path, shim_only: bool, pre_shim: dict | None = None):
    """For sim and qemu: the int8 model's integer program and its C, so the firmware runs the model
    (None, None for a real port or --shim-only); ``pre_shim``: its integer input pre-shim, built in too."""
    if url not in ("sim", "qemu") or shim_only:
        return None, None
    from ..device.targets import model_source
    from ..errors import ModelError
    from ..program import lower

    try:
        program = lower(int8_path)
    except ModelError as e:
        raise ModelError(f"{e}; pass --shim-only to run only the shims on the device") from None
    return program, model_source(program, Path(int8_path).name, pre_shim["integer"] if pre_shim else None)


@main.command()
@_link_options
@click.pass_context
def hello(ctx, url, baud, timeout, retries, trace_path):
    """Ask the device on --serial what it is: protocol and library versions, limits, model I/O."""
    link = _open_link(ctx, url, baud, timeout, retries, trace_path)
    click.echo(link.hello().describe())


@main.command()
@click.argument("float_model", type=_PATH, required=False)
@click.argument("int8_model", type=_PATH, required=False)
@click.option("--data", "calib_path", type=_PATH, help="Calibration split (default: the bundled task's).")
@click.option("--holdout", "holdout_path", type=_PATH, help="Holdout split (default: the bundled task's).")
@click.option("--task", type=click.Choice(["digits", "motions", "ecg", "digits_tflite"]), default="digits",
              show_default=True, help="Bundled task to run when no models are given (digits_tflite: the digits "
                                      "pair as .tflite files).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for plan.json, report.json/.md and c/ (created if missing).")
@click.option("--repairs", help="Comma-separated subset: in the model (equalization, activation_thresholds, "
                                "bias_correction, logit_offset) and after it (temperature, vector_scaling, "
                                "class_thresholds, score_threshold, window_boundary); default: all that apply.")
@click.option("--target-far", type=float, default=0.01, show_default=True, help="Per-class false-accept target.")
@click.option("--anomaly-far", type=float, default=0.1, show_default=True, help="Anomaly false-alarm target.")
@click.option("--anomaly-boundary", type=click.Choice(["threshold", "window"]), default="threshold",
              show_default=True)
@click.option("--window", type=click.IntRange(2, 1024), default=32, show_default=True)
@click.option("--prefix", default="tmlr_model", show_default=True, help="C symbol prefix of the emitted shims.")
@click.option("--shim-only", is_flag=True,
              help="sim/qemu: firmware without the model (onnxruntime computes the int8 outputs on the host).")
@click.option("--resume", is_flag=True, help="Continue a run that was cut short (its journal is in the folder).")
@click.option("--in-model/--no-in-model", default=None,
              help="Repair the model itself first (equalization, activation ranges, bias correction), rebuild the "
                   "firmware with it and fit the shims on its outputs (default: on sim and qemu).")
@click.option("--reading-lsb", default="1", show_default=True,
              help="What one int16 sensor reading is worth in the model's input units (one number, or one per "
                   "feature, comma-separated): with an input pre-shim, sim and qemu take raw readings and run the "
                   "pre-shim in C.")
@click.option("--ignore-weights", is_flag=True,
              help="Run even if INT8's weights do not match FLOAT's (you almost never want this).")
@click.option("--progress/--no-progress", default=None, help="Progress (a bar on a terminal, lines in a log).")
@click.option("--force", is_flag=True, help="Replace calibrate's own outputs if they exist (never other files).")
@_link_options
@click.pass_context
def calibrate(ctx, float_model, int8_model, calib_path, holdout_path, task, out_dir, repairs, target_far, anomaly_far,
              anomaly_boundary, window, prefix, shim_only, resume, in_model, reading_lsb, ignore_weights, progress,
              force, url, baud,
              timeout, retries, trace_path):
    """Fit the repairs on the device's outputs, upload them, run the holdout through them, emit the C.

    With no FLOAT_MODEL/INT8_MODEL it runs a bundled task (--task); with no --serial, the virtual device.
    Exit 0 when the device's shim outputs equal the Python reference bit for bit, 1 when they differ.
    \f
    About 80 lines, a fifth of them the lazy imports that keep `tmlrepair --help` fast: the command's steps in
    order — check the arguments, repair in the model, open the device, run, write — each a call.
    """
    from ..atomic import check_outputs, write_files
    from ..codegen.cnames import check_prefix
    from ..data import load_calibration
    from ..device.calibrate import repair_in_model, run_calibrate
    from ..device.render import render_run
    from ..errors import DataError, Interrupted
    from ..models import check_one_network, load_pair
    from ..progress import Progress
    from ..repairs.after_model.base import check_rate
    from ..repairs.in_model import IN_MODEL_REPAIRS

    check_rate("--target-far", target_far)
    check_rate("--anomaly-far", anomaly_far)
    check_prefix(prefix)
    float_model, int8_model, calib_path, holdout_path = _run_inputs(task, float_model, int8_model, calib_path,
                                                                    holdout_path)
    journals = sorted(out_dir.glob(JOURNALS))
    if resume and not journals and (out_dir / "report.json").is_file():
        return _finished_run(ctx, out_dir)  # nothing left to do: show the result, rewrite nothing
    if not resume:
        check_outputs(out_dir, RUN_FILES, force)
        check_outputs(out_dir / "c", [f"{prefix.lower()}_params.h", f"{prefix.lower()}_shim.c"], force)
    on_reference_device = url in ("sim", "qemu") and not shim_only
    if in_model is None:
        in_model = on_reference_device
    if in_model and not on_reference_device:
        raise DataError("in-model repairs change the model the board runs: run `tmlrepair fit` for "
                        "repaired_int8.onnx or .tflite, reflash the board with it, then `tmlrepair validate` (or use "
                        "--serial sim / qemu, whose firmware calibrate rebuilds)")
    pair = load_pair(float_model, int8_model)
    calib, holdout = load_calibration(calib_path), load_calibration(holdout_path)
    if not ignore_weights:
        check_one_network(pair, calib.x)
    names = parse_repairs(repairs) or ()
    lsb = parse_numbers("--reading-lsb", reading_lsb)
    in_names = tuple(r for r in names if r in IN_MODEL_REPAIRS) or None
    wanted = tuple(r for r in names if r not in IN_MODEL_REPAIRS) or None
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if force and not resume:  # start over: an earlier run's journals (ours) go too
        for journal in journals:
            journal.unlink()
    bar = Progress(enabled=_progress_wanted(progress), label="device ")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            repaired = (repair_in_model(pair, calib, holdout, Path(scratch), bar.enabled, in_names) if in_model
                        else None)
            device_pair = repaired.pair if repaired else pair
            pre_shim = repaired.pre_shim(lsb) if repaired else None
            program, model_c = _firmware_model(url, device_pair.int8.path, shim_only, pre_shim)
            link = _open_link(ctx, url, baud, timeout, retries, trace_path, model_c)
            run = run_calibrate(link, device_pair, calib, holdout, out_dir, repairs=wanted, target_far=target_far,
                                anomaly_far=anomaly_far, anomaly_boundary=anomaly_boundary, window=window,
                                resume=resume, program=program, instructions_per_tick=40 if url == "qemu" else None,
                                progress=bar, pre_shim=pre_shim)
            if repaired:
                repaired.record(run, pair, lsb)
    except KeyboardInterrupt:
        raise Interrupted(_journaled(out_dir)) from None
    except BaseException:
        _drop_if_empty(out_dir, created)
        raise
    text = render_run(run.report)
    files = _run_files(run, text, repaired, Path(int8_model).stem, prefix)
    write_files(out_dir, files, force=True)  # checked above (or a resumed run's own files)
    for journal in out_dir.glob(JOURNALS):
        journal.unlink()
    click.echo(text + f"wrote {out_dir}/{', '.join(n for n in files if not n.startswith('c/'))} and the C shims in "
               f"{out_dir}/c", nl=True)
    ctx.exit(0 if run.bit_exact else 1)


def _run_inputs(task, float_model, int8_model, calib_path, holdout_path):
    """The models and splits a calibrate run uses: the ones given, or a bundled task's."""
    from ..errors import DataError
    from ..resources import datasets_dir

    if (float_model is None) != (int8_model is None):
        raise DataError("give both FLOAT_MODEL and INT8_MODEL, or neither (a bundled task)")
    if float_model is None:
        base = datasets_dir() / task
        ext = ".tflite" if (base / "int8.tflite").is_file() else ".onnx"
        float_model, int8_model = base / f"float{ext}", base / f"int8{ext}"
        calib_path, holdout_path = calib_path or base / "calib.npz", holdout_path or base / "holdout.npz"
    if calib_path is None or holdout_path is None:
        raise DataError("--data and --holdout are required with your own models")
    return float_model, int8_model, calib_path, holdout_path


def _run_files(run, text: str, repaired, stem: str, prefix: str) -> dict[str, str | bytes]:
    """Everything a finished run writes: plan, reports, the repaired model to deploy (if any) and the C shims."""
    from ..codegen.emit import emit_files
    from ..jsonio import dumps_stable

    files = {"plan.json": run.plan.to_json(), "report.json": dumps_stable(run.report),
             "report.md": "```\n" + text + "```\n"}
    if repaired:
        from ..codegen.model_data import deployable_files

        files.update(deployable_files(repaired.file, stem))
    files.update({f"c/{name}": content for name, content in emit_files(run.plan, prefix).items()})
    return files


RUN_FILES = ("plan.json", "report.json", "report.md", "repaired_int8.onnx", "repaired_int8.tflite", "model_data.cc",
             "model_data.h")
JOURNALS = ".journal-*.jsonl"


def _journaled(out_dir: Path) -> str:
    """What an interrupted device run leaves: how many samples its journals hold, and how to go on."""
    from ..device.journal import journaled_samples

    n = sum(journaled_samples(j) for j in out_dir.glob(JOURNALS))
    return (f"interrupted: {n} sample(s) journaled in {out_dir}; rerun the same command with --resume to "
            "continue from there")


def _drop_if_empty(folder: Path, created: bool) -> None:
    """A failed run leaves no empty output folder behind (only one it created itself)."""
    if created and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _finished_run(ctx, out_dir: Path):
    """``--resume`` on a run that finished: report its result again (no device, no file rewritten)."""
    import json

    from ..device.calibrate import DeviceRun

    try:
        report = json.loads((out_dir / "report.json").read_text())
        bit_exact = DeviceRun(None, report).bit_exact
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{out_dir}/report.json is not a finished run's report: rerun without --resume "
                        "(with --force to replace it)") from None
    md = (out_dir / "report.md").read_text() if (out_dir / "report.md").is_file() else ""
    click.echo(md.replace("```\n", ""), nl=False)
    click.echo(f"this run had already finished ({out_dir}/report.json): nothing to resume; rerun without "
               "--resume and with --force to run it again")
    ctx.exit(0 if bit_exact else 1)


@main.command()
@click.option("--plan", "plan_path", type=_PATH, required=True, help="plan.json from fit or calibrate.")
@click.option("--data", "data_path", type=_PATH, required=True,
              help="Holdout set (with labels for the metrics); for a fit-stream plan, a stream file.")
@click.option("--float", "float_path", type=_PATH, help="Float model (default: the one the plan names).")
@click.option("--int8", "int8_path", type=_PATH, help="Int8 model (default: the one the plan names).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json/.md and the run's journal (default: no files).")
@click.option("--shim-only", is_flag=True, help="sim/qemu: firmware without the model.")
@click.option("--resume", is_flag=True, help="Continue a run that was cut short (needs -o).")
@click.option("--ignore-weights", is_flag=True,
              help="Run even if the int8 model's weights do not match the float model's.")
@click.option("--force", is_flag=True, help="Replace the reports if they exist.")
@_link_options
@click.pass_context
def validate(ctx, plan_path, data_path, float_path, int8_path, out_dir, shim_only, resume, ignore_weights, force, url,
             baud, timeout, retries, trace_path):
    """Run PLAN's shims on the device over --data and compare with the Python reference bit for bit.

    Exit 0 when every sample matches, 1 when any differs.
    """
    from ..atomic import check_outputs
    from ..data import load_calibration
    from ..device.render import render_run
    from ..device.validate import model_path, run_validate
    from ..errors import Interrupted
    from ..plan.plan import RepairPlan

    plan = RepairPlan.from_json(plan_path)
    if out_dir is not None and resume and not any(out_dir.glob(JOURNALS)) and (out_dir / "report.json").is_file():
        return _finished_run(ctx, out_dir)  # nothing left to do: show the result, rewrite nothing
    if out_dir is not None and not resume:
        check_outputs(out_dir, ("report.json", "report.md"), force)
    stream = plan.task == "keyword_stream"  # --data is a stream of the device's posteriors: no model runs
    if stream:
        from ..data.stream import load_stream
        from ..device.validate import run_validate_stream

        data = load_stream(data_path)
        program = model_c = None
    else:
        data = load_calibration(data_path)
        program, model_c = _firmware_model(url, model_path(plan, "int8", int8_path), shim_only)
    created = out_dir is not None and not out_dir.exists()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        link = _open_link(ctx, url, baud, timeout, retries, trace_path, model_c)
        run = (run_validate_stream(link, plan, data, out_dir=out_dir, resume=resume) if stream else
               run_validate(link, plan, data, float_path=float_path, int8_path=int8_path, out_dir=out_dir,
                            resume=resume, check_weights=not ignore_weights, program=program))
    except KeyboardInterrupt:
        raise Interrupted(_journaled(out_dir) if out_dir is not None else
                          "interrupted (nothing kept: pass -o DIR to journal a validation run)") from None
    except BaseException:
        if out_dir is not None:
            _drop_if_empty(out_dir, created)
        raise
    text = render_run(run.report)
    if out_dir is not None:
        from ..atomic import write_files
        from ..jsonio import dumps_stable

        write_files(out_dir, {"report.json": dumps_stable(run.report), "report.md": "```\n" + text + "```\n"},
                    force=True)
        for journal in out_dir.glob(JOURNALS):  # the run is finished: its journals have served
            journal.unlink()
    click.echo(text, nl=False)
    ctx.exit(0 if run.bit_exact else 1)


@main.command()
@click.argument("int8_model", type=_PATH)
@click.option("--data", "data_path", type=_PATH, required=True, help="Inputs to probe with (as the float model takes them).")
@click.option("--samples", type=click.IntRange(1, 100000), default=32, show_default=True,
              help="How many inputs of --data to probe.")
@click.option("--float", "float_path", type=_PATH,
              help="The float model: each layer's SQNR against it too (the device's, where it equals the program).")
@click.option("--json", "json_path", type=_PATH, help="Write the per-layer result as JSON.")
@click.option("--html", "html_path", type=_PATH, help="Write a page with the per-layer plot.")
@click.option("--force", is_flag=True, help="Replace the JSON/HTML files if they exist.")
@_link_options
@click.pass_context
def diagnose(ctx, int8_model, data_path, samples, float_path, json_path, html_path, force, url, baud, timeout,
             retries, trace_path):
    """Find the first layer where the device's model stops computing what the integer program says.

    Each input is run once on the device (PROBE: a CRC, min and max of every layer's output) and on the host.
    Exit 0 when every layer equals the program, 1 when a layer differs.
    """
    from ..atomic import check_writable, write_atomic
    from ..data import load_calibration
    from ..device.diagnose import diagnose as run_diagnose
    from ..jsonio import dumps_stable
    from ..models import QuantParams

    for path in (json_path, html_path):
        if path:
            check_writable(path, force)
    program, model_c = _firmware_model(url, int8_model, shim_only=False)
    if program is None:
        from ..program import lower

        program = lower(int8_model)
    data = load_calibration(data_path)
    t = program.tensors[program.input]
    from ..models.tflite_file import is_tflite

    rounding = "half_away" if is_tflite(Path(int8_model).read_bytes()[:8]) else "half_even"  # as the model's runtime
    x = QuantParams(t.scale, t.zero_point, "int8", rounding).quantize(data.x[:samples]).reshape(
        min(samples, len(data)), -1)
    link = _open_link(ctx, url, baud, timeout, retries, trace_path, model_c)
    hello = link.hello()
    if hello.model_input is None or hello.model_input.size != x.shape[1]:
        raise DataError(f"the device's model takes {None if hello.model_input is None else hello.model_input.size} "
                        f"inputs, {int8_model} {x.shape[1]}: flash the firmware built for this model")
    result = run_diagnose(link, program, x)
    click.echo(result.summary())
    doc = {**result.to_dict(), "summary": result.summary()}
    if float_path:
        import numpy as np

        from ..device.diagnose import attach_float_drift
        from ..drift.measure import measure_drift
        from ..models import load_pair

        subset = data.subset(np.arange(min(samples, len(data))), "probed")
        attach_float_drift(doc, program, measure_drift(load_pair(float_path, int8_model), subset).tensors)
    if json_path:
        write_atomic(json_path, dumps_stable(doc), force)
    if html_path:
        from ..device.diagnose_html import render_diagnosis_html

        write_atomic(html_path, render_diagnosis_html(doc, Path(int8_model).name), force)
    ctx.exit(0 if result.first_divergent is None else 1)

