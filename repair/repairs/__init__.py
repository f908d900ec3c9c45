"""Repairs without retraining, each an estimator with a float and an exact integer path."""

from .after_model.base import REGISTRY, Repair, from_dict
from .after_model.class_thresholds import ClassThresholds
from .after_model.score_threshold import ScoreThreshold
from .after_model.stream_recognizer import StreamRecognizer
from .after_model.temperature import TemperatureScaling
from .after_model.vector_scaling import VectorScaling
from .after_model.window_boundary import WindowBoundary

__all__ = ["REGISTRY", "ClassThresholds", "Repair", "ScoreThreshold", "StreamRecognizer", "TemperatureScaling", "VectorScaling",
           "WindowBoundary", "from_dict"]
