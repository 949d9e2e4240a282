"""The host session state machine, with plain numbers for time and no I/O."""

from __future__ import annotations

import pytest

from firmware_bridge.codec import FLAG_DUPLICATE, FLAG_RETRANSMIT, Frame, FrameDecoder, encode_frame
from firmware_bridge.messages import (
    PROTO_MAJOR,
    PROTO_MINOR,
    SCHEMA_HASH,
    Ack,
    Capability,
    Cryogen,
    DeviceKind,
    DeviceState,
    EndReason,
    Event,
    EventAck,
    EventCode,
    Freeze,
    FreezeMode,
    Hello,
    HelloAck,
    Message,
    Result,
    Telemetry,
    TriggerMode,
    decode_message,
)
from firmware_bridge.session import (
    DeviceEventReceived,
    ForeignVersion,
    HostSession,
    NotAllowed,
    RebootDetected,
    Reply,
    RequestExpired,
    SessionState,
)


def frame_of(wire: bytes) -> Frame:
    (frame,) = FrameDecoder().feed(wire)
    return frame


def device_frame(msg: Message, seq: int, txn: int = 0, flags: int = 0, major: int = PROTO_MAJOR) -> Frame:
    return Frame(major, PROTO_MINOR, msg.MSG_TYPE, flags, seq, txn, msg.pack())


def hello_ack(boot: int = 1) -> HelloAck:
    return HelloAck(1, 0, DeviceKind.SPRAY, Cryogen.N2O, 1, 0, 0, "S", boot, 60000, 250, Capability(0), 0, SCHEMA_HASH, 7)


def telemetry(boot: int = 1, uptime: int = 100) -> Telemetry:
    return Telemetry(uptime, boot, DeviceState.READY, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def ready_session() -> HostSession:
    session = HostSession(retry_interval_s=0.06, max_attempts=5)
    txn, _ = session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    session.receive(device_frame(hello_ack(), 0, txn), 0.01)
    assert session.state is SessionState.READY
    return session


def test_only_hello_is_allowed_before_the_handshake() -> None:
    with pytest.raises(NotAllowed, match="not allowed while the session is closed"):
        HostSession().request(Freeze(FreezeMode.TIMED, TriggerMode.HOST, 1000), 0.0)


def test_retransmissions_reuse_the_txn_with_the_retransmit_flag_then_expire() -> None:
    session = ready_session()
    txn, wire = session.request(Freeze(FreezeMode.TIMED, TriggerMode.HOST, 1000), 1.0)
    first = frame_of(wire)
    assert first.txn == txn and not first.flags & FLAG_RETRANSMIT
    assert session.poll(1.03).to_send == []  # not due yet
    resent = [frame_of(w) for t in (1.07, 1.14, 1.21, 1.28) for w in session.poll(t).to_send]
    assert [f.txn for f in resent] == [txn] * 4
    assert all(f.flags & FLAG_RETRANSMIT for f in resent)
    assert len({f.seq for f in [first, *resent]}) == 5  # every send has its own seq
    out = session.poll(1.35)
    assert out.to_send == [] and out.events == [RequestExpired(txn, Freeze(FreezeMode.TIMED, TriggerMode.HOST, 1000), 5)]


def test_a_duplicate_reply_is_flagged_and_a_late_second_reply_ignored() -> None:
    session = ready_session()
    txn, _ = session.request(Freeze(FreezeMode.TIMED, TriggerMode.HOST, 1000), 1.0)
    ack = Ack(Freeze.MSG_TYPE, Result.OK, 0, 1000)
    out = session.receive(device_frame(ack, 1, txn, FLAG_DUPLICATE), 1.1)
    assert out.events == [Reply(txn, ack, duplicate=True)]
    assert session.receive(device_frame(ack, 2, txn), 1.2).events == []


def test_each_event_is_acked_every_time_but_reported_once() -> None:
    session = ready_session()
    event = Event(5, EventCode.FREEZE_DONE, EndReason.COMPLETED, 2, 0, 1000, 1001, 0xFFFFFFFF, 50)
    first = session.receive(device_frame(event, 1), 1.0)
    again = session.receive(device_frame(event, 2), 1.1)
    assert [type(e) for e in first.events] == [DeviceEventReceived]
    assert again.events == []
    for out in (first, again):
        (ack,) = out.to_send
        assert decode_message(frame_of(ack).msg_type, frame_of(ack).payload) == EventAck(5)


def test_old_sequence_numbers_and_uptime_going_backwards_are_ignored() -> None:
    session = ready_session()
    assert session.receive(device_frame(telemetry(uptime=100), 10), 1.0).events
    assert session.receive(device_frame(telemetry(uptime=200), 9), 1.1).events == []  # old seq
    assert session.receive(device_frame(telemetry(uptime=50), 11), 1.2).events == []  # device time went back
    assert session.stats.stale_frames == 2


def test_a_reboot_voids_every_pending_request_and_restarts_seq_tracking() -> None:
    session = ready_session()
    txn, _ = session.request(Freeze(FreezeMode.TIMED, TriggerMode.HOST, 1000), 1.0)
    out = session.receive(device_frame(telemetry(boot=2, uptime=5), 0), 1.1)
    kinds = [type(e) for e in out.events]
    assert RebootDetected in kinds and RequestExpired in kinds
    assert session.state is SessionState.REBOOTED
    assert [e.txn for e in out.events if isinstance(e, RequestExpired)] == [txn]
    assert session.poll(5.0).to_send == []  # nothing is ever resent across a reboot


def test_a_peer_with_another_major_version_is_reported_not_decoded() -> None:
    session = HostSession()
    session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    wire = encode_frame(Frame(2, 3, 0x81, 0, 0, 1, b"\x02\x03anything"))
    assert session.receive(frame_of(wire), 0.1).events == [ForeignVersion(2, 3, 0x81)]


def test_telemetry_from_the_future_is_ignored() -> None:
    session = ready_session()
    assert session.receive(device_frame(telemetry(uptime=1000), 1), 1.0).events
    assert session.receive(device_frame(telemetry(uptime=3_600_000), 2), 1.1).events == []  # an hour ahead in 0.1 s
    assert session.stats.future_frames == 1
    assert session.receive(device_frame(telemetry(uptime=1100), 3), 1.1).events  # the true stream goes on
