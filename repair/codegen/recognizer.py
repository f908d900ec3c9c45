"""The keyword recognizer of a ``keyword_stream`` plan as C: ``PREFIX_params.h``, ``PREFIX_shim.h`` / ``.c``
(``PREFIX_recognizer_init`` over the caller's rings, then ``tmlr_recognizer_step_s8`` per inference) and a
self-test whose expected outputs the Python twin (``repair.plan.shims.StreamShim``) computed on a random stream.
"""

from __future__ import annotations

import numpy as np

from .c_array import c_array
from .templates import render

SELFTEST_STEPS = 512


def recognizer_files(shim, P: str, banner: str, version_check: str, seed: int = 0) -> dict[str, str]:
    p = P.lower()
    names = {"banner": banner, "P": P, "p": p}
    params = render("recognizer_params.h", **names, version_check=version_check, num_classes=shim.num_classes,
                    keyword=shim.keyword, silence_class=shim.silence_class, window_ms=shim.window_ms,
                    threshold=shim.threshold, suppression_ms=shim.suppression_ms, min_count=shim.min_count,
                    capacity=shim.capacity)
    header = render("recognizer_shim.h", **names)
    source = render("recognizer_shim.c", **names)
    rng = np.random.default_rng(seed)
    k, n = shim.num_classes, SELFTEST_STEPS
    step = max(1, shim.window_ms // max(shim.capacity - 1, 1) + 1)  # never more results per window than the ring
    times = np.cumsum(np.full(n, step)) + int(rng.integers(0, 1000))
    scores = rng.integers(-128, -60, (n, k))
    burst = (np.arange(n) // 16) % 3 == 0  # runs of the keyword, then of other classes
    scores[burst, shim.keyword] = rng.integers(60, 128, int(burst.sum()))
    other = ~burst & (rng.random(n) < 0.5)
    scores[other, rng.integers(0, k, int(other.sum()))] = rng.integers(0, 128, int(other.sum()))
    want = shim.run(np.column_stack([scores, times]))
    expected = np.column_stack([want["label"], want["score"], want["fired"]])
    arrays = (c_array("int32_t", "times", times) + c_array("int8_t", "scores", scores)
              + c_array("int32_t", "expected", expected))
    selftest = render("recognizer_selftest.c", **names, arrays=arrays, steps=n, classes=k)
    return {f"{p}_params.h": params, f"{p}_shim.h": header, f"{p}_shim.c": source, f"{p}_selftest.c": selftest}
