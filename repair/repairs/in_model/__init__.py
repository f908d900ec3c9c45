"""In-model repairs: edit the int8 QDQ model's numbers (biases, weights, activation ranges), never its ops."""

from .fit import IN_MODEL_REPAIRS, InModelResult, fit_in_model
from .qdq import QdqModel

__all__ = ["IN_MODEL_REPAIRS", "InModelResult", "QdqModel", "fit_in_model"]
