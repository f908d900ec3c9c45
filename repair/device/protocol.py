"""Messages of the device protocol (docs/protocol.md): what each command's payload holds, both ways.

Little-endian throughout. The device side is c_patches/device/tmlr_device.c; the layouts here and there
are checked against each other by tests that talk to the compiled device.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..plan.shims import AnomalyShim, ClassifierShim, StreamShim

PROTOCOL_VERSION = 1

HELLO, SET_PARAMS, INFER, SHIM, BENCH, RESET, LOAD, PROBE, READ, ERROR = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                                                          0x08, 0x09, 0x7F)
REPLY = 0x80
COMMAND_NAMES = {HELLO: "hello", SET_PARAMS: "set-params", INFER: "infer", SHIM: "shim", BENCH: "bench", LOAD: "load", PROBE: "probe", READ: "read",
                 RESET: "reset", ERROR: "error"}

# error codes (TMLR_E_*)
E_UNKNOWN_COMMAND, E_BAD_LENGTH, E_OVERFLOW, E_FRAMING, E_CRC = 1, 2, 3, 4, 5
E_NO_PARAMS, E_NO_MODEL, E_STREAM_POS, E_BAD_PARAMS, E_MODEL_FAILED, E_FAULT, E_STAGE = 6, 7, 8, 9, 10, 11, 12
ERROR_NAMES = {1: "unknown command", 2: "bad payload length", 3: "frame too long", 4: "bad framing",
               5: "CRC mismatch", 6: "no parameters uploaded", 7: "no model on the device",
               8: "unexpected stream position", 9: "parameters out of range", 10: "the model failed",
               11: "the CPU faulted", 12: "the staged input was lost"}
LINK_ERRORS = frozenset({E_OVERFLOW, E_FRAMING, E_CRC})  # the request did not arrive intact: retransmit

KIND_CLASSIFIER, KIND_THRESHOLD, KIND_WINDOW, KIND_RECOGNIZER = 1, 2, 3, 4
CAP_SHIM, CAP_MODEL, CAP_LOAD, CAP_PROBE, CAP_PRE_SHIM = 0x1, 0x2, 0x4, 0x8, 0x10
RESET_STATE, RESET_PARAMS, RESET_REBOOT = 0, 1, 2
DEFAULT_MAX_PAYLOAD = 2048  # TMLR_DEV_MAX_PAYLOAD's default, until hello says otherwise


@dataclass(frozen=True)
class TensorInfo:
    dims: tuple[int, ...]
    size: int
    scale: float
    zero_point: int


@dataclass(frozen=True)
class Hello:
    protocol: int
    library: int
    capabilities: int
    max_payload: int
    counter_hz: int
    params_id: int
    shim_kind: int
    max_classes: int
    max_window: int
    model_input: TensorInfo | None
    model_output: TensorInfo | None
    board: str

    @property
    def has_model(self) -> bool:
        return bool(self.capabilities & CAP_MODEL)

    def describe(self) -> str:
        model = (f"model {list(self.model_input.dims)} → {list(self.model_output.dims)}" if self.has_model
                 else "shim-only (no model on the device)")
        return (f"{self.board}: protocol {self.protocol}, library {self.library}, {model}, "
                f"max payload {self.max_payload} B, counter {self.counter_hz} Hz")


def _tensor(p: bytes) -> TensorInfo | None:
    ndim = p[0]
    dims = struct.unpack_from("<4H", p, 1)[:ndim]
    size, scale_bits, zp = struct.unpack_from("<IIi", p, 9)
    if size == 0:
        return None
    return TensorInfo(tuple(dims), size, struct.unpack("<f", struct.pack("<I", scale_bits))[0], zp)


def parse_hello(p: bytes) -> Hello:
    if len(p) < 65 or len(p) != 65 + p[64]:
        raise ValueError(f"hello reply of {len(p)} bytes")
    proto, lib, caps, max_payload, hz, params_id, kind, max_classes, max_window = struct.unpack_from(
        "<BHIHIIBHH", p, 0)
    return Hello(proto, lib, caps, max_payload, hz, params_id, kind, max_classes, max_window,
                 _tensor(p[22:43]), _tensor(p[43:64]), p[65:].decode("ascii", "replace"))


def pack_params(shim: ClassifierShim | AnomalyShim, params_id: int) -> bytes:
    """SET_PARAMS payload for a plan's shim chain (repair.plan.shims)."""
    if not 0 < params_id < 2 ** 32:
        raise ValueError("params_id must be in 1 .. 2^32-1")
    if isinstance(shim, ClassifierShim):
        k = shim.num_classes
        flags = ((1 if shim.affine is not None else 0) | (2 if shim.thresholds is not None else 0)
                 | (4 if shim.softmax is None else 0))
        out = struct.pack("<IBHBiii", params_id, KIND_CLASSIFIER, k, flags, *(shim.softmax or (0, 0, 0)))
        if shim.affine is not None:
            a = shim.affine
            out += struct.pack("<ii", a["input_zero_point"], a["output_zero_point"])
            out += struct.pack(f"<{3 * k}i", *a["multipliers"], *a["shifts"], *a["offsets"])
        if shim.thresholds is not None:
            out += struct.pack(f"<{k}b", *shim.thresholds)
        return out
    if isinstance(shim, StreamShim):
        return struct.pack("<IBHHiBiHh", params_id, KIND_RECOGNIZER, shim.num_classes, shim.capacity, shim.window_ms,
                           shim.threshold, shim.suppression_ms, shim.min_count, shim.silence_class)
    if shim.kind == "threshold":
        out = struct.pack("<IBi", params_id, KIND_THRESHOLD, shim.threshold_q)
    else:
        out = struct.pack("<IBHiB", params_id, KIND_WINDOW, shim.window, shim.alpha2_q, shim.alpha2_frac_bits)
    if shim.recon is not None:  # INFER computes the autoencoder's score on the device
        r = shim.recon
        out += struct.pack("<IiiiiiB", r["size"], r["input_zero_point"], r["output_zero_point"], r["mult_ee"],
                           r["mult_ef"], r["mult_ff"], r["shift"])
    return out


