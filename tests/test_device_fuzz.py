"""The device's frame parser under ASan and UBSan: >= 100,000 random and mutated frames, every reply checked.

The harness is built for the host with -fsanitize=address,undefined -fno-sanitize-recover=all and fed one
long byte stream on stdin. A Python model of the parser (below) says what the device must answer to every
0x00-delimited chunk: an error naming the fault for garbage, the reference outputs for valid requests, the
cached reply for a retransmission. The device must answer each chunk exactly so, and never crash.
"""

from __future__ import annotations

import struct
import subprocess

import numpy as np

from repair.device import protocol as P
from repair.device.framing import cobs_decode, crc16, encode_frame
from repair.device.targets import build

from .device_helpers import classifier_shim

MAX_PAYLOAD = 2048
FRAME_MAX = MAX_PAYLOAD + 4
ENCODED_MAX = FRAME_MAX + FRAME_MAX // 254 + 2
SANITIZE = ("-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
N_FRAMES = 100_000


def _decode(chunk: bytes):
    """(cmd, seq, payload, crc) of a valid frame; else ("error", code, seq) as the device classifies it."""
    if len(chunk) > ENCODED_MAX:
        return ("error", P.E_OVERFLOW, 0)
    body = cobs_decode(chunk)
    if body is None or len(body) > FRAME_MAX or len(body) < 4:
        return ("error", P.E_FRAMING, 0)
    crc = int.from_bytes(body[-2:], "little")
    if crc16(body[:-2]) != crc:
        return ("error", P.E_CRC, body[1])
    return (body[0], body[1], body[2:-2], crc)


def _error(seq, code, cmd=0, detail=0):
    return encode_frame(P.ERROR, seq, struct.pack("<BBI", code, cmd, detail))


class Model:
    """What tmlr_device.c answers, for a device holding the classifier parameters ``shim``."""

    def __init__(self, shim):
        self.shim, self.last, self.last_reply, self.hello = shim, None, None, None

    def reply(self, chunk: bytes) -> bytes | None:
        d = _decode(chunk)
        if d[0] == "error":
            return _error(d[2], d[1])
        cmd, seq, payload, crc = d
        if self.last == (cmd, seq, crc):
            return self.last_reply
        self.last = (cmd, seq, crc)
        self.last_reply = self._execute(cmd, seq, payload)
        return self.last_reply

    def _execute(self, cmd, seq, p):
        k = self.shim.num_classes
        if cmd == P.HELLO:
            return self.hello  # filled in from the device's first answer, then must never change
        if cmd == P.SHIM:
            if len(p) < 6:
                return _error(seq, P.E_BAD_LENGTH, cmd)
            pos, count = struct.unpack_from("<IH", p)
            if len(p) != 6 + count * k or 6 + count * (k + 2) > MAX_PAYLOAD:
                return _error(seq, P.E_BAD_LENGTH, cmd)
            x = np.frombuffer(p, np.int8, offset=6).reshape(count, k)
            out = self.shim.run(x) if count else {"probs": np.zeros((0, k)), "decision": np.zeros(0)}
            rows = b"".join(np.asarray(pr, np.int8).tobytes() + struct.pack("<h", int(dc))
                            for pr, dc in zip(out["probs"], out["decision"]))
            return encode_frame(cmd | P.REPLY, seq, struct.pack("<IH", (pos + count) & 0xFFFFFFFF, count) + rows)
        if cmd in (P.INFER, P.LOAD, P.PROBE):  # shim-only firmware: no model to run, load or probe
            return _error(seq, P.E_NO_MODEL, cmd)
        return _error(seq, P.E_UNKNOWN_COMMAND, cmd)


def _is_valid_frame(chunk: bytes) -> bool:
    return _decode(chunk)[0] != "error"


def _stream(rng, shim):
    """(bytes to send, the chunks the device will see in order)."""
    k = shim.num_classes
    sent, chunks = [], []
    last_valid = None

    def add(chunk: bytes):
        sent.append(chunk + b"\x00")
        chunks.append(chunk)

    def valid_frame():
        seq = int(rng.integers(0, 256))
        r = rng.random()
        if r < 0.55:
            count = int(rng.integers(0, 21))
            body = struct.pack("<IH", int(rng.integers(0, 2 ** 32)), count) + rng.integers(
                -128, 128, count * k).astype(np.int8).tobytes()
            if rng.random() < 0.1:  # a length that does not match the count
                body = body[:-1] if count and rng.random() < 0.5 else body + b"\x01"
            return encode_frame(P.SHIM, seq, body)[:-1]
        if r < 0.7:
            return encode_frame(P.HELLO, seq, b"")[:-1]
        if r < 0.8:
            return encode_frame(P.INFER, seq, rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8).tobytes())[:-1]
        cmd = int(rng.choice([0x00, 0x07, 0x08, 0x42, 0x7E, 0x7F, 0x80, 0x81, 0x84, 0xFF]))
        return encode_frame(cmd, seq, rng.integers(0, 256, int(rng.integers(0, 30))).astype(np.uint8).tobytes())[:-1]

    def mutate(frame: bytes) -> bytes:
        b = bytearray(frame)
        for _ in range(int(rng.integers(1, 4))):
            op = rng.integers(0, 4)
            i = int(rng.integers(0, max(1, len(b))))
            if op == 0 and b:
                b[i] ^= 1 << int(rng.integers(0, 8))
            elif op == 1 and len(b) > 1:
                del b[i]
            elif op == 2:
                b.insert(i, int(rng.integers(0, 256)))
            elif b:
                del b[i:]
        return bytes(b)

    while len(chunks) < N_FRAMES:
        r = rng.random()
        if r < 0.35:
            f = valid_frame()
            add(f)
            last_valid = f
        elif r < 0.45 and last_valid is not None:
            add(last_valid)  # a retransmission
        elif r < 0.8:
            parts = mutate(valid_frame()).split(b"\x00")
            if all(p and not _is_valid_frame(p) for p in parts):
                for p in parts:
                    add(p)
        else:
            n = int(rng.choice([1, 3, 8, 40, 300, 2100, 3000]))
            parts = rng.integers(0, 256, n).astype(np.uint8).tobytes().split(b"\x00")
            if all(not _is_valid_frame(p) for p in parts if p):
                for p in parts:
                    if p:
                        add(p)
    return b"".join(sent), chunks


