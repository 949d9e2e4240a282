"""The frame codec: golden vectors, and properties over arbitrary byte streams."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import (
    MAX_ENCODED_LEN,
    MAX_PAYLOAD_LEN,
    Frame,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc32,
    encode_frame,
)


def test_crc_is_crc32_iso_hdlc_with_its_catalogue_check_value() -> None:
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"123456789") == zlib.crc32(b"123456789")


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [  # the classic COBS examples (Cheshire & Baker 1999)
        ("00", "0101"),
        ("0000", "010101"),
        ("11220033", "0311220233"),
        ("11223344", "0511223344"),
        ("11000000", "0211010101"),
    ],
)
def test_cobs_golden_vectors(raw: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(raw)).hex() == encoded
    assert cobs_decode(bytes.fromhex(encoded)).hex() == raw


def test_cobs_long_runs_use_the_0xff_code() -> None:
    data = bytes(range(1, 256)) * 2
    assert 0 not in cobs_encode(data)
    assert cobs_decode(cobs_encode(data)) == data


frames = st.builds(
    Frame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=MAX_PAYLOAD_LEN),
)


@given(st.lists(frames, min_size=1, max_size=8), st.data())
def test_frames_survive_arbitrary_chunking(items: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])
    assert got == items


@settings(max_examples=300)
@given(st.binary(max_size=4000))
def test_garbage_never_raises_and_memory_stays_bounded(garbage: bytes) -> None:
    decoder = FrameDecoder()
    for i in range(0, len(garbage), 97):
        decoder.feed(garbage[i : i + 97])
        assert len(decoder._buffer) <= MAX_ENCODED_LEN


@given(st.binary(max_size=600), frames)
def test_resynchronises_on_the_next_good_frame(garbage: bytes, frame: Frame) -> None:
    decoder = FrameDecoder()
    got = decoder.feed(garbage + encode_frame(frame))
    assert got[-1:] == [frame]


@given(frames, st.data())
def test_any_single_bit_flip_is_rejected(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(frame))
    index = data.draw(st.integers(1, len(wire) - 2))
    wire[index] ^= 1 << data.draw(st.integers(0, 7))
    assert FrameDecoder().feed(bytes(wire)) == []  # CRC-32 catches every single-bit error


@given(frames, st.integers(1, 40))
def test_truncated_frame_is_dropped_and_the_next_one_kept(frame: Frame, cut: int) -> None:
    wire = encode_frame(frame)
    torn = wire[: max(1, len(wire) - 1 - cut)]
    decoder = FrameDecoder()
    assert decoder.feed(torn + encode_frame(frame)) == [frame]


def test_oversized_run_is_discarded_and_counted() -> None:
    decoder = FrameDecoder()
    good = Frame(1, 0, 0x83, 0, 1, 0, b"x")
    assert decoder.feed(b"\x01" * 1000 + b"\x00" + encode_frame(good)) == [good]
    assert decoder.stats.overflows == 1


def test_frame_fields_are_range_checked() -> None:
    with pytest.raises(ValueError, match="seq"):
        Frame(1, 0, 1, 0, 70000, 0, b"")
    with pytest.raises(ValueError, match="payload"):
        Frame(1, 0, 1, 0, 0, 0, bytes(MAX_PAYLOAD_LEN + 1))
