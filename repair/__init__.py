"""tmlrepair: post-deployment accuracy repair for int8 TinyML models.

Library first: every CLI command is a thin wrapper over a function here. Heavy
modules (onnx, onnxruntime, scipy) load on first use, so ``tmlrepair --help`` is fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "load_pair": "repair.models",
    "ModelPair": "repair.models",
    "build_tensor_map": "repair.models",
    "TensorMap": "repair.models",
    "load_calibration": "repair.data",
    "CalibrationSet": "repair.data",
    "measure_drift": "repair.drift",
    "DriftReport": "repair.drift",
    "fit_plan": "repair.plan.fit",
    "fit_scores": "repair.plan.fit_scores",
    "load_scores": "repair.data.scores",
    "RepairPlan": "repair.plan.plan",
    "emit": "repair.codegen.emit",
    "run_check": "repair.check.gate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'repair' has no attribute {name!r}")
