"""The plan stage: fit the repairs (in the model, then after it) into a RepairPlan, fit-scores, the shim chain the
device runs, the plan's text and the fit report; plans read from disk are untrusted (``untrusted``).

Names load on first use (``fit`` pulls in onnxruntime and the in-model repairs; reading a plan must not).
"""

from importlib import import_module

_LAZY = {"RepairPlan": ".plan", "fit_plan": ".fit", "fit_scores": ".fit_scores"}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
