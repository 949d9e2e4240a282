"""docs/protocol.md is the contract: its layouts and example frames must match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_bridge.codec import FLAG_DUPLICATE, FLAG_RETRANSMIT, FrameDecoder
from firmware_bridge.messages import REGISTRY, SCHEMA_HASH, decode_message

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```frame\n# (.+)\n([0-9A-F ]+)\n```", DOC)
WIRE_NAMES = {
    "Hello": "HELLO", "Heartbeat": "HEARTBEAT", "Freeze": "FREEZE", "EndIn": "END_IN", "Stop": "STOP",
    "GetCounters": "GET_COUNTERS", "CalRead": "CAL_READ", "CalWrite": "CAL_WRITE", "ClearFault": "CLEAR_FAULT",
    "EventAck": "EVENT_ACK", "HelloAck": "HELLO_ACK", "Ack": "ACK", "Telemetry": "TELEMETRY", "Event": "EVENT",
    "Counters": "COUNTERS", "CalData": "CAL_DATA",
}


def test_every_message_is_documented_with_its_type_and_layout() -> None:
    assert set(WIRE_NAMES) == {cls.__name__ for cls in REGISTRY.values()}
    for msg_type, cls in REGISTRY.items():
        row = f"| 0x{msg_type:02X} | {WIRE_NAMES[cls.__name__]} | `{cls.LAYOUT.format}` |"
        assert row in DOC, f"docs/protocol.md lacks or misstates: {row}"


def test_schema_hash_in_the_document_is_the_codes() -> None:
    assert f"0x{SCHEMA_HASH:08X}" in DOC


def test_there_are_examples_of_the_main_exchanges() -> None:
    names = {line.split()[0] for line, _ in EXAMPLES}
    assert {"HELLO", "HELLO_ACK", "HEARTBEAT", "FREEZE", "ACK", "TELEMETRY", "EVENT", "EVENT_ACK", "STOP"} <= names


@pytest.mark.parametrize(("title", "hexdump"), EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_example_frame_decodes_as_described(title: str, hexdump: str) -> None:
    name, direction, *fields = title.split()
    header = dict(field.split("=") for field in fields)
    frames = FrameDecoder().feed(bytes.fromhex(hexdump))
    assert len(frames) == 1, "an example must be exactly one valid frame"
    frame = frames[0]
    msg = decode_message(frame.msg_type, frame.payload)
    assert WIRE_NAMES[type(msg).__name__] == name
    assert msg.FROM_DEVICE == (direction == "device->host")
    assert frame.seq == int(header["seq"]) and frame.txn == int(header["txn"])
    flags = {"RETRANSMIT": FLAG_RETRANSMIT, "DUPLICATE": FLAG_DUPLICATE}.get(header.get("flags", ""), 0)
    assert frame.flags == flags