def test_parser_survives_100k_random_and_mutated_frames_under_sanitizers():
    rng = np.random.default_rng(2026)
    shim = classifier_shim(rng, 10)
    setup = encode_frame(P.SET_PARAMS, 0, P.pack_params(shim, 4242)) + encode_frame(P.HELLO, 1, b"")
    body, chunks = _stream(rng, shim)
    exe = build("posix", extra_flags=SANITIZE)
    proc = subprocess.run([str(exe)], input=setup + body, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"runtime error" not in proc.stderr and b"AddressSanitizer" not in proc.stderr
    replies = [c + b"\x00" for c in proc.stdout.split(b"\x00")[:-1]]
    assert replies[0] == encode_frame(P.SET_PARAMS | P.REPLY, 0, struct.pack("<I", 4242))
    hello = P.parse_hello(_decode(replies[1][:-1])[2])
    assert hello.params_id == 4242 and hello.shim_kind == P.KIND_CLASSIFIER
    model = Model(shim)
    model.last = (P.HELLO, 1, _decode(setup.split(b"\x00")[1])[3])  # the device's last request: the HELLO above
    expected = []
    for chunk in chunks:
        want = model.reply(chunk)
        expected.append(want)
    got = replies[2:]
    assert len(got) == len(expected) == N_FRAMES
    hello_bytes = None
    wrong = []
    for i, (g, w) in enumerate(zip(got, expected)):
        if w is None:  # a HELLO: its reply must be a hello reply and always the same
            d = _decode(g[:-1])
            ok = d[0] == P.HELLO | P.REPLY and (hello_bytes is None or d[2] == hello_bytes)
            hello_bytes = d[2] if hello_bytes is None else hello_bytes
        else:
            ok = g == w
        if not ok:
            wrong.append(i)
    assert not wrong, f"{len(wrong)} wrong replies, first at chunk {wrong[0]}: {chunks[wrong[0]][:40].hex()}"
    kinds = [_decode(c)[0] for c in chunks]
    assert kinds.count("error") > 30_000 and sum(k == P.SHIM for k in kinds) > 15_000
