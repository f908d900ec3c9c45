"""TfliteBuilder: write a .tflite flatbuffer from tensors and operators (TFLite's schema, object API), no
TensorFlow. Used to make .tflite models from ONNX ones (scripts/onnx_to_tflite.py, the bundled tasks) and by
the tests that drive TFLite Micro with random operators."""

from __future__ import annotations

import numpy as np

from .tflite_file import INT8, schema


class TfliteBuilder:
    def __init__(self):
        S = schema()
        self.S = S
        self.buffers = [S.BufferT()]  # buffer 0: empty, for activations
        self.tensors: list = []
        self.ops: list = []  # (builtin, inputs, outputs, options type, options)

    def tensor(self, shape, dtype: int = INT8, scale=None, zero_point=None, data=None, axis: int = 0,
               name: str | None = None) -> int:
        """A tensor (a constant when ``data`` is given); quantized when ``scale`` is given. Returns its index."""
        t = self.S.TensorT()
        t.shape = [int(d) for d in shape]
        t.type = dtype
        t.name = (name or f"t{len(self.tensors)}").encode()
        t.buffer = 0
        if data is not None:
            b = self.S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).copy()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = self.S.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point if zero_point is not None else 0)]
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, builtin: int, inputs, outputs, options_type: int = 0, options=None) -> None:
        self.ops.append((builtin, list(inputs), list(outputs), options_type, options))

    def finish(self, graph_input: int, graph_output: int, description: str = "") -> bytes:
        import flatbuffers

        S = self.S
        codes, operators = [], []
        for builtin, inputs, outputs, options_type, options in self.ops:
            if builtin not in codes:
                codes.append(builtin)
            op = S.OperatorT()
            op.opcodeIndex = codes.index(builtin)
            op.inputs, op.outputs = inputs, outputs
            op.builtinOptionsType, op.builtinOptions = options_type, options
            operators.append(op)
        g = S.SubGraphT()
        g.tensors, g.inputs, g.outputs, g.operators = self.tensors, [graph_input], [graph_output], operators
        m = S.ModelT()
        m.version = 3
        m.description = description.encode() if description else None
        m.operatorCodes = []
        for builtin in codes:
            code = S.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, 127)
            code.version = 1
            m.operatorCodes.append(code)
        m.subgraphs = [g]
        m.buffers = self.buffers
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
