"""The ``tmlrepair`` command line: each subcommand is a thin wrapper over one library call.

Exit codes: 0 success, 1 a check found a regression, 2 bad input (one line on stderr
saying what is wrong and what to do; no traceback; no output file half-written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import TmlrepairError
from .progress import progress_wanted as _progress_wanted

_PATH = click.Path(dir_okay=False, path_type=Path)


class _Group(click.Group):
    """Exit codes, exactly: 0 success; 1 only from the command (a regression, a device that differs); 2 bad
    input or usage, one line; 3 an internal error, one line and the file the traceback was saved to; 130
    interrupted. No traceback on the terminal."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TmlrepairError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug in tmlrepair: say so, keep the traceback for the report
            saved = _save_traceback()
            click.echo(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} — "
                       f"a bug in tmlrepair {__version__}; traceback saved to {saved} (please attach it to a report)",
                       err=True)
            ctx.exit(3)


def _save_traceback() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="tmlrepair-traceback-", suffix=".txt")
    with open(fd, "w") as f:
        f.write(f"tmlrepair {__version__}: {' '.join(sys.argv)}\n")
        traceback.print_exc(file=f)
    return path


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tmlrepair")
def main():
    """Repair an int8 TinyML model after deployment, without retraining.

    \b
    info        what a float/int8 model pair (and a data set) holds
    drift       where and how much the int8 model departs from the float one
    fit         fit repairs in the int8 model and after it, judge them on a holdout; write the repaired model
    fit-scores  fit an anomaly threshold or adaptive boundary from logged scores
    emit        write a plan's repairs as C shims (+ params header, self-test, Makefile/CMake snippets)
    check       regression gate after requantization: exit 1 if the new int8 model (or the plan) regressed
    calibrate   fit the repairs on a device's outputs, upload them, judge them on the device, emit the C
    validate    a plan's shims on the device vs the Python reference, bit for bit, with the task metrics
    hello       what the device on a serial link is (firmware, limits, model)
    """


def _outputs_ok(paths, force: bool) -> None:
    from .atomic import check_writable

    for p in paths:
        if p is not None:
            check_writable(p, force)


@main.command()
@click.argument("float_model", type=_PATH)
@click.argument("int8_model", type=_PATH)
@click.option("--data", "data_path", type=_PATH, help="Calibration/holdout set (.npz with x[, y], .npy, .csv).")
def info(float_model, int8_model, data_path):
    """Show what was loaded: ops, inputs/outputs, int8 quant params, data sizes and labels."""
    from .info import describe

    click.echo(describe(float_model, int8_model, data_path), nl=False)


@main.command()
@click.argument("float_model", type=_PATH)
@click.argument("int8_model", type=_PATH)
@click.option("--data", "data_path", type=_PATH, required=True, help="Set to measure on (.npz with x[, y]).")
@click.option("--json", "json_path", type=_PATH, help="Write the report as JSON (schema tmlrepair.drift/1).")
@click.option("--markdown", "md_path", type=_PATH, help="Write the report as Markdown.")
@click.option("--html", "html_path", type=_PATH, help="Write a self-contained HTML page with plots.")
@click.option("--strategy", type=click.Choice(["auto", "name", "structure"]), default="auto", show_default=True,
              help="How float and int8 tensors are paired.")
@click.option("--task", type=click.Choice(["auto", "classifier", "reconstruction", "score", "tensor"]),
              default="auto", show_default=True, help="What the output is (auto: from shapes).")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--top", type=click.IntRange(1), default=15, show_default=True, help="Rows in the terminal table.")
