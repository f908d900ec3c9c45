"""DeviceLink: requests and replies over any pyserial port, with timeouts, retries and resync.

One request is in flight at a time. A request is written as ``0x00 + frame`` (the leading delimiter
flushes whatever half frame the device may hold) and retransmitted, with the same sequence number,
when no matching reply arrives in ``Timeouts.reply`` or the device reports that the frame arrived
damaged. The device answers a retransmission from its reply cache without executing it again, so
every command may be retried. Replies with another sequence number are stale and dropped; garbage
between frames is skipped at the next 0x00. A partial frame that stalls for ``Timeouts.inter_byte``
is dropped. After ``retries`` retransmissions or ``Timeouts.overall`` seconds the request fails with
a DeviceError that names what to check.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import DeviceError
from . import protocol as P
from .framing import Deframer, FrameError, crc16, decode_frame, encode_frame


@dataclass(frozen=True)
class Timeouts:
    """Seconds. inter_byte: a started frame must keep arriving; reply: per attempt; overall: per request."""

    inter_byte: float = 0.25
    reply: float = 1.0
    overall: float = 10.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass
class LinkStats:
    requests: int = 0
    retransmissions: int = 0
    garbage_chunks: int = 0
    stale_replies: int = 0
    bytes_out: int = 0
    bytes_in: int = 0


class Trace:
    """``--trace``: a hex dump of every byte each way, with a timestamp, to a text stream."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def __call__(self, direction: str, data: bytes) -> None:
        if data:
            self.stream.write(f"{time.monotonic() - self.t0:10.6f} {direction} {data.hex(' ')}\n")
            self.stream.flush()


