"""Float-vs-int8 drift: metric functions, streaming statistics, measure_drift, DriftReport."""

from .measure import measure_drift
from .report import SCHEMA, DriftReport

__all__ = ["SCHEMA", "DriftReport", "measure_drift"]
