"""Calibration and holdout sets: load, validate against a model, split, hash."""

from .calibration import CalibrationSet, check_fits, load_calibration, random_in_range

__all__ = ["CalibrationSet", "check_fits", "load_calibration", "random_in_range"]
