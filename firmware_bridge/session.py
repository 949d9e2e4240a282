"""The host side of the protocol as a state machine with no I/O and no clock of its own.

The link feeds it frames and the current time and writes whatever bytes it returns. Everything
about sequence numbers, transaction ids, retransmission, event de-duplication and reboot
detection lives here, so it can be tested exhaustively with plain numbers for time.

Every device frame that reports state is bound to this session before it is believed: telemetry
to the device's boot, events (protocol 1.1) to the boot and the session they were raised in, and
1.0 events to the device uptime at which this session opened. A frame from another boot is
dropped; an event of an earlier session is delivered marked as such, never as this session's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from firmware_bridge.codec import FLAG_DUPLICATE, FLAG_RETRANSMIT, U16_MAX, Frame, encode_frame, next_nonzero_u16, next_seq
from firmware_bridge.messages import (
    PROTO_MAJOR,
    PROTO_MINOR,
    Ack,
    BoundEvent,
    Bye,
    DecodeError,
    Event,
    EventAck,
    Hello,
    HelloAck,
    Message,
    Result,
    Telemetry,
    decode_message,
)

FUTURE_SLACK_MS = 1000  # device uptime may run ahead of the host's clock by this, plus twice the elapsed time
MAX_HELD_EVENTS = 32  # 1.0 events held until this session's start uptime is known (the device keeps 32 too)
HELD_SEQ_WINDOW = 64  # frames held while HELLO was pending are believed only if sent just before HELLO_ACK
SEEN_EVENT_IDS = 256  # event ids remembered to drop a repeated event's copies
SEQ_HALF_RANGE = 0x8000  # a seq this far ahead of the newest, or further, is behind it (serial number arithmetic)


class SessionState(enum.Enum):
    CLOSED = "closed"  # no handshake yet, or the previous one ended
    HELLO_SENT = "hello_sent"
    READY = "ready"
    REBOOTED = "rebooted"  # the device's boot counter changed: nothing pending survives


# Which requests each state allows; anything else is refused before it reaches the wire.
ALLOWED_REQUESTS: dict[SessionState, frozenset[str]] = {
    SessionState.CLOSED: frozenset({"Hello"}),
    SessionState.HELLO_SENT: frozenset(),
    SessionState.READY: frozenset({"Hello", "Freeze", "EndIn", "Stop", "GetCounters", "CalRead", "CalWrite", "ClearFault", "Bye"}),
    SessionState.REBOOTED: frozenset({"Hello", "Stop"}),
}


@dataclass(frozen=True, slots=True)
class Reply:
    txn: int
    message: Message
    duplicate: bool  # the device replayed a cached answer: the request ran once, earlier


@dataclass(frozen=True, slots=True)
class RequestExpired:
    txn: int
    request: Message
    attempts: int


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    telemetry: Telemetry
    received_at: float


@dataclass(frozen=True, slots=True)
class DeviceEventReceived:
    event: Event
    received_at: float
    earlier_session: bool  # raised before this session opened: never this session's to charge
    device_session: int | None = None  # the session it was raised in (1.1 devices; 0 = none open); None if unknown


@dataclass(frozen=True, slots=True)
class RebootDetected:
    old_boot_count: int
    new_boot_count: int


@dataclass(frozen=True, slots=True)
class ForeignVersion:
    """A frame from a peer that speaks another major version (its header is all we trust)."""

    proto_major: int
    proto_minor: int
    msg_type: int


SessionEvent = Reply | RequestExpired | TelemetryReceived | DeviceEventReceived | RebootDetected | ForeignVersion


@dataclass(slots=True)
class Output:
    to_send: list[bytes] = field(default_factory=list)
    events: list[SessionEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    request: Message
    last_sent: float
    attempts: int


@dataclass(slots=True)
class SessionStats:
    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0
    duplicates_seen: int = 0
    stale_frames: int = 0
    other_boot_frames: int = 0  # telemetry or events from another boot of the device: dropped
    future_frames: int = 0
    seq_gaps: int = 0
    undecodable: int = 0
    expired: int = 0


class NotAllowed(Exception):
    """The request is not allowed in the current session state."""


class HostSession:
    def __init__(self, retry_interval_s: float = 0.06, max_attempts: int = 5, first_txn: int = 1) -> None:
        """``first_txn``: the link draws it at random, so two host processes never reuse each other's txns."""
        if not 1 <= first_txn <= U16_MAX:
            raise ValueError(f"first_txn {first_txn}: allowed 1..65535")
        self.retry_interval_s = retry_interval_s
        self.max_attempts = max_attempts
        self.state = SessionState.CLOSED
        self.stats = SessionStats()
        self.boot_count: int | None = None
        self.device_session: int | None = None  # the HELLO nonce the device echoed: stamped on its 1.1 events
        self.minor = 0  # the protocol minor both ends speak in this session
        self._hello_nonce: int | None = None
        self._hello_minor = PROTO_MINOR
        self._start_uptime_ms: int | None = None  # device uptime when this session opened (first telemetry after it)
        self._held: list[DeviceEventReceived] = []  # 1.0 events waiting for that mark
        self._before_ack: list[tuple[Frame, Message]] = []  # unsolicited frames that came while HELLO was pending
        self._next_seq = 0
        self._next_txn = first_txn
        self._pending: dict[int, _Pending] = {}
        self._last_rx_seq: int | None = None
        self._last_uptime_ms: int | None = None
        self._last_uptime_at = 0.0
        self._seen_events: list[int] = []

    # ---- outgoing ------------------------------------------------------------------------

    def _frame(self, msg: Message, txn: int, flags: int = 0) -> bytes:
        frame = Frame(PROTO_MAJOR, PROTO_MINOR, msg.MSG_TYPE, flags, self._next_seq, txn, msg.pack())
        self._next_seq = next_seq(self._next_seq)
        self.stats.frames_sent += 1
        return encode_frame(frame)

    def request(self, msg: Message, now: float) -> tuple[int, bytes]:
        """Start a request that expects a reply; returns its txn and the bytes to write."""
        name = type(msg).__name__
        if name not in ALLOWED_REQUESTS[self.state]:
            raise NotAllowed(f"{name} is not allowed while the session is {self.state.value}")
        txn = self._next_txn
        self._next_txn = next_nonzero_u16(txn)
        if isinstance(msg, Hello):
            self._begin_handshake(msg)
        wire = self._frame(msg, txn)
        self._pending[txn] = _Pending(msg, now, 1)
        return txn, wire

    def unsolicited(self, msg: Message) -> bytes:
        """A frame that expects no reply (HEARTBEAT, EVENT_ACK)."""
        return self._frame(msg, 0)

    def _begin_handshake(self, hello: Hello) -> None:
        self.state = SessionState.HELLO_SENT
        self._hello_nonce, self._hello_minor = hello.host_nonce, hello.proto_minor
        self.device_session = None
        self._start_uptime_ms = None
        self._held.clear()
        self._before_ack.clear()
        self._last_rx_seq = None
        self._last_uptime_ms = None

    def poll(self, now: float) -> Output:
        """Retransmit what is due; expire what has used up its attempts."""
        out = Output()
        for txn, pending in list(self._pending.items()):
            if now - pending.last_sent < self.retry_interval_s:
                continue
            if pending.attempts >= self.max_attempts:
                del self._pending[txn]
                self.stats.expired += 1
                if isinstance(pending.request, Hello) and self.state is SessionState.HELLO_SENT:
                    self.state = SessionState.CLOSED  # no answer: a new HELLO may be tried; nothing held is believed
                    self._before_ack.clear()
                out.events.append(RequestExpired(txn, pending.request, pending.attempts))
                continue
            pending.attempts += 1
            pending.last_sent = now
            self.stats.retransmits += 1
            out.to_send.append(self._frame(pending.request, txn, FLAG_RETRANSMIT))
        return out

    def abandon_all(self) -> list[RequestExpired]:
        """Forget every pending request (link lost); their outcomes are unknown."""
        expired = [RequestExpired(txn, p.request, p.attempts) for txn, p in self._pending.items()]
        self._pending.clear()
        return expired

    def close(self) -> None:
        self.state = SessionState.CLOSED
        self.device_session = None

    # ---- incoming ------------------------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> Output:
        out = Output()
        if frame.proto_major != PROTO_MAJOR:
            out.events.append(ForeignVersion(frame.proto_major, frame.proto_minor, frame.msg_type))
            return out
        try:
            msg = decode_message(frame.msg_type, frame.payload)
        except DecodeError:
            self.stats.undecodable += 1
            return out
        if not msg.FROM_DEVICE:
            self.stats.undecodable += 1
            return out
        if frame.txn:
            self.stats.frames_received += 1
            self._on_reply(frame, msg, now, out)
        elif self.state is SessionState.HELLO_SENT:
            self._before_ack.append((frame, msg))  # judged once HELLO_ACK says which boot this session is
            del self._before_ack[:-MAX_HELD_EVENTS]
        else:
            self._on_unsolicited(frame, msg, now, out)
        return out

    def _on_unsolicited(self, frame: Frame, msg: Message, now: float, out: Output, replayed: bool = False) -> None:
        """TELEMETRY and EVENT: believed only once bound to this boot (and session), in order.
        ``replayed``: held while HELLO was pending; its order was checked against HELLO_ACK's seq."""
        if isinstance(msg, Telemetry | BoundEvent) and self._from_older_boot(msg.boot_count):
            self.stats.other_boot_frames += 1  # a frame that waited somewhere while the device rebooted
            return
        if isinstance(msg, Telemetry) and self._rebooted(msg.boot_count):
            self._on_reboot(msg.boot_count, out)
        if not replayed and not self._fresh_seq(frame.seq):
            self.stats.stale_frames += 1
            return
        if isinstance(msg, Event) and self.minor >= 1:
            self.stats.stale_frames += 1  # a 1.1 session's events are bound; an unbound one is not from it
            return
        self.stats.frames_received += 1
        if isinstance(msg, Telemetry):
            self._on_telemetry(msg, now, out, marks_start=not replayed)
        elif isinstance(msg, BoundEvent):
            self._on_bound_event(msg, now, out)
        elif isinstance(msg, Event):
            self._on_event(msg, now, out)

    def _fresh_seq(self, seq: int) -> bool:
        """Drop frames older than the newest one seen (modulo 2^16, half-window)."""
        if self._last_rx_seq is None:
            self._last_rx_seq = seq
            return True
        delta = (seq - self._last_rx_seq) & U16_MAX
        if delta == 0 or delta >= SEQ_HALF_RANGE:
            return False
        if delta > 1:
            self.stats.seq_gaps += delta - 1
        self._last_rx_seq = seq
        return True

    def _on_reply(self, frame: Frame, msg: Message, now: float, out: Output) -> None:
        if isinstance(msg, HelloAck) and msg.host_nonce != self._hello_nonce:
            self.stats.stale_frames += 1  # an answer to another host's HELLO: ours is still to come
            return
        pending = self._pending.pop(frame.txn, None)
        if pending is None:
            return  # an answer to a request already answered or given up on
        duplicate = bool(frame.flags & FLAG_DUPLICATE)
        if duplicate:
            self.stats.duplicates_seen += 1
        if isinstance(msg, HelloAck):
            self._on_hello_ack(msg, out)
        elif isinstance(pending.request, Bye) and isinstance(msg, Ack) and msg.result is Result.OK:
            self.close()
        out.events.append(Reply(frame.txn, msg, duplicate))
        if isinstance(msg, HelloAck) and self.state is SessionState.READY:
            waiting, self._before_ack = self._before_ack, []
            for early_frame, early_msg in waiting:
                if 0 < (frame.seq - early_frame.seq) & U16_MAX <= HELD_SEQ_WINDOW:  # sent just before the answer, by this boot
                    self._on_unsolicited(early_frame, early_msg, now, out, replayed=True)
                else:
                    self.stats.stale_frames += 1
            self._last_rx_seq = frame.seq

    def _from_older_boot(self, boot_count: int) -> bool:
        """Boot counters only grow (non-volatile, +1 per reset): a lower one is a frame from the past."""
        return self.boot_count is not None and boot_count < self.boot_count

    def _rebooted(self, boot_count: int) -> bool:
        return self.boot_count is not None and boot_count != self.boot_count and self.state is SessionState.READY

    def _on_reboot(self, new_boot_count: int, out: Output) -> None:
        """The device restarted: its txn cache, events and session are gone, so are ours."""
        assert self.boot_count is not None
        out.events.append(RebootDetected(self.boot_count, new_boot_count))
        out.events.extend(self.abandon_all())
        self.state = SessionState.REBOOTED
        self.boot_count = new_boot_count
        self._last_rx_seq = None
        self._last_uptime_ms = None
        self._seen_events.clear()
        self.device_session = None

    def _on_hello_ack(self, ack: HelloAck, out: Output) -> None:
        if self.boot_count is not None and ack.boot_count != self.boot_count:
            out.events.append(RebootDetected(self.boot_count, ack.boot_count))
            self._seen_events.clear()
        self.boot_count = ack.boot_count
        self.device_session = ack.host_nonce
        self.minor = min(self._hello_minor, ack.proto_minor)
        self.state = SessionState.READY

    def _on_telemetry(self, telemetry: Telemetry, now: float, out: Output, marks_start: bool = True) -> None:
        if self._last_uptime_ms is not None:
            if telemetry.uptime_ms < self._last_uptime_ms:
                self.stats.stale_frames += 1  # older than what we have: never let it overwrite newer data
                return
            host_ms = (now - self._last_uptime_at) * 1000
            if telemetry.uptime_ms - self._last_uptime_ms > 2 * host_ms + FUTURE_SLACK_MS:
                self.stats.future_frames += 1  # device time ran far ahead of ours: not to be trusted
                return
        self._last_uptime_ms = telemetry.uptime_ms
        self._last_uptime_at = now
        out.events.append(TelemetryReceived(telemetry, now))
        if marks_start and self._start_uptime_ms is None and self.state is SessionState.READY:
            self._start_uptime_ms = telemetry.uptime_ms
            held, self._held = self._held, []
            out.events.extend(self._mark_by_uptime(item) for item in held)

    def _on_bound_event(self, bound: BoundEvent, now: float, out: Output) -> None:
        if bound.boot_count != self.boot_count:
            self.stats.other_boot_frames += 1  # not acknowledged: its id belongs to another boot's numbering
            return
        earlier = self.device_session is None or bound.session_id != self.device_session
        self._on_event(bound.unbound(), now, out, DeviceEventReceived(bound.unbound(), now, earlier, bound.session_id))

    def _on_event(self, event: Event, now: float, out: Output, received: DeviceEventReceived | None = None) -> None:
        out.to_send.append(self.unsolicited(EventAck(event.event_id)))  # ack every copy: the ack may be lost
        if event.event_id in self._seen_events:
            return
        self._seen_events.append(event.event_id)
        del self._seen_events[:-SEEN_EVENT_IDS]
        if received is not None:
            out.events.append(received)
        elif self._start_uptime_ms is None:
            self._held.append(DeviceEventReceived(event, now, earlier_session=False))  # 1.0: marked once the session's start is known
            del self._held[:-MAX_HELD_EVENTS]
        else:
            out.events.append(self._mark_by_uptime(DeviceEventReceived(event, now, earlier_session=False)))

    def _mark_by_uptime(self, item: DeviceEventReceived) -> DeviceEventReceived:
        """1.0 events carry no session: one raised before this session's first telemetry is an earlier one's."""
        assert self._start_uptime_ms is not None
        if item.event.uptime_ms < self._start_uptime_ms:
            return DeviceEventReceived(item.event, item.received_at, earlier_session=True)
        return item
