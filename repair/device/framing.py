"""Frames on the wire: COBS( cmd | seq | payload | crc16 le ) 0x00 — the host twin of c_patches/device.

CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor) over cmd, seq
and payload. COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", IEEE/ACM ToN 1999) removes
every 0x00 from the frame at a cost of one byte per 254, so 0x00 can end every frame and a receiver
resynchronises at the next 0x00 after any garbage.
"""

from __future__ import annotations

from dataclasses import dataclass


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        c = byte << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE; crc16(b"123456789") == 0x29B1."""
    c = 0xFFFF
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC_TABLE[(c >> 8) ^ b]
    return c


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter added): no 0x00 in the output, at most len + len//254 + 1 bytes."""
    out = bytearray()
    for block in bytes(data).split(b"\x00"):
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of cobs_encode, or None when ``data`` is not a valid COBS encoding (as the device decides)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        out += data[i + 1:i + code]
        i += code
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes a frame puts on the wire, 0x00 delimiter included."""
    body = bytes((cmd, seq)) + bytes(payload)
    return cobs_encode(body + crc16(body).to_bytes(2, "little")) + b"\x00"


@dataclass(frozen=True)
class Frame:
    cmd: int
    seq: int
    payload: bytes


class FrameError(ValueError):
    """A delimited chunk that is not a frame (bad COBS, too short, or CRC mismatch)."""


def decode_frame(chunk: bytes) -> Frame:
    """Decode one delimited chunk (without its 0x00); raises FrameError like the device's parser."""
    body = cobs_decode(chunk)
    if body is None or len(body) < 4:
        raise FrameError("framing")
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        raise FrameError("crc")
    return Frame(body[0], body[1], body[2:-2])


class Deframer:
    """Splits a byte stream into 0x00-delimited chunks; ``max_chunk`` bounds memory on garbage."""

    def __init__(self, max_chunk: int = 1 << 16):
        self.max_chunk = max_chunk
        self.buffer = bytearray()
        self.overflowed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Chunks completed by ``data`` (empty chunks and overflowed chunks are dropped)."""
        chunks = []
        for part_index, part in enumerate(bytes(data).split(b"\x00")):
            if part_index:  # a delimiter ended the previous part
                if self.buffer and not self.overflowed:
                    chunks.append(bytes(self.buffer))
                self.buffer.clear()
                self.overflowed = False
            self.buffer += part
            if len(self.buffer) > self.max_chunk:
                self.buffer.clear()
                self.overflowed = True
        return chunks

    @property
    def pending(self) -> int:
        """Bytes of a frame started but not yet delimited."""
        return len(self.buffer)

    def reset(self) -> None:
        self.buffer.clear()
        self.overflowed = False
