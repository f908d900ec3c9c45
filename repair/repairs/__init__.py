"""Repairs without retraining, each an estimator with a float and an exact integer path."""

from .base import REGISTRY, Repair, from_dict
from .class_thresholds import ClassThresholds
from .score_threshold import ScoreThreshold
from .stream_recognizer import StreamRecognizer
from .temperature import TemperatureScaling
from .vector_scaling import VectorScaling
from .window_boundary import WindowBoundary

__all__ = ["REGISTRY", "ClassThresholds", "Repair", "ScoreThreshold", "StreamRecognizer", "TemperatureScaling", "VectorScaling",
           "WindowBoundary", "from_dict"]
