"""The host build: the integer program's requantization, drift's statistics, the activation thresholds' error
curve and the ECE bootstrap's sums in C, built for this machine.

``c_patches/host/tmlr_program_host.c`` runs the device's own ``tmlr_requantize`` (tmlr_fixedpoint.h) over a
whole layer's accumulators in one pass — where numpy needs a dozen and onnxruntime's float64 form (``graph``)
ten. ``c_patches/host/tmlr_error_stats_host.c``, in the same library, folds a float/int8 tensor pair into drift's
error statistics in one pass (``repair.drift.stats``); ``c_patches/host/tmlr_quant_mse_host.c`` computes the
squared error of a curve of int8 quantizers on one sample of values (``repair.repairs.in_model.thresholds``);
``c_patches/host/tmlr_bootstrap_host.c`` the per-bin sums of the ECE bootstrap's resamples (``repair.metrics``).
It is compiled once with the host's C compiler (``$CC``, else ``cc``/``gcc``; ``-O3``, and ``-march=native``
where the compiler takes it) into the build cache (``resources.cache_dir``: ``$TMLREPAIR_CACHE``, else
``~/.cache/tmlrepair``), named by a hash of the sources, flags, compiler and CPU features, and loaded with ctypes.
Without a compiler (or with ``TMLREPAIR_HOST_C=0``) ``library()`` is None and the program runs its graphs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import metrics
from ..resources import c_library_dir, cache_dir, host_compiler

_SOURCES = ("host/tmlr_program_host.c", "host/tmlr_error_stats_host.c", "host/tmlr_quant_mse_host.c",
            "host/tmlr_bootstrap_host.c")
_HEADER = "include/tmlr_fixedpoint.h"
#: -fopenmp-simd: the statistics' reductions vectorize under `omp simd` (no OpenMP runtime is linked)
_FLAG_SETS = (["-O3", "-march=native", "-fopenmp-simd"], ["-O3", "-fopenmp-simd"], ["-O3"])
_lock = threading.Lock()
_loaded: dict = {}


def _cpu() -> bytes:
    """What -march=native compiled for: the CPU's feature flags (a cache shared between machines must not hand one
    a library built for another's instruction set)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return (platform.machine() + flags).encode()


def _build(cc: str, lib_dir: Path) -> ctypes.CDLL | None:
    source = b"".join((lib_dir / s).read_bytes() for s in (*_SOURCES, _HEADER)) + _cpu()
    for flags in _FLAG_SETS:
        digest = hashlib.sha1(source + " ".join([cc, *flags]).encode()).hexdigest()[:16]
        target = cache_dir() / "host" / f"tmlr_host-{digest}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, renamed into place
                built = Path(tmp) / target.name
                r = subprocess.run([cc, *flags, "-std=c99", "-shared", "-fPIC", "-I", str(lib_dir / "include"),
                                    "-o", str(built), *(str(lib_dir / s) for s in _SOURCES)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    continue
                os.replace(built, target)
        lib = ctypes.CDLL(str(target))
        p, n, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int32
        lib.tmlr_host_requantize.restype = None
        lib.tmlr_host_requantize.argtypes = [p, n, n, n, p, p, p, i32, i32, i32, p]
        lib.tmlr_host_error_stats.restype = None
        lib.tmlr_host_error_stats.argtypes = [p, p, i32, n, n, ctypes.c_float, i32, p, i32, i32, p, p]
        lib.tmlr_host_quant_sse.restype = None
        lib.tmlr_host_quant_sse.argtypes = [p, n, p, p, n, p]
        lib.tmlr_host_bootstrap_bin_sums.restype = None
        lib.tmlr_host_bootstrap_bin_sums.argtypes = [p, n, n, n, p, p, n, p]
        return lib
    return None


def library() -> ctypes.CDLL | None:
    """The host build (built on first use), or None: no compiler, a failed build, or ``TMLREPAIR_HOST_C=0``."""
    if os.environ.get("TMLREPAIR_HOST_C", "1") == "0":
        return None
    with _lock:
        if "lib" not in _loaded:
            cc = host_compiler()
            try:
                _loaded["lib"] = _build(cc, c_library_dir()) if cc else None
            except OSError:  # an unwritable cache, a library that does not load
                _loaded["lib"] = None
        return _loaded["lib"]


_prepared_cache: dict = {}


def _prepared(p: dict, bias: np.ndarray, bound: np.ndarray, channels: int):
    """(mult, shift, bias) as the C function takes them (int32 per channel), or None where it does not apply;
    kept per layer (its cached constants: the same objects batch after batch)."""
    key = (id(p["mult"]), id(p["shift"]), id(bias), id(bound), channels)
    hit = _prepared_cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], (p["mult"], p["shift"], bias, bound))):
        return hit[1]
    mult = np.broadcast_to(np.asarray(p["mult"], np.int64).reshape(-1), (channels,))
    shift = np.broadcast_to(np.asarray(p["shift"], np.int64).reshape(-1), (channels,))
    bias64 = np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (channels,))
    value = None
    if shift.min(initial=0) >= -31 and shift.max(initial=0) <= 30 and not np.any(bound >= 2.0 ** 31):
        value = tuple(np.ascontiguousarray(v, np.int32) for v in (mult, shift, bias64))
    if len(_prepared_cache) > 1024:
        _prepared_cache.clear()
    _prepared_cache[key] = ((p["mult"], p["shift"], bias, bound), value)
    return value