def shim_sample_bytes(shim: ClassifierShim | AnomalyShim) -> tuple[int, int]:
    """(bytes in, bytes out) per sample through SHIM."""
    if isinstance(shim, ClassifierShim):
        return shim.num_classes, shim.num_classes + (2 if shim.thresholds is not None else 0)
    if isinstance(shim, StreamShim):
        return shim.num_classes + 4, 4
    return 2, 1


def pack_shim_inputs(shim: ClassifierShim | AnomalyShim, raw: np.ndarray) -> bytes:
    """Raw outputs of a batch as SHIM carries them: int8 logits, int16 le anomaly scores, or a stream's steps
    (K int8 posteriors, then the i32 le time in ms)."""
    if isinstance(shim, StreamShim):
        v = np.asarray(raw, np.int64).reshape(-1, shim.num_classes + 1)
        rows = np.zeros(len(v), [("scores", "i1", (shim.num_classes,)), ("time", "<i4")])
        rows["scores"], rows["time"] = v[:, :-1], v[:, -1]
        return rows.tobytes()
    if isinstance(shim, ClassifierShim):
        return np.asarray(raw, np.int8).reshape(-1, shim.num_classes).tobytes()
    return np.asarray(raw, "<i2").reshape(-1).tobytes()


def pack_shim_request(pos: int, samples: bytes, count: int) -> bytes:
    return struct.pack("<IH", pos, count) + samples


def parse_shim_reply(shim: ClassifierShim | AnomalyShim, p: bytes, pos: int, count: int) -> dict[str, np.ndarray]:
    """Split a SHIM reply into the same arrays ClassifierShim.run / AnomalyShim.run return."""
    if len(p) < 6:
        raise ValueError("shim reply too short")
    end, got = struct.unpack_from("<IH", p, 0)
    per = shim_sample_bytes(shim)[1]
    if end != pos + count or got != count or len(p) != 6 + count * per:
        raise ValueError(f"shim reply for samples {end - got}..{end} ({len(p)} bytes), expected {pos}..{pos + count}")
    return _shim_samples(shim, p[6:], count)


