"""Keep freed heap memory in the process: the integer program's batches allocate the same sizes again and again.

glibc's malloc hands the free memory at the top of its heap back to the kernel as soon as more than
M_TRIM_THRESHOLD of it is free (128 KiB until it adapts), and serves blocks above M_MMAP_THRESHOLD by mmap, unmapped
when freed. The next batch's arrays of the same sizes then fault their pages in again, 4 KiB at a time: on
MLPerf Tiny's ad01 (ten fully connected layers, arrays of 32–320 KB) 3,052 page faults per 1,000-sample run, which
took 14.5 ms instead of 6.0 ms; on ecg 852 faults, 3.0 ms instead of 1.0 (``scripts/bench_program.py`` measures the
program with this set). onnxruntime keeps its own arena, so it never pays this.

``keep_freed_memory`` sets the trim threshold to 128 MiB and fixes the mmap threshold at 32 MiB (glibc's own
ceiling for its adaptive one, mallopt(3)), so the batches' arrays come from memory the process already holds. The
cost: up to 128 MiB freed after a peak stays in the process until it exits. The command line calls it; a library
user may. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
TRIM_THRESHOLD = 128 << 20
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Set glibc malloc's trim and mmap thresholds (module docstring); whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