def requantize(sums: np.ndarray, bias: np.ndarray, bound: np.ndarray, p: dict) -> np.ndarray | None:
    """clamp(z_y + requantize(sums + bias_c)) for layer ``p`` (mult, shift per channel or per tensor, out_zp,
    act_min, act_max): ``sums`` float32 [N, C, ...] of exact integers, ``bias`` [C] integers, ``bound`` ≥
    |sums + bias| per channel. None without the host build, for shifts outside TFLM's [−31, 30], or where
    sums + bias could leave int32 (the device would overflow; the caller's exact path decides)."""
    lib = library()
    if lib is None:
        return None
    args = _prepared(p, bias, bound, sums.shape[1])
    if args is None:
        return None
    mult, shift, bias32 = args
    # a fully connected layer's [N, C] sums as the transpose of [C, N] (``sums.fc_sums``): one plane per channel
    channels_last = sums.ndim == 2 and sums.dtype == np.float32 and sums.T.flags.c_contiguous
    planes = sums.T[None] if channels_last else np.ascontiguousarray(sums, np.float32)
    n, c = planes.shape[0], planes.shape[1]
    out = np.empty_like(planes)
    lib.tmlr_host_requantize(planes.ctypes.data, n, c, planes.size // max(n * c, 1), bias32.ctypes.data,
                             mult.ctypes.data, shift.ctypes.data, int(p["out_zp"]), int(p["act_min"]),
                             int(p["act_max"]), out.ctypes.data)
    return out[0].T if channels_last else out


def resample_bin_sums(draws: np.ndarray, bins: np.ndarray, gaps: np.ndarray, n_bins: int) -> np.ndarray:
    """``repair.metrics.resample_bin_sums`` by the host build's C (``c_patches/host/tmlr_bootstrap_host.c``: one
    gather per draw, no matrix of draw counts), that function itself without the host build. The same sums up to
    their order (each resample's in the order drawn)."""
    draws = np.ascontiguousarray(draws, np.int32)
    bins, gaps = np.ascontiguousarray(bins, np.int32), np.ascontiguousarray(gaps, np.float64)
    if draws.size and (draws.min() < 0 or draws.max() >= draws.shape[1] or bins.min() < 0 or bins.max() >= n_bins):
        raise ValueError("resample_bin_sums: a draw or a bin out of range")  # the C indexes with them unchecked
    lib = library()
    if lib is None:
        return metrics.resample_bin_sums(draws, bins, gaps, n_bins)
    sums = np.zeros((len(gaps), len(draws), n_bins))
    lib.tmlr_host_bootstrap_bin_sums(draws.ctypes.data, len(draws), draws.shape[1], len(gaps), bins.ctypes.data,
                                     gaps.ctypes.data, n_bins, sums.ctypes.data)
    return sums
