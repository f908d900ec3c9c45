"""The int8 side of a model pair run as the device computes it: the integer program in place of onnxruntime.

``ProgramRunner.run(feed, names)`` takes the same float-model feed and tensor names an onnxruntime session of
the int8 model would, and returns the same arrays — int8 values of the model's quantized tensors, the model's
output as the int8 model gives it (int8, or dequantized where the model ends in a DequantizeLinear) — computed
by the integer program (bit-exact with TFLite Micro), so drift, check and the reports measure the device's
arithmetic, not onnxruntime's float simulation of QDQ.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..models import ModelPair, QuantParams
from .ir import IntProgram
from .lower_onnx import lower

COMPUTED_BY = "integer program (TFLite Micro arithmetic, as the device computes)"


class ProgramRunner:
    def __init__(self, pair: ModelPair, program: IntProgram):
        self.pair, self.program = pair, program
        tin = program.tensors[program.input]
        spec = pair.int8.inputs[0].quant
        self.input_quant = QuantParams(tin.scale, tin.zero_point, "int8", spec.rounding if spec else "half_even")
        self.float_output = np.dtype(pair.int8.outputs[0].dtype).kind == "f"

    @classmethod
    def for_pair(cls, pair: ModelPair) -> "ProgramRunner | None":
        """The runner of ``pair``'s int8 model, or None when the program cannot express it (say why: ``reason``)."""
        try:
            return cls(pair, lower(pair.int8.proto))
        except ModelError:
            return None

    def quantize(self, x: np.ndarray, codes: bool = False) -> np.ndarray:
        """Float model inputs → the program's int8 input, one flat row per sample: the input pre-shim (if the
        model has one) then the input quantization (``codes``: its integers as float32, ``QuantParams.quantize``)."""
        x = np.asarray(x)
        if self.program.input_affine is not None:
            a, b = self.program.input_affine
            x = np.asarray(x, np.float32) * a + b  # as InputAffine.apply
        return self.input_quant.quantize(x, codes).reshape(len(x), -1)

    def _output_codes(self, x: np.ndarray) -> np.ndarray:
        """The program's output integers on float inputs ``x``, one flat row per sample, float32 from input to output
        (no int8 copies: ecg, 1,000 samples, ``output_values`` 0.84–0.91 → 0.76–0.80 ms)."""
        out = self.program.output
        return self.program.run_tensors(self.quantize(x, codes=True), [out], codes=True)[out].reshape(len(x), -1)

    def output_integers(self, x: np.ndarray) -> np.ndarray:
        """The program's int8 output on float inputs ``x``, one flat row per sample (int64)."""
        return self._output_codes(x).astype(np.int64)

    def output_values(self, x: np.ndarray) -> np.ndarray:
        """The program's output on float inputs ``x``, dequantized (float64), one flat row per sample."""
        t = self.program.tensors[self.program.output]
        return (self._output_codes(x).astype(np.float64) - t.zero_point) * t.scale

    def run(self, x: np.ndarray, names: list[str], codes: bool = False) -> list[np.ndarray]:
        """Arrays for ``names`` on float inputs ``x`` (the float model's feed), as onnxruntime would return them; with
        ``codes``, the integer tensors as float32 arrays of their integers (``IntProgram.run_tensors``)."""
        q = self.quantize(x, codes=True)
        # a caller's batch (drift's data batches) in one piece when it is not far above the program's own: the
        # split 256 = 83 + 83 + 83 + 7 cost digits' drift 0.22 s where whole batches took 0.17 (5,000 samples,
        # when its own batch was 83; now 167); ic_resnet8's 256 stays four of its 64 (whole: 15% slower)
        whole = len(q) if len(q) <= 2 * self.program.auto_batch() else None
        values = self.program.run_tensors(q, names, batch=whole, codes=codes)
        out_name = self.pair.int8.outputs[0].name
        result = []
        for name in names:
            v = values[name]
            if name == out_name and self.float_output:
                t = self.program.tensors[self.program.output]
                v = ((v.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)).reshape(
                    len(x), *self.pair.int8.outputs[0].shape)
            result.append(v)
        return result
