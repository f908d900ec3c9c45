"""The commands that work on files: info, drift, fit, fit-scores, fit-stream, emit, check."""

from __future__ import annotations

from pathlib import Path

import click

from ..progress import progress_wanted as _progress_wanted
from . import _PATH, main, parse_numbers, parse_repairs


def _outputs_ok(paths, force: bool) -> None:
    from ..atomic import check_writable

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
@click.option("--plan", "plan_path", type=_PATH,
              help="The plan that repaired INT8 (fit/calibrate): its equalized tensors are compared in the float "
                   "model's units.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
def drift(float_model, int8_model, data_path, json_path, md_path, html_path, strategy, task, batch_size, top,
          ignore_weights, plan_path, progress, force):
    """Measure where and how much INT8_MODEL departs from FLOAT_MODEL on --data."""
    from ..atomic import write_atomic
    from ..data import load_calibration
    from ..drift import measure_drift
    from ..drift.render import render_markdown, render_terminal
    from ..models import load_pair
    from ..progress import Progress

    _outputs_ok((json_path, md_path, html_path), force)
    pair = load_pair(float_model, int8_model)
    data = load_calibration(data_path)
    factors = None
    if plan_path is not None:
        from ..errors import DataError
        from ..plan import RepairPlan

        model = RepairPlan.from_json(plan_path).in_model
        if model.get("model", {}).get("sha256") != pair.int8.sha256:
            raise DataError(f"{plan_path} did not repair {int8_model} (sha256 differs): give the plan whose "
                            "repaired model this is, or no --plan")
        factors = model.get("equalized") or None
    bar = Progress(enabled=_progress_wanted(progress), label="drift ")
    report = measure_drift(pair, data, strategy=strategy, task=task, batch_size=batch_size,
                           check_weights=not ignore_weights, progress=bar, channel_factors=factors)
    click.echo(render_terminal(report, top), nl=False)
    if json_path:
        write_atomic(json_path, report.to_json(), force)
    if md_path:
        write_atomic(md_path, render_markdown(report), force)
    if html_path:
        from ..drift.html import render_html

        write_atomic(html_path, render_html(report), force)


@main.command()
@click.argument("float_model", type=_PATH)
@click.argument("int8_model", type=_PATH)
@click.option("--data", "calib_path", type=_PATH, required=True, help="Calibration split: repairs are fitted on it.")
@click.option("--holdout", "holdout_path", type=_PATH, required=True, help="Holdout split: repairs are judged on it.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for plan.json, the repaired model (repaired_int8.onnx, or repaired_int8.tflite with "
                   "model_data.cc/.h) and report.{json,md,html} (created if missing).")
@click.option("--repairs", help="Comma-separated subset. In the model: equalization, activation_thresholds, "
                                "bias_correction, logit_offset; after it: temperature, vector_scaling, "
                                "class_thresholds, score_threshold, window_boundary (default: all that apply).")
@click.option("--field", "field_path", type=_PATH,
              help="Unlabelled inputs as the deployed device sees them (logged from it): the in-model repairs are "
                   "fitted on them and decided by output SQNR against the float model (labels are not needed).")
@click.option("--reading-lsb", default="1", show_default=True,
              help="For the input pre-shim's integer C form: what one integer sensor reading is worth in the model's "
                   "input units, one number or one per feature, comma-separated.")
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
def fit(float_model, int8_model, calib_path, holdout_path, out_dir, repairs, field_path, reading_lsb, metric,
        target_far, anomaly_far, anomaly_boundary, window, ignore_weights, progress, force):
    """Fit repairs of INT8_MODEL on --data, judge them on --holdout; write the plan, repaired model and report."""
    from ..atomic import check_outputs, write_files
    from ..codegen.model_data import deployable_files
    from ..data import load_calibration
    from ..models import load_pair
    from ..plan.fit import fit_plan
    from ..plan.render import render_plan
    from ..plan.report import fit_report, render_html, render_markdown, report_json
    from ..repairs.after_model.base import check_rate
    from ..repairs.in_model import IN_MODEL_REPAIRS

    check_rate("--target-far", target_far)
    check_rate("--anomaly-far", anomaly_far)
    wanted = parse_repairs(repairs)
    in_model = wanted is None or any(r in IN_MODEL_REPAIRS for r in wanted)
    pair = load_pair(float_model, int8_model)
    model_files = (["repaired_int8.tflite", "model_data.cc", "model_data.h"] if pair.int8.format == "tflite"
                   else ["repaired_int8.onnx"])
    names = ["plan.json", "report.md"] + (["report.json", "report.html", *model_files] if in_model else [])
    check_outputs(out_dir, names, force)
    plan = fit_plan(pair, load_calibration(calib_path), load_calibration(holdout_path), repairs=wanted,
                    target_far=target_far, anomaly_far=anomaly_far, anomaly_boundary=anomaly_boundary, window=window,
                    in_model=in_model, metric=metric, check_weights=not ignore_weights,
                    progress=_progress_wanted(progress),
                    field=None if field_path is None else load_calibration(field_path),
                    reading_lsb=parse_numbers("--reading-lsb", reading_lsb))
    text = render_plan(plan)
    if not plan.in_model.get("holdout"):  # after-model repairs only (a temperature may be folded into the model)
        files = {"plan.json": plan.to_json(), "report.md": "```\n" + text + "```\n"}
    else:
        report = fit_report(plan)
        files = {"plan.json": plan.to_json(), "report.json": report_json(report), "report.md": render_markdown(report),
                 "report.html": render_html(report)}
    if plan.repaired_file is not None:
        files.update(deployable_files(plan.repaired_file, Path(int8_model).stem))
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
    from ..atomic import write_atomic
    from ..data.scores import load_scores, unlabelled_anomaly_warning
    from ..plan.fit_scores import fit_scores
    from ..plan.render import render_plan
    from ..repairs.after_model.base import check_rate

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


@main.command("fit-stream")
@click.argument("stream_path", type=_PATH)
@click.option("--target-fa-per-hour", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="False accepts per hour the recognizer may make on the calibration stream.")
@click.option("--keyword", type=int, default=0, show_default=True, help="Class index of the keyword to spot.")
@click.option("--silence-class", type=int, default=1, show_default=True,
              help="Class index of silence (no suppression after it, as TFLM); -1: none.")
@click.option("--holdout", "holdout_path", type=_PATH,
              help="A held-out stream (same format) to judge it on, next to TFLM's defaults and a fixed 0.95.")
@click.option("-o", "--output", "out_path", type=_PATH, required=True, help="Where to write plan.json.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
def fit_stream_cmd(stream_path, target_fa_per_hour, keyword, silence_class, holdout_path, out_path, force):
    """Fit the keyword recognizer (averaging window, threshold, suppression, minimum count; TFLM RecognizeCommands
    in integers) to a false-accepts-per-hour target on STREAM: an .npz of the device's int8 posteriors
    (scores), their times (times_ms) and the utterances spoken (events: start_ms, end_ms, label)."""
    from ..atomic import write_atomic
    from ..data.stream import load_stream
    from ..plan.fit_stream import fit_stream
    from ..plan.render import render_plan

    _outputs_ok((out_path,), force)
    stream = load_stream(stream_path)
    holdout = load_stream(holdout_path) if holdout_path else None
    plan = fit_stream(stream, target_fa_per_hour, keyword=keyword, silence_class=silence_class, holdout=holdout)
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
    from ..codegen.emit import emit as emit_c
    from ..plan.plan import RepairPlan

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
    from ..atomic import write_atomic
    from ..check.gate import Tolerances, render_summary, run_check, to_junit
    from ..data import load_calibration
    from ..drift import DriftReport
    from ..models import load_pair
    from ..plan.plan import RepairPlan

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