def _shim_samples(shim: ClassifierShim | AnomalyShim, body: bytes, count: int) -> dict[str, np.ndarray]:
    """``count`` samples of shim outputs, as ClassifierShim.run / AnomalyShim.run return them."""
    rows = np.frombuffer(body, np.uint8).reshape(count, shim_sample_bytes(shim)[1])
    if isinstance(shim, StreamShim):
        return {"label": rows[:, :2].copy().view("<i2").reshape(-1).astype(np.int64),
                "score": rows[:, 2].astype(np.int64), "fired": rows[:, 3].astype(np.int8)}
    if isinstance(shim, ClassifierShim):
        k = shim.num_classes
        out = {"probs": rows[:, :k].view(np.int8).copy()}
        if shim.thresholds is not None:
            out["decision"] = rows[:, k:k + 2].copy().view("<i2").reshape(-1).astype(np.int64)
        return out
    return {"alarm": rows[:, 0].astype(np.int8)}


def pack_bench(shim: ClassifierShim | AnomalyShim, sample: np.ndarray, iterations: int) -> bytes:
    return struct.pack("<I", iterations) + pack_shim_inputs(shim, sample)[:shim_sample_bytes(shim)[0]]


@dataclass(frozen=True)
class BenchResult:
    iterations: int
    ticks: int        # counter ticks for `iterations` calls of the shim chain (plus the empty loop)
    empty_ticks: int  # counter ticks of the empty loop alone
    counter_hz: int
    checksum: int

    def per_call(self) -> float:
        """Counter ticks per shim call, the empty loop subtracted."""
        return (self.ticks - self.empty_ticks) / self.iterations


def parse_bench(p: bytes, iterations: int) -> BenchResult:
    ticks, empty, hz, checksum = struct.unpack("<QQII", p)
    return BenchResult(iterations, ticks, empty, hz, checksum)


@dataclass(frozen=True)
class InferResult:
    raw: np.ndarray            # the model's int8 output
    shim: dict | None          # the shim chain's outputs on it (classifier parameters loaded), or an autoencoder's
    #                            score computed on the device ("score", and "alarm" for a threshold), else None
    model_ticks: int           # counter ticks of the model's invoke
    shim_ticks: int


def parse_infer(p: bytes, out_size: int, shim) -> InferResult:
    if len(p) < 9 + out_size:
        raise ValueError(f"infer reply of {len(p)} bytes for an output of {out_size}")
    model_ticks, shim_ticks, shimmed = struct.unpack_from("<IIB", p)
    raw = np.frombuffer(p, np.int8, out_size, 9).copy()
    out = None
    if shimmed and isinstance(shim, AnomalyShim):  # the device's reconstruction score, and its alarm (threshold)
        body = p[9 + out_size:]
        if len(body) != (3 if shim.kind == "threshold" else 2):
            raise ValueError(f"infer reply with a {len(body)}-byte score")
        out = {"score": struct.unpack_from("<h", body)[0], **({"alarm": body[2]} if len(body) == 3 else {})}
    elif shimmed and shim is not None:
        out = {k: v[0] for k, v in _shim_samples(shim, p[9 + out_size:], 1).items()}
    return InferResult(raw, out, model_ticks, shim_ticks)


def parse_error(p: bytes) -> tuple[int, int, int]:
    """(code, command, detail) of an ERROR payload."""
    if len(p) != 6:
        return (0, 0, 0)
    code, cmd, detail = struct.unpack("<BBI", p)
    return code, cmd, detail


def parse_read(p: bytes, layer: int, offset: int) -> tuple[int, bytes]:
    """READ reply → (the layer's output size, the bytes from ``offset``)."""
    if len(p) < 10:
        raise ValueError("read reply too short")
    got_layer, got_offset, size = struct.unpack_from("<HII", p)
    if (got_layer, got_offset) != (layer, offset) or len(p) - 10 > max(0, size - offset):
        raise ValueError(f"read reply for layer {got_layer} at {got_offset} ({len(p)} B), expected {layer} at {offset}")
    return size, p[10:]


def parse_probe(p: bytes) -> np.ndarray:
    """PROBE reply → an array [layers, 3] of (CRC-16, min, max) of every layer's output."""
    if len(p) < 2:
        raise ValueError("probe reply too short")
    n = struct.unpack_from("<H", p)[0]
    if len(p) != 2 + 4 * n:
        raise ValueError(f"probe reply of {len(p)} B for {n} layers")
    rec = np.frombuffer(p, np.uint8, offset=2).reshape(n, 4)
    crc = rec[:, 0].astype(np.int64) | (rec[:, 1].astype(np.int64) << 8)
    return np.stack([crc, rec[:, 2].view(np.int8).astype(np.int64), rec[:, 3].view(np.int8).astype(np.int64)], 1)
