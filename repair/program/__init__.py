"""int8 ONNX → the reference device's integer program (lower), its Python twin (IntProgram.run), its C (emit)."""

from .ir import IntProgram, Layer, QTensor
from .lower_onnx import lower

__all__ = ["IntProgram", "Layer", "QTensor", "lower"]
