"""The ``tmlrepair`` command line: each subcommand is a thin wrapper over one library call.

Exit codes: 0 success, 1 a check found a regression, 2 bad input (one line on stderr
saying what is wrong and what to do; no traceback; no output file half-written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..allocator import keep_freed_memory
from ..errors import TmlrepairError

_PATH = click.Path(dir_okay=False, path_type=Path)


class _Group(click.Group):
    """Exit codes, exactly: 0 success; 1 only from the command (a regression, a device that differs); 2 bad
    input or usage, one line; 3 an internal error, one line and the file the traceback was saved to; 130
    interrupted. No traceback on the terminal."""

    def invoke(self, ctx):
        keep_freed_memory()  # the integer program's batches reuse freed memory (repair.allocator)
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
@click.option("--profile", "profile_path", type=_PATH, default=None,
              help="Write a profile of the command, every thread of it, to this new file (pstats format: "
                   "python -m pstats FILE).")
@click.pass_context
def main(ctx, profile_path):
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
    diagnose    the first layer where the device's model departs from the integer program
    """
    if profile_path is not None:
        from ..profiling import every_thread

        ctx.with_resource(every_thread(profile_path, report=lambda line: click.echo(line, err=True)))


def parse_repairs(text: str | None) -> tuple[str, ...] | None:
    """``--repairs a,b``: the names (unknown ones are refused where they are used), or None for all that apply."""
    names = tuple(r.strip() for r in text.split(",") if r.strip()) if text else ()
    return names or None


def parse_numbers(option: str, text: str) -> list[float]:
    """``--reading-lsb 0.5,2``: positive finite numbers separated by commas (DataError otherwise)."""
    from ..errors import DataError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"{option} {text!r}: give numbers separated by commas") from None
    if not all(v > 0 and v != float("inf") for v in values):
        raise DataError(f"{option} {text!r}: every value must be a positive finite number")
    return values


# the commands register themselves on ``main`` when their modules load
from . import commands, device  # noqa: E402,F401
