"""A profile of every thread of a command: ``tmlrepair --profile FILE <command> …``.

cProfile sees only the thread that enabled it, and tmlrepair's passes do much of their work in others: drift runs
the float model in one worker thread and folds the statistics in another (``repair.drift.measure``), so
``python -m cProfile`` shows the main thread waiting on a lock where those run. ``every_thread`` profiles the calling
thread and each Python thread started while it is active — ``threading.setprofile`` hands every new thread a hook
that starts a ``cProfile.Profile`` of its own — and then writes them merged into one pstats file (read it with
``python -m pstats FILE`` or any pstats viewer) and gives each thread's wall time in it, by thread name.
Time spent in onnxruntime's and OpenBLAS's own threads is counted in the call that waits for them.
"""

from __future__ import annotations

import cProfile
import marshal
import pstats
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .atomic import check_writable, write_atomic
from .errors import OutputExistsError


@contextmanager
def every_thread(path: str | Path, report=None):
    """Profile the ``with`` body and every thread it starts; at its end (also when it raises) write the merged
    pstats file to ``path`` (which must not exist: checked before the body runs) and call ``report`` with one line
    saying where it is and each thread's total."""
    if Path(path).exists():
        raise OutputExistsError(f"{path} already exists: give the profile a new file (or remove that one)")
    target = check_writable(path, overwrite=False)
    profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def start_in_new_thread(frame, event, arg):
        sys.setprofile(None)  # this hook runs once per thread: it hands the thread to a profiler of its own
        profile = cProfile.Profile()
        with lock:
            profiles.append((threading.current_thread().name, profile))
        profile.enable()

    main = cProfile.Profile()
    profiles.append((threading.current_thread().name, main))
    threading.setprofile(start_in_new_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            taken = list(profiles)
        merged = None
        per_thread: dict[str, float] = {}
        for name, profile in taken:
            stats = pstats.Stats(profile)
            per_thread[name] = per_thread.get(name, 0.0) + sum(entry[2] for entry in stats.stats.values())
            merged = stats if merged is None else merged.add(stats)
        write_atomic(target, marshal.dumps(merged.stats))
        if report is not None:
            totals = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in per_thread.items())
            report(f"profile of every thread written to {target} (python -m pstats {target}); "
                   f"wall time per thread, its waits included: {totals}")
