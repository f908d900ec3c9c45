"""Reference-device benchmark: the int8 model on the emulated Cortex-M4, and what the shims add to it.

    python scripts/bench_model.py [--layers-only]

For each bundled model and MLPerf Tiny's kws_dscnn and ad01 (../shared/real, skipped when absent):
instructions per inference on QEMU mps2-an386 (-icount shift=0: SysTick at 25 MHz = 40 instructions per
tick; the median of 5 INFER calls on random int8 inputs — the count is data-independent), the shim chain's
instructions per call (BENCH, the empty loop subtracted) as a share of the model's (target <= 1%), and flash
(.text + .data) and RAM (.data + .bss, stack included) of model plus harness (arm-none-eabi-size of the
-Os firmware image).

Per layer (issue 21's CMSIS-NN shapes, then digits and kws_dscnn): each conv / depthwise / pointwise / FC layer built
alone into a firmware (a one-layer program: its input, its output) and run by INFER on QEMU, REPEAT times per INFER
(``-DTMLR_DEV_INFER_REPEAT``); instructions per MAC (the layer's input and output copies included), and without the
harness (INFER's call, the counter, the copies: a net with no layer and as many bytes copied,
``harness_instructions``), next to CMSIS-NN's figures for the same kinds of layer (issue 21: CMSIS-NN 99f736a, -O2
-mcpu=cortex-m4 -DARM_MATH_DSP, one shape per kind) and, for the fully connected layers, next to CMSIS-NN's own kernel
of the layer's quantization on the layer's shape (``CMSIS_NN_FC``). Then a fully connected layer's cost split into per
call, per output and per MAC (``fc_cost``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from repair import fixedpoint as fp
from repair.device.targets import (
    QEMU_INSTRUCTIONS_PER_TICK,
    build,
    model_source,
    open_link,
)
from repair.plan.shims import AnomalyShim, ClassifierShim
from repair.program import lower
from repair.program.ir import IntProgram, Layer, QTensor

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real" / "mlperf_tiny" / "models"
STACK = 0x4000  # c_patches/ports/mps2-an386/mps2-an386.ld


def models() -> list[tuple[str, Path]]:
    out = [(t, ROOT / "datasets" / t / "int8.onnx") for t in ("digits", "motions", "ecg")]
    for name in ("kws_dscnn", "ad01"):
        path = REAL / f"{name}_int8.onnx"
        if path.is_file():
            out.append((name, path))
        else:
            print(f"(skipping {name}: {path} not found)")
    return out


def shim_for(prog) -> ClassifierShim | AnomalyShim:
    """The shim a plan would put after this model: the full classifier chain (affine + softmax + thresholds, the
    most a plan runs; for kws_dscnn, whose model ends in its own softmax, an upper bound), or the window boundary."""
    out = prog.tensors[prog.output]
    if out.size <= 64 and len(out.shape) == 1:
        k = out.size
        mults, shifts = zip(*(fp.quantize_multiplier(0.7) for _ in range(k)))
        affine = {"multipliers": list(mults), "shifts": list(shifts), "offsets": [3] * k, "input_zero_point": 0,
                  "output_zero_point": 0}
        return ClassifierShim(k, affine, tuple(int(v) for v in fp.softmax_params(1.0, out.scale)), [0] * k)
    return AnomalyShim("window", 1.0, window=32, alpha2_q=2304, alpha2_frac_bits=8)


def size(elf: Path) -> tuple[int, int]:
    text, data, bss = (int(v) for v in subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True,
                                                       text=True, check=True).stdout.splitlines()[1].split()[:3])
    return text + data, data + bss


CMSIS_NN = {"conv": 10.4, "depthwise": 8.0, "pointwise": 2.71, "fc": 2.12}  # instructions per MAC (issue 21)

#: CMSIS-NN's own fully connected kernels on the models' FC shapes, instructions per MAC, kernel only:
#: arm_nn_vec_mat_mult_t_s8 (V.5.4.1, per-tensor, what arm_fully_connected_s8 calls) and arm_nn_vec_mat_mult_t_per_ch_s8
#: (V.1.2.0, per-channel), their DSP paths built with arm-none-eabi-gcc -O2 -mcpu=cortex-m4 into this harness in place
#: of the model (the same input and output copies, 40 runs per INFER, the same harness subtracted), outputs equal to
#: the program's. Measured once (session 12) from CMSIS-NN's sources, which this project does not ship.
CMSIS_NN_FC = {(32, 10): {"per-tensor": 3.43, "per-channel": 3.70}, (64, 12): {"per-tensor": 2.67, "per-channel": 2.82},
               (256, 10): {"per-tensor": 2.08, "per-channel": 2.12}, (128, 10): {"per-tensor": 2.29, "per-channel": 2.36},
               (32, 40): {"per-tensor": 3.45, "per-channel": 3.72}}


def layer_kind(layer) -> str | None:
    if layer.op == "fc":
        return "fc"
    if layer.op != "conv":
        return None
    w = layer.p["weights"]
    if layer.p["group"] > 1 and w.shape[1] == 1:
        return "depthwise"
    return "pointwise" if w.shape[2:] == (1, 1) else "conv"


def one_layer(prog: IntProgram, layer) -> IntProgram:
    """The program of one layer alone: its input tensor in, its output tensor out."""
    keep = {layer.inputs[0], layer.output}
    return IntProgram({k: v for k, v in prog.tensors.items() if k in keep}, [layer], layer.inputs[0], layer.output)


REPEAT = 20  # model runs per INFER in the one-layer figures: SysTick's 40-instruction steps become 2


def instructions(prog: IntProgram, rng, runs: int = 3) -> float:
    """Instructions of one run of ``prog`` on QEMU: the median of ``runs`` INFERs, each running it REPEAT times."""
    tin, tout = prog.tensors[prog.input], prog.tensors[prog.output]
    # frames large enough for any one layer's output (a 14x14x32 activation is 6 kB)
    with open_link("qemu", model_c=model_source(prog, "bench layer"),
                   build_flags=("-DTMLR_DEV_MAX_PAYLOAD=16384", f"-DTMLR_DEV_INFER_REPEAT={REPEAT}")) as link:
        ticks = [link.infer(rng.integers(-128, 128, tin.size), tout.size).model_ticks for _ in range(runs)]
    return float(np.median(ticks)) * QEMU_INSTRUCTIONS_PER_TICK / REPEAT


_HARNESS: dict[int, float] = {}  # bytes each way -> instructions


def harness_instructions(copied: int, rng) -> float:
    """What a one-layer figure counts besides its kernel — INFER's call into the model, the counter reads, the net's
    copies of its input into the arena and of its output out (newlib's memcpy) — measured on a net with no layer
    whose input is its output, of ``copied`` / 2 bytes (copied in and out: ``copied`` bytes in all)."""
    n = max(1, -(-copied // 2))
    if n not in _HARNESS:
        _HARNESS[n] = instructions(IntProgram({"x": QTensor("x", (n,), 0.1, 0)}, [], "x", "x"), rng)
    return _HARNESS[n]


#: the shapes of issue 21's CMSIS-NN measurement: (kind, input channels, output channels, kernel, height, width)
CMSIS_SHAPES = (("conv", 1, 16, 3, 28, 28), ("depthwise", 32, 32, 3, 14, 14), ("pointwise", 32, 64, 1, 14, 14),
                ("fc", 256, 10, 1, 1, 1))


def synthetic(kind: str, cin: int, cout: int, k: int, h: int, w: int, rng) -> IntProgram:
    """One layer of the given shape (stride 1, SAME padding), random int8 weights and per-channel requantization."""
    group = cin if kind == "depthwise" else 1
    pad = k // 2
    p = {"in_zp": -5, "out_zp": 3, "act_min": -128, "act_max": 127,
         "bias": [int(v) for v in rng.integers(-2000, 2000, cout)],
         "mult": [int(v) for v in rng.integers(1 << 30, (1 << 31) - 1, cout)], "shift": [-8] * cout}
    if kind == "fc":
        p["weights"] = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
        tensors = {"x": QTensor("x", (cin,), 0.1, -5), "y": QTensor("y", (cout,), 0.1, 3)}
        return IntProgram(tensors, [Layer("fc", ["x"], "y", f"fc {cin}->{cout}", p)], "x", "y")
    p.update({"weights": rng.integers(-127, 128, (cout, cin // group, k, k)).astype(np.int8), "group": group,
              "strides": (1, 1), "dilations": (1, 1), "pads": (pad, pad, pad, pad), "in_hw": (h, w), "out_hw": (h, w)})
    tensors = {"x": QTensor("x", (cin, h, w), 0.1, -5), "y": QTensor("y", (cout, h, w), 0.1, 3)}
    return IntProgram(tensors, [Layer("conv", ["x"], "y", f"{kind} {cin}->{cout} {k}x{k} on {h}x{w}", p)], "x", "y")


def per_layer(rng) -> None:
    print("| model | layer | kind | MACs | instructions | instructions/MAC | CMSIS-NN | ratio | harness "
          "| kernel instructions/MAC | ratio, kernel | CMSIS-NN, same shape | ratio, same shape |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def row(label: str, single: IntProgram, kind: str) -> None:
        macs, insn = single.macs(), instructions(single, rng)
        tin, tout = single.tensors[single.input], single.tensors[single.output]
        harness = harness_instructions(tin.size + tout.size, rng)  # CMSIS-NN's figures are its kernels' alone
        kernel = (insn - harness) / macs
        same = " | |"
        if kind == "fc":  # CMSIS-NN's kernel of the layer's quantization on its shape, where measured
            quant = "per-channel" if len(single.layers[0].p["mult"]) > 1 else "per-tensor"
            figure = CMSIS_NN_FC.get((tin.size, tout.size), {}).get(quant)
            if figure:
                same = f" {figure} ({quant}) | {kernel / figure:.2f}x |"
        print(f"| {label} | {kind} | {macs:,} | {insn:,.0f} | {insn / macs:.2f} | {CMSIS_NN[kind]} | "
              f"{insn / macs / CMSIS_NN[kind]:.2f}x | {harness:,.0f} | {kernel:.2f} | {kernel / CMSIS_NN[kind]:.2f}x |{same}")

    for kind, cin, cout, k, h, w in CMSIS_SHAPES:  # the same shapes as CMSIS-NN's figures
        single = synthetic(kind, cin, cout, k, h, w, rng)
        row(f"CMSIS-NN's shape | {single.layers[0].node}", single, kind)
    for name, path in models():
        if name not in ("digits", "kws_dscnn"):
            continue
        prog = lower(path)
        for i, layer in enumerate(prog.layers):
            kind = layer_kind(layer)
            if kind is not None:
                row(f"{name} | {i} {layer.node[-24:]}", one_layer(prog, layer), kind)


def fc_cost(rng) -> None:
    """A fully connected layer's instructions as a + C·(b + K·c) (K inputs, C outputs), solved from three synthetic
    layers, each without its harness (``harness_instructions``): what a call costs (a: dispatch, the input column),
    an output besides its MACs (b: the requantization, its share of the two-row dot product's loop) and a MAC (c) —
    why layers of a few dozen inputs cannot reach a per-MAC figure measured on 256."""
    # far apart (30 more outputs, 960 more MACs), so that what rounding is left moves b and c little
    t1, t2, t3 = (instructions(synthetic("fc", k, c, 1, 1, 1, rng), rng) - harness_instructions(k + c, rng)
                  for k, c in ((32, 10), (32, 40), (128, 10)))  # the kernel alone: the harness taken off
    per_mac = (t3 - t1) / 960
    per_output = (t2 - t1 - 30 * 32 * per_mac) / 30
    per_call = t1 - 10 * per_output - 320 * per_mac
    print(f"\nFC kernel cost model (QEMU, from 32->10, 32->40, 128->10, the harness taken off): {per_call:,.0f} "
          f"instructions per call + {per_output:,.0f} per output + {per_mac:.2f} per MAC.")
    for k, c in ((32, 10), (64, 12)):
        floor = (per_call + k * c * per_mac) / (k * c)
        print(f"  FC {k}->{c}: {floor:.2f} instructions/MAC with no per-output cost at all; "
              f"1.3x CMSIS-NN's FC figure is {1.3 * CMSIS_NN['fc']:.2f}")


def main() -> None:
    import sys

    rng = np.random.default_rng(0)
    per_layer(rng)
    fc_cost(rng)
    if "--layers-only" in sys.argv:
        return
    print()
    base_flash, base_ram = size(build("mps2-an386"))
    print(f"harness alone (shim-only firmware): flash {base_flash:,} B, RAM {base_ram:,} B "
          f"(of which stack {STACK:,} B)\n")
    print("| model | layers | MACs | instructions/inference | instructions/MAC | shim | shim instructions/call "
          "| shim share | flash (model + harness) | RAM (model + harness) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, path in models():
        prog = lower(path)
        src = model_source(prog, name)
        flash, ram = size(build("mps2-an386", model_sources=(src,)))
        tin, tout = prog.tensors[prog.input], prog.tensors[prog.output]
        shim = shim_for(prog)
        with open_link("qemu", model_c=src) as link:
            ticks = [link.infer(rng.integers(-128, 128, tin.size), tout.size).model_ticks for _ in range(5)]
            link.set_params(shim, 9)
            sample = rng.integers(-128, 128, shim.num_classes) if isinstance(shim, ClassifierShim) else np.array([5])
            bench = link.bench(shim, sample, 1000)
        model_insn = float(np.median(ticks)) * QEMU_INSTRUCTIONS_PER_TICK
        shim_insn = bench.per_call() * QEMU_INSTRUCTIONS_PER_TICK
        kind = f"classifier K={shim.num_classes}" if isinstance(shim, ClassifierShim) else "window N=32"
        print(f"| {name} | {len(prog.layers)} | {prog.macs():,} | {model_insn:,.0f} | {model_insn / prog.macs():.1f} "
              f"| {kind} | {shim_insn:,.0f} | {shim_insn / model_insn:.3%} | {flash:,} B | {ram:,} B |")


if __name__ == "__main__":
    main()
