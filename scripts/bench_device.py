"""Device link benchmark: samples per second through sim and QEMU, wire efficiency, shim instruction counts.

    python scripts/bench_device.py [--samples 4000]

1. Throughput: the digits classifier chain (vector scaling + softmax + thresholds, 10 classes) and the ECG
   window boundary (N=32) streamed through SHIM on the virtual device and on QEMU mps2-an386, end to end
   (pyserial, framing, CRC, device execution, parsing).
2. Wire efficiency: payload bytes / bytes on the wire for SHIM requests of ~1 KB, both directions
   (COBS + cmd + seq + CRC + delimiters, and the host's leading resync 0x00).
3. Instructions per shim call on the emulated Cortex-M4 (QEMU -icount shift=0: 1 instruction = 1 ns, SysTick
   at 25 MHz = 40 instructions per tick), via BENCH, the empty loop subtracted. Arm -Os build.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from repair import fixedpoint as fp
from repair.device import protocol as P
from repair.device.framing import encode_frame
from repair.device.stream import ShimStream
from repair.device.targets import QEMU_INSTRUCTIONS_PER_TICK, open_link
from repair.plan.shims import AnomalyShim, ClassifierShim


def shims(rng):
    k = 10
    softmax = tuple(int(v) for v in fp.softmax_params(1.0, 0.1))
    mults, shifts = zip(*(fp.quantize_multiplier(float(v)) for v in rng.uniform(0.3, 0.99, k)))
    affine = {"multipliers": list(mults), "shifts": list(shifts), "offsets": rng.integers(-20, 20, k).tolist(),
              "input_zero_point": 3, "output_zero_point": -2}
    thr = rng.integers(-60, 60, k).tolist()
    return {"softmax (K=10)": ClassifierShim(k, None, softmax, None),
            "softmax + thresholds": ClassifierShim(k, None, softmax, thr),
            "affine + softmax + thresholds": ClassifierShim(k, affine, softmax, thr),
            "static threshold": AnomalyShim("threshold", 1.0, threshold_q=1000),
            "window boundary (N=32)": AnomalyShim("window", 1.0, window=32, alpha2_q=2304, alpha2_frac_bits=8)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    table = shims(rng)
    chain, window = table["affine + softmax + thresholds"], table["window boundary (N=32)"]
    logits = rng.integers(-128, 128, (args.samples, 10))
    scores = np.clip(np.rint(np.cumsum(rng.normal(0, 40, args.samples))), -32768, 32767).astype(np.int64)

    print("1. throughput (samples/s, end to end, one run)")
    print("| target | classifier chain | window boundary |\n|---|---|---|")
    for url in ("sim", "qemu"):
        rates = []
        with open_link(url) as link:
            hello = link.hello()
            for shim, x in ((chain, logits), (window, scores)):
                t0 = time.perf_counter()
                out = ShimStream(link, shim, 7, max_payload=hello.max_payload).run(x)
                dt = time.perf_counter() - t0
                assert all((np.asarray(out[k]) == v).all() for k, v in shim.run(x).items()), "not bit-exact"
                rates.append(len(x) / dt)
        print(f"| {url} | {rates[0]:,.0f} | {rates[1]:,.0f} |")

    print("\n2. wire efficiency for ~1 KB payloads (payload bytes / wire bytes)")
    for name, shim, x in (("classifier request (102 samples x 10 B)", chain, logits[:102]),
                          ("window request (512 samples x 2 B)", window, scores[:512])):
        payload = P.pack_shim_request(0, P.pack_shim_inputs(shim, x), len(x))
        wire = 1 + len(encode_frame(P.SHIM, 1, payload))
        print(f"- {name}: {len(payload)} B payload, {wire} B on the wire: {len(payload) / wire:.2%}")
    out = bytes(12 * 85 + 6)  # a classifier reply of 85 samples x 12 B, all zero bytes (COBS's worst case)
    worst = len(encode_frame(P.SHIM | P.REPLY, 1, out))
    rand = rng.integers(0, 256, len(out)).astype(np.uint8).tobytes()
    print(f"- reply {len(out)} B: {len(out) / worst:.2%} when every byte is 0x00 (COBS worst case), "
          f"{len(out) / len(encode_frame(P.SHIM | P.REPLY, 1, rand)):.2%} for random bytes")

    print("\n3. instructions per call on QEMU mps2-an386 (Cortex-M4, -Os), BENCH with 2000 iterations")
    print("| shim | instructions/call |\n|---|---|")
    with open_link("qemu") as link:
        for i, (name, shim) in enumerate(table.items()):
            link.set_params(shim, 100 + i)
            sample = logits[0] if isinstance(shim, ClassifierShim) else scores[:1]
            b = link.bench(shim, sample, 2000)
            print(f"| {name} | {b.per_call() * QEMU_INSTRUCTIONS_PER_TICK:,.0f} |")


if __name__ == "__main__":
    main()
