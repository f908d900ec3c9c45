"""The keyword recognizer of a ``keyword_stream`` plan as C: ``PREFIX_params.h``, ``PREFIX_shim.h`` / ``.c``
(``PREFIX_recognizer_init`` over the caller's rings, then ``tmlr_recognizer_step_s8`` per inference) and a
self-test whose expected outputs the Python twin (``repair.plan.shims.StreamShim``) computed on a random stream.
"""

from __future__ import annotations

import numpy as np

from .c_array import c_array

SELFTEST_STEPS = 512


def recognizer_files(shim, P: str, banner: str, version_check: str, seed: int = 0) -> dict[str, str]:
    p = P.lower()
    params = (banner + f"#ifndef {P}_PARAMS_H\n#define {P}_PARAMS_H\n\n#include \"tmlr.h\"\n\n{version_check}\n"
              "/* TFLM RecognizeCommands settings, fitted by tmlrepair fit-stream */\n"
              f"#define {P}_NUM_CLASSES {shim.num_classes}\n#define {P}_KEYWORD {shim.keyword}\n"
              f"#define {P}_SILENCE_CLASS ({shim.silence_class})\n#define {P}_AVERAGE_WINDOW_MS {shim.window_ms}\n"
              f"#define {P}_DETECTION_THRESHOLD {shim.threshold}\n#define {P}_SUPPRESSION_MS {shim.suppression_ms}\n"
              f"#define {P}_MINIMUM_COUNT {shim.min_count}\n"
              f"/* results one averaging window held on the fitting stream: size the rings for your inference rate */\n"
              f"#define {P}_RING_CAPACITY {shim.capacity}\n\n#endif /* {P}_PARAMS_H */\n")
    header = (banner + f"#ifndef {P}_SHIM_H\n#define {P}_SHIM_H\n\n#include \"tmlr.h\"\n\n"
              f"/* Set up the fitted recognizer over the caller's rings: score_ring[{P}_RING_CAPACITY * {P}_NUM_CLASSES],\n"
              f" * time_ring[{P}_RING_CAPACITY]. Then, per inference: tmlr_recognizer_step_s8(r, int8 posteriors,\n"
              " * time in ms, &label, &score, &is_new_command). */\n"
              f"tmlr_status {p}_recognizer_init(tmlr_recognizer_s8 *r, int8_t *score_ring, int32_t *time_ring);\n\n"
              f"#endif /* {P}_SHIM_H */\n")
    source = (banner + f'#include "{p}_shim.h"\n#include "{p}_params.h"\n\n'
              f"tmlr_status {p}_recognizer_init(tmlr_recognizer_s8 *r, int8_t *score_ring, int32_t *time_ring)\n{{\n"
              f"    return tmlr_recognizer_init_s8(r, score_ring, time_ring, {P}_RING_CAPACITY, {P}_NUM_CLASSES,\n"
              f"                                   {P}_AVERAGE_WINDOW_MS, {P}_DETECTION_THRESHOLD, {P}_SUPPRESSION_MS,\n"
              f"                                   {P}_MINIMUM_COUNT, {P}_SILENCE_CLASS);\n}}\n")
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
    selftest = (banner + f'#include <stdio.h>\n\n#include "{p}_params.h"\n#include "{p}_shim.h"\n\n'
                + c_array("int32_t", "times", times) + c_array("int8_t", "scores", scores)
                + c_array("int32_t", "expected", expected)
                + "\nint main(void)\n{\n"
                f"    static int8_t score_ring[{P}_RING_CAPACITY * {P}_NUM_CLASSES];\n"
                f"    static int32_t time_ring[{P}_RING_CAPACITY];\n    tmlr_recognizer_s8 r;\n"
                "    int i;\n    int passed = 0;\n    int failed = 0;\n"
                f"    if ({p}_recognizer_init(&r, score_ring, time_ring) != TMLR_OK) {{\n"
                '        printf("0 passed, 1 failed\\n");\n        return 1;\n    }\n'
                f"    for (i = 0; i < {n}; ++i) {{\n        int32_t label = 0;\n        int32_t score = 0;\n"
                "        uint8_t fired = 0;\n"
                f"        if (tmlr_recognizer_step_s8(&r, &scores[i * {k}], times[i], &label, &score, &fired) == TMLR_OK &&\n"
                "            label == expected[3 * i] && score == expected[3 * i + 1] && fired == expected[3 * i + 2]) {\n"
                "            ++passed;\n        } else {\n            ++failed;\n"
                '            printf("step %d differs\\n", i);\n        }\n    }\n'
                '    printf("%d passed, %d failed\\n", passed, failed);\n    return failed == 0 ? 0 : 1;\n}\n')
    return {f"{p}_params.h": params, f"{p}_shim.h": header, f"{p}_shim.c": source, f"{p}_selftest.c": selftest}
