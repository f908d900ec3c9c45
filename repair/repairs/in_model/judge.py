"""Judging an int8 model the way the device computes it: the integer program (TFLite Micro's arithmetic).

``ModelJudge.outputs(model, x)`` lowers the (edited) int8 ONNX model to its integer program
(``repair.program``: bit-exact with TFLM's reference kernels, hence CMSIS-NN), quantizes the float inputs
as the model's input QuantizeLinear does, runs the program and dequantizes its output. Keep/drop decisions
and reported int8 numbers come from here. A model the program cannot express (an op outside its set) is
judged by onnxruntime's float simulation of QDQ instead, and ``judged_on`` says so.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...errors import ModelError
from ...models import ModelPair
from ...program import lower
from ...program.runner import ProgramRunner
from .context import FitContext

PROGRAM = "integer program (TFLite Micro arithmetic, as the device computes)"


JUDGES = ("program", "onnxruntime")


class ModelJudge:
    """``judge="program"`` (the default, what the device computes) or ``"onnxruntime"`` (its float simulation of
    QDQ: for comparisons, and the fallback for a model the program cannot express)."""

    def __init__(self, pair: ModelPair, ctx: FitContext, judge: str = "program"):
        self.pair, self.ctx = pair, ctx
        if judge not in JUDGES:
            raise ValueError(f"judge must be one of {JUDGES}")
        if judge == "onnxruntime":
            self.judged_on = "onnxruntime's float simulation of QDQ (asked for)"
            return
        try:
            lower(pair.int8.proto)
            self.judged_on = PROGRAM
        except ModelError as e:
            self.judged_on = f"onnxruntime's float simulation of QDQ (not the integer program: {e})"

    @property
    def on_program(self) -> bool:
        return self.judged_on == PROGRAM

    def why_not_runnable(self, model: onnx.ModelProto) -> str | None:
        """Why the device could not run ``model`` (an edited candidate), or None: a repair whose model the
        integer program refuses (an int32 bias or accumulator that could overflow, …) is never kept."""
        if not self.on_program:
            return None
        try:
            lower(model)
        except ModelError as e:
            return str(e)
        return None

    def outputs(self, model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        """The model's first output on float inputs ``x``, dequantized, float64, one row per sample."""
        if not self.on_program:
            return self.ctx.outputs(model, x, int8=True)
        return ProgramRunner(self.pair, lower(model)).output_values(x)
