"""What diagnosis costs: the all-layer digest pass (PROBE) over 100 inputs, and whether probing slows INFER.

    python scripts/bench_diagnose.py [--inputs 100]

1. ``diagnose`` on the digits model (8 layers) over ``--inputs`` holdout inputs, on the virtual device and on
   QEMU mps2-an386: wall time (one run, including the firmware's start; builds cached beforehand) and bytes on
   the wire each way.
2. Instructions per normal INFER on QEMU (-icount shift=0: SysTick counts 40 instructions per tick) of the
   firmware as built (a model with its PROBE hook) against the same model with no hook (``probe`` = NULL): the
   hooked run is its own function, so INFER's count must not move.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from repair import load_calibration, load_pair
from repair.device.diagnose import diagnose
from repair.device.targets import QEMU_INSTRUCTIONS_PER_TICK, model_source, open_link
from repair.program import lower
from repair.resources import cache_dir, datasets_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100)
    args = ap.parse_args()
    d = datasets_dir() / "digits"
    pair = load_pair(d / "float.onnx", d / "int8.onnx")
    prog = lower(pair.int8.proto)
    x = pair.int8_input_integers(load_calibration(d / "holdout.npz").x[:args.inputs])
    model_c = model_source(prog, "digits")
    print(f"1. all-layer digest pass over {len(x)} inputs ({len(prog.layers)} layers), one run")
    print("| target | wall time | requests | bytes out | bytes in | result |\n|---|---:|---:|---:|---:|---|")
    for url in ("sim", "qemu"):
        with open_link(url, model_c=model_c):
            pass  # the build, cached, is not what is measured
        t0 = time.perf_counter()
        with open_link(url, model_c=model_c) as link:
            link.hello()
            result = diagnose(link, prog, x)
            stats = link.stats
        print(f"| {url} | {time.perf_counter() - t0:.2f} s | {stats.requests} | {stats.bytes_out:,} | "
              f"{stats.bytes_in:,} | {result.summary()} |")
    no_hook = cache_dir() / "models" / "bench-no-probe.c"
    no_hook.write_text(model_c.read_text().replace(", invoke, 0, probe, ", ", invoke, 0, 0, ")
                       .replace("static int32_t probe(", "int32_t bench_unused_probe(void *ctx, const int8_t *input, "
                                "int8_t *output, tmlr_layer_hook hook, void *hook_ctx);\nint32_t bench_unused_probe("))
    print("\n2. instructions per INFER on QEMU (median of 20 inputs)")
    print("| firmware | instructions per inference |\n|---|---:|")
    for name, source in (("with the PROBE hook", model_c), ("without it (probe = NULL)", no_hook)):
        with open_link("qemu", model_c=source) as link:
            link.hello()
            ticks = [link.infer(x[i], prog.tensors[prog.output].size).model_ticks for i in range(20)]
        print(f"| {name} | {int(np.median(ticks)) * QEMU_INSTRUCTIONS_PER_TICK:,} |")


if __name__ == "__main__":
    main()
