"""int8 ONNX → the reference device's integer program (lower), its Python twin (IntProgram.run), its C (emit)."""

from .lower import lower
from .program import IntProgram, Layer, QTensor

__all__ = ["IntProgram", "Layer", "QTensor", "lower"]
