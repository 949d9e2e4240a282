"""The host session state machine, with plain numbers for time and no I/O."""

from __future__ import annotations

import pytest

from firmware_bridge.codec import FLAG_DUPLICATE, FLAG_RETRANSMIT, Frame, FrameDecoder, encode_frame
from firmware_bridge.messages import (
    PROTO_MAJOR,
    PROTO_MINOR,
    Ack,
    BoundEvent,
    Bye,
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
    schema_hash,
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


def hello_ack(boot: int = 1, minor: int = 0) -> HelloAck:
    return HelloAck(1, minor, DeviceKind.SPRAY, Cryogen.N2O, 1, 0, 0, "S", boot, 60000, 250, Capability(0), 0, schema_hash(minor), 7)


def telemetry(boot: int = 1, uptime: int = 100) -> Telemetry:
    return Telemetry(uptime, boot, DeviceState.READY, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def ready_session(minor: int = 0) -> HostSession:
    """A session with a device of protocol 1.minor, whose first telemetry (uptime 10 ms) has come."""
    session = HostSession(retry_interval_s=0.06, max_attempts=5)
    txn, _ = session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    session.receive(device_frame(hello_ack(minor=minor), 0, txn), 0.01)
    assert session.state is SessionState.READY and session.minor == minor
    session.receive(device_frame(telemetry(uptime=10), 1), 0.02)
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
    first = session.receive(device_frame(event, 2), 1.0)
    again = session.receive(device_frame(event, 3), 1.1)
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
    assert session.receive(device_frame(telemetry(uptime=1000), 2), 1.0).events
    assert session.receive(device_frame(telemetry(uptime=3_600_000), 3), 1.1).events == []  # an hour ahead in 0.1 s
    assert session.stats.future_frames == 1
    assert session.receive(device_frame(telemetry(uptime=1100), 4), 1.1).events  # the true stream goes on


def bound(event_id: int, boot: int = 1, session_id: int = 7, uptime: int = 500) -> BoundEvent:
    return BoundEvent(event_id, EventCode.FREEZE_DONE, EndReason.COMPLETED, 2, 0, 1000, 1000, 0xFFFFFFFF, uptime, boot, session_id)


def test_a_1_1_event_is_bound_to_this_boot_and_session() -> None:
    session = ready_session(minor=1)
    (ours,) = session.receive(device_frame(bound(1), 2), 1.0).events
    assert isinstance(ours, DeviceEventReceived) and not ours.earlier_session and ours.device_session == 7
    (earlier,) = session.receive(device_frame(bound(2, session_id=99), 3), 1.1).events
    assert isinstance(earlier, DeviceEventReceived) and earlier.earlier_session and earlier.device_session == 99
    older_boot = session.receive(device_frame(bound(3, boot=0), 4), 1.2)
    assert older_boot.events == [] and older_boot.to_send == []  # not even acked: its id is another boot's
    assert session.stats.other_boot_frames == 1


def test_an_unbound_event_is_not_believed_in_a_1_1_session() -> None:
    session = ready_session(minor=1)
    event = Event(5, EventCode.FREEZE_DONE, EndReason.COMPLETED, 2, 0, 1000, 5000, 0xFFFFFFFF, 50)
    assert session.receive(device_frame(event, 2), 1.0).events == []


def test_telemetry_from_an_older_boot_is_dropped_not_taken_for_a_reboot() -> None:
    session = ready_session()
    session.boot_count = 3
    assert session.receive(device_frame(telemetry(boot=2, uptime=20), 2), 1.0).events == []
    assert session.state is SessionState.READY and session.stats.other_boot_frames == 1


def test_a_1_0_event_waits_for_the_session_start_and_an_earlier_one_is_marked() -> None:
    session = HostSession()
    txn, _ = session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    session.receive(device_frame(hello_ack(), 0, txn), 0.01)
    old = Event(1, EventCode.WATCHDOG_TRIP, EndReason.NONE, 0, 1, 0, 0, 0xFFFFFFFF, 400)
    held = session.receive(device_frame(old, 1), 0.02)
    assert held.events == [] and len(held.to_send) == 1  # acked at once, reported once the start is known
    out = session.receive(device_frame(telemetry(uptime=900), 2), 0.03)
    (marked,) = [e for e in out.events if isinstance(e, DeviceEventReceived)]
    assert marked.earlier_session and marked.event == old
    new = Event(2, EventCode.FAULT_RAISED, EndReason.NONE, 0, 8, 0, 0, 0xFFFFFFFF, 950)
    (current,) = session.receive(device_frame(new, 3), 0.04).events
    assert isinstance(current, DeviceEventReceived) and not current.earlier_session


def test_txns_start_where_the_link_says_and_bye_closes_the_session() -> None:
    session = HostSession(first_txn=40000)
    txn, _ = session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    assert txn == 40000
    session.receive(device_frame(hello_ack(minor=1), 0, txn), 0.01)
    bye_txn, _ = session.request(Bye(0), 0.1)
    session.receive(device_frame(Ack(Bye.MSG_TYPE, Result.OK, 0, 0), 1, bye_txn), 0.11)
    assert session.state is SessionState.CLOSED and session.device_session is None


def test_frames_that_come_before_hello_ack_are_judged_by_its_boot() -> None:
    """A device reset as the port opens (DTR): frames of the old boot may still be in flight."""
    session = HostSession()
    txn, _ = session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    old_state = session.receive(device_frame(telemetry(boot=4, uptime=90_000), 0), 0.01)  # seqs just below the answer's:
    old_event = session.receive(device_frame(bound(9, boot=4, session_id=3), 1), 0.01)  # only the boot gives them away
    earlier = session.receive(device_frame(bound(1, boot=5, session_id=3), 2), 0.01)
    far = session.receive(device_frame(Event(4, EventCode.WATCHDOG_TRIP, EndReason.NONE, 0, 1, 0, 0, 0xFFFFFFFF, 7), 900), 0.01)
    assert [o.events or o.to_send for o in (old_state, old_event, earlier, far)] == [[], [], [], []]  # nothing acked or believed yet
    out = session.receive(device_frame(hello_ack(boot=5, minor=1), 3, txn), 0.02)
    (filed,) = [e for e in out.events if isinstance(e, DeviceEventReceived)]
    assert filed.event.event_id == 1 and filed.earlier_session and len(out.to_send) == 1  # only this boot's event is acked
    assert session.stats.other_boot_frames == 2 and session.stats.stale_frames == 1  # seq 900: not sent just before HELLO_ACK
    assert session.receive(device_frame(telemetry(boot=5, uptime=30), 4), 0.03).events  # this boot's telemetry is not "stale"


def test_a_hello_with_no_answer_lets_a_new_one_be_tried() -> None:
    session = HostSession(retry_interval_s=0.06, max_attempts=2)
    session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 7), 0.0)
    session.poll(0.1)
    (expired,) = session.poll(0.2).events
    assert isinstance(expired, RequestExpired) and session.state is SessionState.CLOSED
    session.request(Hello(PROTO_MAJOR, PROTO_MINOR, 250, 8), 0.3)  # allowed again


def test_a_refused_bye_leaves_the_session_open() -> None:
    session = ready_session(minor=1)
    bye_txn, _ = session.request(Bye(0), 0.1)
    session.receive(device_frame(Ack(Bye.MSG_TYPE, Result.UNSUPPORTED, 0, 0), 5, bye_txn), 0.11)
    assert session.state is SessionState.READY and session.device_session == 7