class DeviceLink:
    """hello(), set_params(), shim(), infer(), bench(), reset() over an open pyserial-like port.

    ``port`` needs read(n), write(b), in_waiting and a settable ``timeout``; ``close`` is called on
    close() (a target's stop). ``name`` is what error messages call the device.
    """

    def __init__(self, port, name: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS, retries: int = 8,
                 trace: Callable[[str, bytes], None] | None = None, on_close: Callable[[], None] | None = None,
                 restart: Callable[[], None] | None = None):
        self.port, self.name, self.timeouts, self.retries = port, name, timeouts, retries
        self.trace, self._on_close, self.restart = trace, on_close, restart
        self.stats = LinkStats()
        self._deframer = Deframer()
        self._seq = 0
        self._last_byte_at = 0.0
        self.max_payload: int | None = None  # known after hello()
        self.capabilities: int | None = None
        self._link_errors: list[int] = []  # link-level error codes the device sent during the current request
        self.port.timeout = min(0.02, timeouts.inter_byte / 4)

    # ------------------------------------------------------------------ requests
    def request(self, cmd: int, payload: bytes = b"") -> bytes:
        """Send one command and return its reply's payload; raises DeviceError on an error reply or silence."""
        name = P.COMMAND_NAMES.get(cmd, cmd)
        if self.max_payload is not None and len(payload) > self.max_payload:
            raise DeviceError(f"the {name} request is {len(payload)} B but {self.name} takes at most "
                              f"{self.max_payload} B per frame (its max payload, from hello): rebuild the firmware "
                              f"with a larger TMLR_DEV_MAX_PAYLOAD, or use a smaller input or batch")
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        self._link_errors = []
        wire = b"\x00" + encode_frame(cmd, seq, payload)
        self.stats.requests += 1
        start = time.monotonic()
        deadline = start + self.timeouts.overall
        attempts = 0
        while attempts <= self.retries and time.monotonic() < deadline:
            if attempts:
                self.stats.retransmissions += 1
            attempts += 1
            self._write(wire)
            reply = self._await_reply(cmd, seq, min(deadline, time.monotonic() + self.timeouts.reply))
            if reply is not None:
                return reply
        waited = time.monotonic() - start
        if self._link_errors:
            reasons = sorted({P.ERROR_NAMES.get(c, f"error {c}") for c in self._link_errors})
            hint = (f"the request frame ({len(wire)} B on the wire, payload {len(payload)} B) is longer than the "
                    f"device accepts: rebuild the firmware with a larger TMLR_DEV_MAX_PAYLOAD or send less"
                    if self._link_errors.count(P.E_OVERFLOW) == len(self._link_errors) else
                    "the line is damaging frames: check the cable, the baud rate and the port settings")
            raise DeviceError(f"{self.name} answered {name} with '{', '.join(reasons)}' to all {attempts} "
                              f"attempt(s): {hint}", self._link_errors[-1])
        raise DeviceError(f"no answer from {self.name} to {P.COMMAND_NAMES.get(cmd, cmd)} within {waited:.1f} s "
                          f"({attempts} attempt(s)): check the port name, the baud rate, and that the board runs "
                          f"tmlrepair device firmware (c_patches/device; docs/protocol.md)")

    def _await_reply(self, cmd: int, seq: int, until: float) -> bytes | None:
        """The payload of the reply to (cmd, seq), or None to retransmit (timeout or damaged request)."""
        while True:
            for chunk in self._read_chunks(until):
                try:
                    frame = decode_frame(chunk)
                except FrameError:
                    self.stats.garbage_chunks += 1
                    continue
                if frame.cmd == P.ERROR:
                    code, failed_cmd, detail = P.parse_error(frame.payload)
                    if code in P.LINK_ERRORS:
                        self._link_errors.append(code)
                        return None  # our frame (or garbage before it) arrived damaged: send it again
                    if code == P.E_FAULT:
                        raise DeviceError(f"{self.name} faulted at pc=0x{detail:08x} and restarts: "
                                          f"a bug in the firmware or the model hook", code, detail)
                    if frame.seq == seq:
                        raise DeviceError(f"{self.name} refused {P.COMMAND_NAMES.get(cmd, cmd)}: "
                                          f"{P.ERROR_NAMES.get(code, f'error {code}')}", code, detail)
                elif frame.seq == seq and frame.cmd == (cmd | P.REPLY):
                    return frame.payload
                self.stats.stale_replies += 1
            if time.monotonic() >= until:
                return None

    def _read_chunks(self, until: float) -> list[bytes]:
        """Whatever complete chunks arrive before ``until`` (returns as soon as there is one)."""
        while True:
            now = time.monotonic()
            if self._deframer.pending and now - self._last_byte_at > self.timeouts.inter_byte:
                self._deframer.reset()  # a frame stalled mid-way: drop it, resync at the next 0x00
                self.stats.garbage_chunks += 1
            if now >= until:
                return []
            data = self.port.read(max(1, self.port.in_waiting))
            if data:
                self._last_byte_at = time.monotonic()
                self.stats.bytes_in += len(data)
                if self.trace:
                    self.trace("<", data)
                chunks = self._deframer.feed(data)
                if chunks:
                    return chunks

    def _write(self, data: bytes) -> None:
        if self.trace:
            self.trace(">", data)
        self.stats.bytes_out += len(data)
        try:
            self.port.write(data)
        except OSError as e:  # a vanished pty or USB device
            raise DeviceError(f"cannot write to {self.name}: {e}: is the device still connected?") from None

    # ------------------------------------------------------------------ commands
    def hello(self) -> P.Hello:
        h = P.parse_hello(self.request(P.HELLO))
        self.max_payload, self.capabilities = h.max_payload, h.capabilities
        if h.protocol != P.PROTOCOL_VERSION:
            raise DeviceError(f"{self.name} speaks protocol {h.protocol}, this tmlrepair speaks "
                              f"{P.PROTOCOL_VERSION}: rebuild the firmware from this version's c_patches/")
        return h

    def set_params(self, shim, params_id: int) -> None:
        got = self.request(P.SET_PARAMS, P.pack_params(shim, params_id))
        if int.from_bytes(got, "little") != params_id:
            raise DeviceError(f"{self.name} acknowledged other parameters: rebuild the firmware from this version")

    def shim(self, shim, raw: np.ndarray, pos: int = 0) -> dict[str, np.ndarray]:
        """Run the uploaded shim chain on a batch of raw outputs (samples pos, pos+1, ...)."""
        count = len(raw)
        reply = self.request(P.SHIM, P.pack_shim_request(pos, P.pack_shim_inputs(shim, raw), count))
        return P.parse_shim_reply(shim, reply, pos, count)

    def infer(self, x: np.ndarray, out_size: int, shim=None) -> P.InferResult:
        """Run the device's model on one int8 input; with classifier parameters loaded, its shims too; with an
        autoencoder's anomaly parameters, the score (and a threshold's alarm) computed on the device.

        An input larger than one frame goes up in LOAD chunks (each idempotent, retried like any request), then
        INFER carries only its CRC-16: a device that restarted in between answers "staged input lost" and the
        chunks are sent again, so a lost input is never inferred."""
        raw = np.asarray(x, np.int8).tobytes()
        return P.parse_infer(self._with_input(P.INFER, raw), out_size, shim)

    def probe(self, x: np.ndarray) -> np.ndarray:
        """Run the device's model on one int8 input and return every layer's (CRC-16, min, max) digest."""
        if self.capabilities is not None and not self.capabilities & P.CAP_PROBE:
            raise DeviceError(f"{self.name}'s firmware cannot probe its layers (no PROBE): add the probe hook "
                              "(docs/protocol.md) or rebuild it from this version's c_patches/")
        return P.parse_probe(self._with_input(P.PROBE, np.asarray(x, np.int8).tobytes()))

    def infer_raw(self, readings: np.ndarray, out_size: int, shim=None) -> P.InferResult:
        """Run the device's model on one sample of raw int16 sensor readings, quantized on the device by the
        model's input pre-shim (capability bit 4)."""
        if self.capabilities is not None and not self.capabilities & P.CAP_PRE_SHIM:
            raise DeviceError(f"{self.name}'s firmware has no input pre-shim: send int8 inputs, or rebuild it with "
                              "the repaired model's pre-shim")
        return P.parse_infer(self.request(P.INFER, np.asarray(readings, "<i2").tobytes()), out_size, shim)

    def read_layer(self, x: np.ndarray, layer: int) -> np.ndarray:
        """Run the device's model on one int8 input and return one layer's whole output (int8), a frame's worth
        per run (READ), so a tensor of any size comes back."""
        if self.capabilities is not None and not self.capabilities & P.CAP_PROBE:
            raise DeviceError(f"{self.name}'s firmware cannot read its layers (no PROBE/READ): add the probe hook "
                              "(docs/protocol.md) or rebuild it from this version's c_patches/")
        raw, out, size = np.asarray(x, np.int8).tobytes(), b"", None
        while size is None or len(out) < size:
            prefix = layer.to_bytes(2, "little") + len(out).to_bytes(4, "little")
            size, chunk = P.parse_read(self._with_input(P.READ, raw, prefix), layer, len(out))
            if not chunk and len(out) < size:
                raise DeviceError(f"{self.name} returned no bytes of layer {layer} at {len(out)} of {size}")
            out += chunk
        return np.frombuffer(out, np.int8).copy()

    def _with_input(self, cmd: int, raw: bytes, prefix: bytes = b"") -> bytes:
        """Send ``cmd`` with a model input (after ``prefix``): in the frame when it fits, else LOAD chunks then the
        input's CRC-16 (re-sent when the device lost the staged input)."""
        limit = self.max_payload or P.DEFAULT_MAX_PAYLOAD
        if len(prefix) + len(raw) <= limit:
            return self.request(cmd, prefix + raw)
        if self.capabilities is not None and not self.capabilities & P.CAP_LOAD:
            raise DeviceError(f"the input is {len(raw)} B, more than one frame ({limit} B), and {self.name}'s "
                              "firmware cannot take it in parts (no LOAD): rebuild it from this version's c_patches/")
        crc = crc16(raw).to_bytes(2, "little")
        step = limit - 4
        for attempt in range(3):
            for offset in range(0, len(raw), step):
                self.request(P.LOAD, offset.to_bytes(4, "little") + raw[offset:offset + step])
            try:
                return self.request(cmd, prefix + crc)
            except DeviceError as e:
                if e.code != P.E_STAGE or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def bench(self, shim, sample: np.ndarray, iterations: int) -> P.BenchResult:
        return P.parse_bench(self.request(P.BENCH, P.pack_bench(shim, sample, iterations)), iterations)

    def reset(self, mode: int = P.RESET_STATE, position: int = 0) -> None:
        """RESET_STATE clears the stateful shim (the next sample is ``position``); RESET_PARAMS forgets the
        parameters; RESET_REBOOT restarts the device."""
        self.request(P.RESET, bytes((mode,)) + (position.to_bytes(4, "little") if mode == P.RESET_STATE else b""))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        try:
            self.port.close()
        finally:
            if self._on_close:
                self._on_close()

    def __enter__(self) -> "DeviceLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