@click.option("--ignore-weights", is_flag=True,
              help="Measure even if the layers' weights show INT8 was not quantized from FLOAT (flagged in the report).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
def drift(float_model, int8_model, data_path, json_path, md_path, html_path, strategy, task, batch_size, top,
          ignore_weights, progress, force):
    """Measure where and how much INT8_MODEL departs from FLOAT_MODEL on --data."""
    from .atomic import write_atomic
    from .data import load_calibration
    from .drift import measure_drift
    from .drift.render import render_markdown, render_terminal
    from .models import load_pair
    from .progress import Progress

    _outputs_ok((json_path, md_path, html_path), force)
    pair = load_pair(float_model, int8_model)
    data = load_calibration(data_path)
    bar = Progress(enabled=_progress_wanted(progress), label="drift ")
    report = measure_drift(pair, data, strategy=strategy, task=task, batch_size=batch_size,
                           check_weights=not ignore_weights, progress=bar)
    click.echo(render_terminal(report, top), nl=False)
    if json_path:
        write_atomic(json_path, report.to_json(), force)
    if md_path:
        write_atomic(md_path, render_markdown(report), force)
    if html_path:
        from .drift.html import render_html

        write_atomic(html_path, render_html(report), force)


@main.command()
@click.argument("float_model", type=_PATH)
@click.argument("int8_model", type=_PATH)
@click.option("--data", "calib_path", type=_PATH, required=True, help="Calibration split: repairs are fitted on it.")
@click.option("--holdout", "holdout_path", type=_PATH, required=True, help="Holdout split: repairs are judged on it.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for plan.json, repaired_int8.onnx and report.{json,md,html} (created if missing).")
@click.option("--repairs", help="Comma-separated subset. In the model: equalization, activation_thresholds, "
                                "bias_correction, logit_offset; after it: temperature, vector_scaling, "
                                "class_thresholds, score_threshold, window_boundary (default: all that apply).")
@click.option("--metric", type=click.Choice(["accuracy", "auroc", "sqnr"]),
              help="Holdout metric that decides which in-model repairs are kept (default: accuracy for "
                   "classifiers, AUROC for anomaly models; sqnr needs no labels).")
@click.option("--target-far", type=float, default=0.01, show_default=True, help="Per-class false-accept target.")
@click.option("--anomaly-far", type=float, default=0.1, show_default=True, help="Anomaly false-alarm target.")
@click.option("--anomaly-boundary", type=click.Choice(["threshold", "window"]), default="threshold", show_default=True)
@click.option("--window", type=click.IntRange(2, 1024), default=32, show_default=True)
@click.option("--ignore-weights", is_flag=True,
              help="Fit even if INT8's weights do not match FLOAT's (you almost never want this).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
def fit(float_model, int8_model, calib_path, holdout_path, out_dir, repairs, metric, target_far, anomaly_far,
        anomaly_boundary, window, ignore_weights, progress, force):
    """Fit repairs of INT8_MODEL on --data, judge them on --holdout; write the plan, repaired model and report."""
    from .atomic import check_outputs, write_files
    from .data import load_calibration
    from .fit_report import fit_report, render_html, render_markdown, report_json
    from .fitting import fit_plan
    from .inmodel import IN_MODEL_REPAIRS
    from .models import load_pair
    from .render_plan import render_plan
    from .repairs.base import check_rate

    check_rate("--target-far", target_far)
    check_rate("--anomaly-far", anomaly_far)
    wanted = tuple(r.strip() for r in repairs.split(",") if r.strip()) if repairs else None
    in_model = wanted is None or any(r in IN_MODEL_REPAIRS for r in wanted)
    names = ["plan.json", "report.md"] + (["report.json", "report.html", "repaired_int8.onnx"] if in_model else [])
    check_outputs(out_dir, names, force)
    pair = load_pair(float_model, int8_model)
    plan = fit_plan(pair, load_calibration(calib_path), load_calibration(holdout_path), repairs=wanted,
                    target_far=target_far, anomaly_far=anomaly_far, anomaly_boundary=anomaly_boundary, window=window,
                    in_model=in_model, metric=metric, check_weights=not ignore_weights,
                    progress=_progress_wanted(progress))
    text = render_plan(plan)
    if not plan.in_model.get("holdout"):  # after-model repairs only (a temperature may be folded into the model)
        files = {"plan.json": plan.to_json(), "report.md": "```\n" + text + "```\n"}
        if plan.repaired_model is not None:
            files["repaired_int8.onnx"] = plan.repaired_model.SerializeToString()
    else:
        report = fit_report(plan)
        files = {"repaired_int8.onnx": plan.repaired_model.SerializeToString(), "plan.json": plan.to_json(),
                 "report.json": report_json(report), "report.md": render_markdown(report),
                 "report.html": render_html(report)}
    write_files(out_dir, files, force)
    click.echo(text, nl=False)
    click.echo(f"wrote {', '.join(files)} to {out_dir}")


@main.command("fit-scores")
@click.argument("scores_path", type=_PATH)
@click.option("--target-far", type=float, required=True, help="Target false-alarm rate, e.g. 0.1.")
@click.option("-o", "--output", "out_path", type=_PATH, required=True, help="Where to write plan.json.")
@click.option("--method", type=click.Choice(["threshold", "window"]), default="threshold", show_default=True,
              help="Static threshold, or adaptive |x - mean| > alpha*std over a sliding window.")
@click.option("--window", type=click.IntRange(2, 1024), default=32, show_default=True)
@click.option("--holdout", "holdout_path", type=_PATH, help="Scores to judge the fit on (same format).")
@click.option("--anomaly-prefix", help="Label ids starting with this text as anomalies (e.g. 'anomaly').")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
def fit_scores_cmd(scores_path, target_far, out_path, method, window, holdout_path, anomaly_prefix, force):
    """Fit an anomaly threshold or boundary from SCORES (.csv id,score[,label] or .npz score[, label])."""
    from .atomic import write_atomic
    from .score_fitting import fit_scores
    from .render_plan import render_plan
    from .repairs.base import check_rate
    from .scores import load_scores, unlabelled_anomaly_warning

    check_rate("--target-far", target_far)
    _outputs_ok((out_path,), force)
    scores = load_scores(scores_path, anomaly_prefix)
    holdout = load_scores(holdout_path, anomaly_prefix) if holdout_path else None
    for s in (scores, holdout):
        warning = unlabelled_anomaly_warning(s) if s is not None else None
        if warning:
            click.echo(f"warning: {warning}", err=True)
    plan = fit_scores(scores, target_far, method=method, window=window, holdout=holdout)
    write_atomic(out_path, plan.to_json(), force)
    click.echo(render_plan(plan), nl=False)


@main.command()
@click.argument("plan_path", type=_PATH)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write into (created if missing; may be '.' or a firmware folder).")
@click.option("--prefix", default="tmlr_model", show_default=True,
              help="C symbol prefix (a C identifier; file names use it in lower case).")
@click.option("--force", is_flag=True, help="Replace emit's own files if they exist (never other files).")
def emit(plan_path, out_dir, prefix, force):
    """Write PLAN's repairs as C: params header, shim, self-test, Makefile and CMake snippets."""
    from .codegen.emit import emit as emit_c
    from .plan import RepairPlan

    files = emit_c(RepairPlan.from_json(plan_path), out_dir, prefix=prefix, overwrite=force)
    click.echo(f"wrote {len(files)} files to {out_dir}: " + ", ".join(str(f) for f in files))
    p = prefix.lower()
    click.echo(f"self-test: make -f {out_dir}/tmlrepair.mk {p}_selftest && ./{p}_selftest")


@main.command()
@click.argument("baseline_path", type=_PATH)
@click.argument("new_int8", type=_PATH)
@click.option("--data", "data_path", type=_PATH, required=True, help="The holdout set the baseline was measured on.")
@click.option("--float", "float_path", type=_PATH, help="Float model (default: the one the baseline names).")
@click.option("--plan", "plan_path", type=_PATH, help="Also check that this plan's repairs still hold.")
@click.option("--config", "config_path", type=_PATH,
              help="pyproject.toml with [tool.tmlrepair.check] tolerances (default: ./pyproject.toml if it has them).")
@click.option("--max-accuracy-drop", type=float, help="Points of accuracy the new model may lose (default 1.0).")
@click.option("--max-sqnr-drop", type=float, help="dB of SQNR any layer may lose (default 3.0).")
@click.option("--max-far-miss", type=float, help="How far a plan's rate may miss its target (default 0.03).")
@click.option("--junit", "junit_path", type=_PATH, help="Write JUnit XML (one test case per check).")
@click.option("--markdown", "md_path", type=_PATH, help="Write a Markdown summary for the pull request.")
@click.option("--ignore-weights", is_flag=True,
              help="Check even if NEW_INT8's weights do not match the float model's (flagged in the report).")
@click.option("--force", is_flag=True, help="Replace the JUnit/Markdown files if they exist.")
@click.pass_context
def check(ctx, baseline_path, new_int8, data_path, float_path, plan_path, config_path, max_accuracy_drop,
          max_sqnr_drop, max_far_miss, junit_path, md_path, ignore_weights, force):
    """Compare NEW_INT8 with the BASELINE drift report on --data; exit 1 on a regression."""
    from .atomic import write_atomic
    from .check import Tolerances, render_summary, run_check, to_junit
    from .data import load_calibration
    from .drift import DriftReport
    from .models import load_pair
    from .plan import RepairPlan

    _outputs_ok((junit_path, md_path), force)
    baseline = DriftReport.from_json(baseline_path)
    config = config_path or (Path("pyproject.toml") if Path("pyproject.toml").is_file() else None)
    tol = Tolerances.from_pyproject(config) if config else Tolerances()
    for name, value in (("max_accuracy_drop", max_accuracy_drop), ("max_sqnr_drop", max_sqnr_drop),
                        ("max_far_miss", max_far_miss)):
        if value is not None:
            setattr(tol, name, value)
    float_model = float_path or baseline.provenance.get("models", {}).get("float", {}).get("path")
    if not float_model:
        raise click.UsageError("the baseline does not name its float model: pass --float")
    pair = load_pair(float_model, new_int8)
    plan = RepairPlan.from_json(plan_path) if plan_path else None
    result = run_check(baseline, pair, load_calibration(data_path), tol, plan, check_weights=not ignore_weights)
    click.echo(render_summary(result), nl=False)
    if junit_path:
        write_atomic(junit_path, to_junit(result), force)
    if md_path:
        write_atomic(md_path, render_summary(result, markdown=True), force)
    ctx.exit(0 if result.passed else 1)


if __name__ == "__main__":
    main()


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
    from .device.link import Timeouts, Trace
    from .device.targets import open_link

    trace = None
    if trace_path:
        stream = sys.stderr if trace_path == "-" else ctx.with_resource(open(trace_path, "w"))
        trace = Trace(stream)
    timeouts = Timeouts(reply=min(1.0, timeout), overall=timeout)
    return ctx.with_resource(open_link(url, timeouts=timeouts, retries=retries, trace=trace, baudrate=baud,
                                       model_c=model_c))


def _firmware_model(url: str, int8_path: Path, shim_only: bool):
    """For sim and qemu: the int8 model's integer program and its C, so the firmware runs the model
    (None, None for a real port or --shim-only)."""
    if url not in ("sim", "qemu") or shim_only:
        return None, None
    from .device.targets import model_source
    from .errors import ModelError
    from .intmodel import lower

    try:
        program = lower(int8_path)
    except ModelError as e:
        raise ModelError(f"{e}; pass --shim-only to run only the shims on the device") from None
    return program, model_source(program, Path(int8_path).name)


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
@click.option("--task", type=click.Choice(["digits", "motions", "ecg"]), default="digits", show_default=True,
              help="Bundled task to run when no models are given.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for plan.json, report.json/.md and c/ (created if missing).")
@click.option("--repairs", help="Comma-separated subset of the after-model repairs (default: all that apply).")
@click.option("--target-far", type=float, default=0.01, show_default=True, help="Per-class false-accept target.")
@click.option("--anomaly-far", type=float, default=0.1, show_default=True, help="Anomaly false-alarm target.")
@click.option("--anomaly-boundary", type=click.Choice(["threshold", "window"]), default="threshold",
              show_default=True)
@click.option("--window", type=click.IntRange(2, 1024), default=32, show_default=True)
@click.option("--prefix", default="tmlr_model", show_default=True, help="C symbol prefix of the emitted shims.")
@click.option("--shim-only", is_flag=True,
              help="sim/qemu: firmware without the model (onnxruntime computes the int8 outputs on the host).")
@click.option("--resume", is_flag=True, help="Continue a run that was cut short (its journal is in the folder).")
@click.option("--ignore-weights", is_flag=True,
              help="Run even if INT8's weights do not match FLOAT's (you almost never want this).")
@click.option("--progress/--no-progress", default=None, help="Progress (a bar on a terminal, lines in a log).")
@click.option("--force", is_flag=True, help="Replace calibrate's own outputs if they exist (never other files).")
@_link_options
@click.pass_context
def calibrate(ctx, float_model, int8_model, calib_path, holdout_path, task, out_dir, repairs, target_far, anomaly_far,
              anomaly_boundary, window, prefix, shim_only, resume, ignore_weights, progress, force, url, baud, timeout,
              retries, trace_path):
    """Fit the repairs on the device's outputs, upload them, run the holdout through them, emit the C.

    With no FLOAT_MODEL/INT8_MODEL it runs a bundled task (--task); with no --serial, the virtual device.
    Exit 0 when the device's shim outputs equal the Python reference bit for bit, 1 when they differ.
    """
    from .atomic import check_outputs, write_files
    from .codegen.cnames import check_prefix
    from .codegen.emit import emit_files
    from .data import load_calibration
    from .device.calibrate import run_calibrate
    from .device.render import render_run
    from .errors import DataError, Interrupted
    from .jsonio import dumps_stable
    from .models import check_one_network, load_pair
    from .progress import Progress
    from .repairs.base import check_rate
    from .resources import datasets_dir

    check_rate("--target-far", target_far)
    check_rate("--anomaly-far", anomaly_far)
    check_prefix(prefix)
    if (float_model is None) != (int8_model is None):
        raise DataError("give both FLOAT_MODEL and INT8_MODEL, or neither (a bundled task)")
    if float_model is None:
        base = datasets_dir() / task
        float_model, int8_model = base / "float.onnx", base / "int8.onnx"
        calib_path, holdout_path = calib_path or base / "calib.npz", holdout_path or base / "holdout.npz"
    if calib_path is None or holdout_path is None:
        raise DataError("--data and --holdout are required with your own models")
    journals = sorted(out_dir.glob(JOURNALS))
    if resume and not journals and (out_dir / "report.json").is_file():
        return _finished_run(ctx, out_dir)  # nothing left to do: show the result, rewrite nothing
    if not resume:
        check_outputs(out_dir, RUN_FILES, force)
        check_outputs(out_dir / "c", [f"{prefix.lower()}_params.h", f"{prefix.lower()}_shim.c"], force)
    pair = load_pair(float_model, int8_model)
    calib, holdout = load_calibration(calib_path), load_calibration(holdout_path)
    if not ignore_weights:
        check_one_network(pair, calib.x)
    wanted = tuple(r.strip() for r in repairs.split(",")) if repairs else None
    program, model_c = _firmware_model(url, pair.int8.path, shim_only)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if force and not resume:  # start over: an earlier run's journals (ours) go too
        for journal in journals:
            journal.unlink()
    try:
        link = _open_link(ctx, url, baud, timeout, retries, trace_path, model_c)
        run = run_calibrate(link, pair, calib, holdout, out_dir, repairs=wanted, target_far=target_far,
                            anomaly_far=anomaly_far, anomaly_boundary=anomaly_boundary, window=window,
                            resume=resume, program=program, instructions_per_tick=40 if url == "qemu" else None,
                            progress=Progress(enabled=_progress_wanted(progress), label="device "))
    except KeyboardInterrupt:
        raise Interrupted(_journaled(out_dir)) from None
    except BaseException:
        _drop_if_empty(out_dir, created)
        raise
    text = render_run(run.report)
    files = {"plan.json": run.plan.to_json(), "report.json": dumps_stable(run.report),
             "report.md": "```\n" + text + "```\n"}
    files.update({f"c/{name}": content for name, content in emit_files(run.plan, prefix).items()})
    write_files(out_dir, files, force=True)  # checked above (or a resumed run's own files)
    for journal in out_dir.glob(JOURNALS):
        journal.unlink()
    click.echo(text + f"wrote {out_dir}/plan.json, report.json, report.md and the C shims in {out_dir}/c", nl=True)
    ctx.exit(0 if run.bit_exact else 1)


RUN_FILES = ("plan.json", "report.json", "report.md")
JOURNALS = ".journal-*.jsonl"


def _journaled(out_dir: Path) -> str:
    """What an interrupted device run leaves: how many samples its journals hold, and how to go on."""
    from .device.journal import journaled_samples

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

    from .device.calibrate import DeviceRun

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
@click.option("--data", "data_path", type=_PATH, required=True, help="Holdout set (with labels for the metrics).")
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
    from .atomic import check_outputs
    from .data import load_calibration
    from .device.render import render_run
    from .device.validate import model_path, run_validate
    from .errors import Interrupted
    from .plan import RepairPlan

    plan = RepairPlan.from_json(plan_path)
    if out_dir is not None and not resume:
        check_outputs(out_dir, ("report.json", "report.md"), force)
    data = load_calibration(data_path)
    _, model_c = _firmware_model(url, model_path(plan, "int8", int8_path), shim_only)
    created = out_dir is not None and not out_dir.exists()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        link = _open_link(ctx, url, baud, timeout, retries, trace_path, model_c)
        run = run_validate(link, plan, data, float_path=float_path, int8_path=int8_path, out_dir=out_dir,
                           resume=resume, check_weights=not ignore_weights)
    except KeyboardInterrupt:
        raise Interrupted(_journaled(out_dir) if out_dir is not None else
                          "interrupted (nothing kept: pass -o DIR to journal a validation run)") from None
    except BaseException:
        if out_dir is not None:
            _drop_if_empty(out_dir, created)
        raise
    text = render_run(run.report)
    if out_dir is not None:
        from .atomic import write_files
        from .jsonio import dumps_stable

        write_files(out_dir, {"report.json": dumps_stable(run.report), "report.md": "```\n" + text + "```\n"},
                    force=True)
    click.echo(text, nl=False)
    ctx.exit(0 if run.bit_exact else 1)
