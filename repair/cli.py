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

_PATH = click.Path(dir_okay=False, path_type=Path)


class _Group(click.Group):
    """Turns every TmlrepairError raised by a subcommand into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TmlrepairError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tmlrepair")
def main():
    """Repair an int8 TinyML model after deployment, without retraining.

    \b
    info   what a float/int8 model pair (and a data set) holds
    drift  where and how much the int8 model departs from the float one
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
    bar = Progress(enabled=sys.stderr.isatty() if progress is None else progress, label="drift ")
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


if __name__ == "__main__":
    main()
