"""Bytes <-> frames: COBS framing, CRC-32 integrity, the fixed frame header. No I/O.

A frame on the wire is ``0x00 COBS(header | payload | crc32) 0x00`` (docs/protocol.md §2).
The decoder is total: any byte string yields frames and error counts, never an
exception, and its buffer never grows past ``MAX_ENCODED_LEN``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

DELIMITER = b"\x00"  # between frames; COBS leaves no zero byte inside one
HEADER = struct.Struct("<BBBBHH")  # proto_major, proto_minor, msg_type, flags, seq, txn
CRC = struct.Struct("<I")
MAX_PAYLOAD_LEN = 240
MAX_FRAME_LEN = HEADER.size + MAX_PAYLOAD_LEN + CRC.size  # 252 decoded bytes
MAX_ENCODED_LEN = MAX_FRAME_LEN + 1  # COBS adds one byte per 254: exactly one here

# The wire's unsigned integer widths: header fields, seq/txn arithmetic, message fields.
U8_MAX = 0xFF
U16_MAX = 0xFFFF  # seq and txn are u16: both wrap after this
U32_MAX = 0xFFFFFFFF

# COBS: a block's code byte is 1 + the length of the zero-free run it carries; a run of
# COBS_MAX_RUN bytes gets the code COBS_FULL_BLOCK, which means "no zero follows this block".
COBS_MAX_RUN = 0xFE
COBS_FULL_BLOCK = 0xFF

# Header flag bits.
FLAG_RETRANSMIT = 0x01  # sender is repeating an earlier frame with the same txn
FLAG_DUPLICATE = 0x02  # device answer replayed from its txn cache: the request was NOT run again


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (the zlib/Ethernet CRC); check value 0xCBF43926 over b"123456789"."""
    return zlib.crc32(data) & U32_MAX


def next_seq(seq: int) -> int:
    """The seq after this one: every frame sent takes the next, wrapping 65535 -> 0."""
    return (seq + 1) & U16_MAX


def next_nonzero_u16(value: int) -> int:
    """The next of a u16 counter that skips 0, in 1..65535: txns (0 = no reply wanted) and event ids."""
    return value % U16_MAX + 1


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00 byte."""
    out = bytearray()
    for run in data.split(DELIMITER):
        start = 0
        while len(run) - start >= COBS_MAX_RUN:
            out.append(COBS_FULL_BLOCK)
            out += run[start : start + COBS_MAX_RUN]
            start += COBS_MAX_RUN
        out.append(len(run) - start + 1)
        out += run[start:]
    return bytes(out)


class FramingError(ValueError):
    """A delimited block is not valid COBS."""


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    index, length = 0, len(data)
    while index < length:
        code = data[index]
        if code == 0:
            raise FramingError("zero byte inside a COBS block")
        end = index + code
        if end > length:
            raise FramingError("COBS block runs past the end of the frame")
        out += data[index + 1 : end]
        index = end
        if code != COBS_FULL_BLOCK and index < length:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Frame:
    proto_major: int
    proto_minor: int
    msg_type: int
    flags: int
    seq: int
    txn: int
    payload: bytes

    def __post_init__(self) -> None:
        for name in ("proto_major", "proto_minor", "msg_type", "flags"):
            if not 0 <= getattr(self, name) <= U8_MAX:
                raise ValueError(f"{name} out of range 0..255: {getattr(self, name)}")
        for name in ("seq", "txn"):
            if not 0 <= getattr(self, name) <= U16_MAX:
                raise ValueError(f"{name} out of range 0..65535: {getattr(self, name)}")
        if len(self.payload) > MAX_PAYLOAD_LEN:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD_LEN}")


def encode_frame(frame: Frame) -> bytes:
    """Frame -> wire bytes, with a delimiter on both sides so a torn frame never glues onto this one."""
    body = (
        HEADER.pack(frame.proto_major, frame.proto_minor, frame.msg_type, frame.flags, frame.seq, frame.txn)
        + frame.payload
    )
    return DELIMITER + cobs_encode(body + CRC.pack(crc32(body))) + DELIMITER


@dataclass(slots=True)
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    short_frames: int = 0
    overflows: int = 0


@dataclass(slots=True)
class FrameDecoder:
    """Incremental, total decoder: feed any bytes, get the good frames back."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    _buffer: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while start < len(data):
            zero = data.find(DELIMITER, start)
            if zero < 0:
                self._accumulate(data[start:])
                break
            self._accumulate(data[start:zero])
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                frame = self._decode(bytes(self._buffer))
                if frame is not None:
                    frames.append(frame)
            self._buffer.clear()
            start = zero + 1
        return frames

    def _accumulate(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buffer) + len(chunk) > MAX_ENCODED_LEN:
            self.stats.overflows += 1
            self._buffer.clear()
            self._discarding = True
            return
        self._buffer += chunk

    def _decode(self, encoded: bytes) -> Frame | None:
        try:
            raw = cobs_decode(encoded)
        except FramingError:
            self.stats.framing_errors += 1
            return None
        if len(raw) < HEADER.size + CRC.size:
            self.stats.short_frames += 1
            return None
        body, (received_crc,) = raw[: -CRC.size], CRC.unpack(raw[-CRC.size :])
        if crc32(body) != received_crc:
            self.stats.crc_errors += 1
            return None
        major, minor, msg_type, flags, seq, txn = HEADER.unpack_from(body)
        self.stats.frames += 1
        return Frame(major, minor, msg_type, flags, seq, txn, body[HEADER.size :])
