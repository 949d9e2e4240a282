"""docs/protocol.md is the contract: its layouts and example frames must match the code."""

from __future__ import annotations

import re

import pytest

from firmware_bridge.codec import FLAG_DUPLICATE, FLAG_RETRANSMIT, FrameDecoder
from firmware_bridge.messages import REGISTRY, decode_message, schema_hash, schema_text
from tests.support.paths import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```frame\n# (.+)\n([0-9A-F ]+)\n```", DOC)
WIRE_NAMES = {
    "Hello": "HELLO", "Heartbeat": "HEARTBEAT", "Freeze": "FREEZE", "EndIn": "END_IN", "Stop": "STOP",
    "GetCounters": "GET_COUNTERS", "CalRead": "CAL_READ", "CalWrite": "CAL_WRITE", "ClearFault": "CLEAR_FAULT",
    "EventAck": "EVENT_ACK", "HelloAck": "HELLO_ACK", "Ack": "ACK", "Telemetry": "TELEMETRY", "Event": "EVENT",
    "Counters": "COUNTERS", "CalData": "CAL_DATA", "Bye": "BYE", "BoundEvent": "BOUND_EVENT",
}


def test_every_message_is_documented_with_its_type_and_layout() -> None:
    assert set(WIRE_NAMES) == {cls.__name__ for cls in REGISTRY.values()}
    for msg_type, cls in REGISTRY.items():
        row = f"| 0x{msg_type:02X} | {WIRE_NAMES[cls.__name__]} | `{cls.LAYOUT.format}` |"
        assert row in DOC, f"docs/protocol.md lacks or misstates: {row}"


@pytest.mark.parametrize("minor", [0, 1])
def test_schema_text_and_hash_in_the_document_are_the_codes(minor: int) -> None:
    """Each version's canonical schema text is printed verbatim, with its hash."""
    assert f"0x{schema_hash(minor):08X}" in DOC
    assert schema_text(minor) in DOC, f"docs/protocol.md lacks the verbatim schema text of 1.{minor}"


def test_there_are_examples_of_the_main_exchanges() -> None:
    names = {line.split()[0] for line, _ in EXAMPLES}
    assert {"HELLO", "HELLO_ACK", "HEARTBEAT", "FREEZE", "ACK", "TELEMETRY", "EVENT", "EVENT_ACK", "STOP", "BYE",
            "BOUND_EVENT"} <= names


@pytest.mark.parametrize(("title", "hexdump"), EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_example_frame_decodes_as_described(title: str, hexdump: str) -> None:
    name, direction, *fields = title.split()
    header = dict(field.split("=") for field in fields)
    frames = FrameDecoder().feed(bytes.fromhex(hexdump))
    assert len(frames) == 1, "an example must be exactly one valid frame"
    frame = frames[0]
    msg = decode_message(frame.msg_type, frame.payload)
    assert WIRE_NAMES[type(msg).__name__] == name
    assert (direction == "device->host") == msg.FROM_DEVICE
    assert frame.seq == int(header["seq"]) and frame.txn == int(header["txn"])
    flags = {"RETRANSMIT": FLAG_RETRANSMIT, "DUPLICATE": FLAG_DUPLICATE}.get(header.get("flags", ""), 0)
    assert frame.flags == flags
