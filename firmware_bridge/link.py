"""The link: one thread that owns the port, the codec and the host session.

Callers on other threads put intents in an outbox and wait on the answer; only the link thread
reads or writes the port. The link heartbeats only on a lease its caller renews: the controller's
loop calls ``keep_alive()`` each turn and the link thread beats every heartbeat period until the
lease runs out, so a long loop turn (a lesion's chain of durable writes on a loaded laptop) never
starves the device's watchdog, while a hung controller still lets it close the valve (at most two
watchdog periods after its last renewal). ``heartbeat()`` sends one beat now, for simple callers.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.codec import U16_MAX, U32_MAX, DecoderStats, FrameDecoder
from firmware_bridge.errors import (
    BridgeError,
    CommandRejected,
    CommandTimeout,
    DeviceFault,
    DeviceRebooted,
    LinkLost,
    NotAGivreDevice,
    UnexpectedReply,
    VersionMismatch,
    WrongDeviceKind,
)
from firmware_bridge.messages import (
    PROTO_MAJOR,
    PROTO_MINOR,
    SCHEMA_HASHES,
    Ack,
    Bye,
    CalData,
    CalRead,
    CalWrite,
    Capability,
    ClearFault,
    Counters,
    Cryogen,
    DeviceKind,
    EndIn,
    Fault,
    Freeze,
    FreezeMode,
    GetCounters,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    Result,
    Stop,
    TriggerMode,
)
from firmware_bridge.session import (
    DeviceEventReceived,
    ForeignVersion,
    HostSession,
    NotAllowed,
    Output,
    RebootDetected,
    Reply,
    RequestExpired,
    SessionState,
    SessionStats,
    TelemetryReceived,
)
from firmware_bridge.transport import SerialTransport
from firmware_bridge.units import DEFAULT_WATCHDOG_MS, HEARTBEATS_PER_WATCHDOG, fault_names

HANDSHAKE_TIMEOUT_S = 1.5
REQUEST_TIMEOUT_S = 2.0  # outer bound; the session gives up earlier after its retries
RETRY_INTERVAL_S = 0.06  # all three are wall-time limits (Clock.wall)
BYE_TIMEOUT_S = 0.5  # a clean exit waits this long for the device to confirm the session's end

_ReplyT = TypeVar("_ReplyT", bound=Message)  # the one message type the protocol allows as a request's answer


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    port: str
    kind: DeviceKind
    cryogen: Cryogen
    firmware: str
    serial: str
    protocol: str
    boot_count: int
    max_freeze_ms: int
    watchdog_ms: int
    capabilities: Capability
    fault_flags: int
    device_session: int  # this session's HELLO nonce: 1.1 devices stamp it on every event
    session_minor: int  # the protocol minor both ends speak: 1 and above ends sessions with BYE

    @classmethod
    def from_hello_ack(cls, port: str, ack: HelloAck) -> DeviceIdentity:
        """The device as its HELLO_ACK describes it; NotAGivreDevice if its text (the serial, the one
        text field) is not printable ASCII."""
        _require_printable(port, "serial number", ack.serial)
        return cls(
            port=port,
            kind=ack.kind,
            cryogen=ack.cryogen,
            firmware=f"{ack.fw_major}.{ack.fw_minor}.{ack.fw_patch}",
            serial=ack.serial,
            protocol=f"{ack.proto_major}.{ack.proto_minor}",
            boot_count=ack.boot_count,
            max_freeze_ms=ack.max_freeze_ms,
            watchdog_ms=ack.watchdog_ms,
            capabilities=ack.capabilities,
            fault_flags=ack.fault_flags,
            device_session=ack.host_nonce,
            session_minor=ack.proto_minor,  # the device answers in the negotiated minor (§3.2)
        )


def _require_printable(port: str, field: str, text: str) -> None:
    """A device's text reaches terminals, the record, CSV files and FHIR: printable ASCII only. One with
    control bytes (a terminal escape, a NUL) is faulty or hostile, and is refused rather than cleaned,
    so the record never holds a serial other than the one the device says; nothing is recorded for it."""
    bad = sorted({f"0x{ord(c):02x}" for c in text if not " " <= c <= "~"})
    if bad:
        raise NotAGivreDevice(port, f"its {field} {text!a} holds bytes that are not printable ASCII ({', '.join(bad)})",
                              "Do not use this device: have its firmware checked by its maker (a serial is printable ASCII)")


@dataclass(frozen=True, slots=True)
class LinkDown:
    """Delivered on the event queue when the port failed; the link is finished."""

    error: LinkLost


LinkEvent = DeviceEventReceived | RebootDetected | LinkDown


@dataclass(frozen=True, slots=True)
class LinkStats:
    bytes_received: int
    decoder: DecoderStats
    session: SessionStats
    events_dropped: int = 0  # device events past MAX_PENDING_EVENTS, dropped so a flooding device cannot exhaust memory
    heartbeat_gap_max_s: float = 0.0  # the longest the host went between two HEARTBEATs while a lease ran (host clock)


MAX_PENDING_EVENTS = 512  # a device raises a handful per freeze; more than this unread is a flood


class _EventBox:
    """The link's events for their reader, bounded: a flooding device's events beyond MAX_PENDING_EVENTS
    are dropped (and counted); a reboot or a lost link is never dropped (the oldest device event makes room)."""

    def __init__(self, capacity: int = MAX_PENDING_EVENTS) -> None:
        self._items: collections.deque[LinkEvent] = collections.deque()
        self._ready = threading.Condition()
        self._capacity = capacity
        self.dropped = 0

    def put(self, item: LinkEvent) -> None:
        with self._ready:
            if len(self._items) >= self._capacity:
                if isinstance(item, DeviceEventReceived):
                    self.dropped += 1
                    return
                self._drop_oldest_device_event()
            self._items.append(item)
            self._ready.notify()

    def _drop_oldest_device_event(self) -> None:
        for index, queued in enumerate(self._items):
            if isinstance(queued, DeviceEventReceived):
                del self._items[index]
                self.dropped += 1
                return

    def get(self, timeout_s: float) -> LinkEvent | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout_s)
            return self._items.popleft() if self._items else None


class _Waiter:
    __slots__ = ("done", "error", "reply", "txn")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.txn: int | None = None
        self.reply: Reply | None = None
        self.error: BridgeError | None = None


_REJECTION_ADVICE: dict[Result, str] = {
    Result.BUSY: "Wait for the current freeze to end, or STOP it",
    Result.OVER_CAP: "Ask for a shorter freeze: the device's cap is in its identity",
    Result.FAULT_LATCHED: "Read the fault, fix its cause, then clear it before freezing again",
    Result.BAD_REQUEST: "This is a Givre bug: report it with the wire log",
    Result.UNSUPPORTED: "This device lacks that feature; pick a profile or mode it supports",
    Result.NOT_FREEZING: "Nothing to end: the freeze is already over",
    Result.NO_SESSION: "Reconnect: the device has no session (it may have rebooted)",
    Result.CARTRIDGE_EMPTY: "Load a new cartridge",
    Result.VERSION_MISMATCH: "Update Givre or the device firmware",
}


_FAULT_ADVICE: dict[Fault, str] = {
    Fault.WATCHDOG_TRIP: "The device closed its valve because the host went silent; read the counters, then clear the fault",
    Fault.NO_FLOW: "Nothing came out: check the nozzle for a blockage and the cartridge, then clear the fault",
    Fault.VALVE_STUCK_OPEN: "Shut the cartridge off by hand now; the device needs service",
    Fault.VALVE_STUCK_CLOSED: "The valve does not open; the device needs service",
    Fault.SENSOR_OPEN: "A thermocouple is disconnected: check its plug, then clear the fault",
    Fault.SENSOR_SHORT: "A thermocouple is shorted: check its cable, then clear the fault",
}


class Link:
    def __init__(self, transport: SerialTransport, clock: Clock = SYSTEM_CLOCK) -> None:
        self.port = transport.url
        self._transport = transport
        self._clock = clock
        self._session = HostSession(retry_interval_s=clock.wall(RETRY_INTERVAL_S), first_txn=1 + secrets.randbelow(U16_MAX))
        self._decoder = FrameDecoder()
        self._outbox: queue.SimpleQueue[tuple[Message, _Waiter | None]] = queue.SimpleQueue()
        self._waiters: dict[int, _Waiter] = {}
        self._events = _EventBox()
        self._foreign: ForeignVersion | None = None
        self._bytes_received = 0
        self._telemetry_lock = threading.Lock()
        self._latest: TelemetryReceived | None = None
        self._lost: LinkLost | None = None
        self._closing = threading.Event()
        self._lease: tuple[float, int] = (0.0, 0)  # (host clock until which the link thread heartbeats, host_state)
        self._last_beat = 0.0  # host clock of the last heartbeat written
        self._lease_since = 0.0  # host clock when the running lease was granted after a lapse (gaps count from there)
        self._beat_gap_max = 0.0
        self.identity: DeviceIdentity | None = None
        self.on_telemetry: Callable[[TelemetryReceived], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"givre-link {self.port}", daemon=True)
        self._thread.start()

    # ---- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        watchdog_ms: int = 0,
        expect_kind: DeviceKind | None = None,
    ) -> Link:
        """Open the port and handshake; on any failure the port is closed again."""
        link = cls(SerialTransport(url), clock)
        try:
            link.handshake(watchdog_ms=watchdog_ms, expect_kind=expect_kind)
        except BaseException:
            link.close()
            raise
        return link

    def handshake(self, *, watchdog_ms: int = 0, expect_kind: DeviceKind | None = None) -> DeviceIdentity:
        nonce = 1 + secrets.randbelow(U32_MAX)  # the session id: never 0, which means "no session" in a bound event
        try:
            reply = self._request(Hello(PROTO_MAJOR, PROTO_MINOR, watchdog_ms, nonce), self._clock.wall(HANDSHAKE_TIMEOUT_S))
        except CommandTimeout:
            raise self._handshake_failure() from None
        ack = reply.message
        if not isinstance(ack, HelloAck) or ack.host_nonce != nonce:
            raise NotAGivreDevice(self.port, "answered HELLO with something else", "Check that this is the cryotherapy device's port")
        if ack.proto_minor > PROTO_MINOR:
            raise VersionMismatch(
                self.port,
                f"the device answered in protocol {ack.proto_major}.{ack.proto_minor}, above the {PROTO_MAJOR}.{PROTO_MINOR} this Givre "
                "asked for (a device must answer in the lower of the two minors)",
                "Update the device firmware: it breaks the version negotiation of docs/protocol.md §3.2",
            )
        expected = SCHEMA_HASHES[ack.proto_minor]
        if ack.schema_hash != expected:
            raise VersionMismatch(
                self.port,
                f"device protocol {ack.proto_major}.{ack.proto_minor} uses different message layouts "
                f"(schema 0x{ack.schema_hash:08X}, Givre expects 0x{expected:08X} for {ack.proto_major}.{ack.proto_minor})",
                "Update Givre or the device firmware so both are built from the same protocol version",
            )
        identity = DeviceIdentity.from_hello_ack(self.port, ack)
        if expect_kind is not None and identity.kind is not expect_kind:
            raise WrongDeviceKind(
                self.port,
                f"this is a {identity.kind.name.lower()} device (serial {identity.serial}), not a {expect_kind.name.lower()}",
                f"Connect the {expect_kind.name.lower()} device, or pick a profile for a {identity.kind.name.lower()}",
            )
        self.identity = identity
        return identity

    def _handshake_failure(self) -> BridgeError:
        if self._foreign is not None:
            return VersionMismatch(
                self.port,
                f"the device speaks protocol {self._foreign.proto_major}.{self._foreign.proto_minor}; "
                f"this Givre speaks {PROTO_MAJOR}.{PROTO_MINOR}",
                "Update Givre or the device firmware so the major versions match",
            )
        if self._lost is not None:
            return self._lost
        if self._bytes_received:
            return NotAGivreDevice(
                self.port,
                f"something answered ({self._bytes_received} bytes) but not in the Givre protocol",
                "This port belongs to another device: pick the cryotherapy device's port",
            )
        return NotAGivreDevice(
            self.port,
            f"no answer to HELLO within {HANDSHAKE_TIMEOUT_S:g} s",
            "Check that the device is switched on and that this is its port",
        )

    # ---- commands (any thread) ---------------------------------------------------------------

    @property
    def heartbeat_period_s(self) -> float:
        """How often the controller must call heartbeat(): five beats per watchdog period."""
        watchdog_ms = self.identity.watchdog_ms if self.identity else DEFAULT_WATCHDOG_MS
        return watchdog_ms / (1000 * HEARTBEATS_PER_WATCHDOG)

    def heartbeat(self, host_state: int = 0) -> None:
        self._submit(Heartbeat(host_state), None)

    def keep_alive(self, host_state: int) -> None:
        """Let the link thread heartbeat (every heartbeat period, with ``host_state``) for one watchdog
        period from now: renewed each loop turn, the device is fed without gaps; not renewed, the
        beats stop and the device's watchdog closes the valve one watchdog period later."""
        if self._lost is not None:
            raise self._lost
        now = self._clock.monotonic()
        if now >= self._lease[0]:
            self._lease_since = now
        self._lease = (now + self.heartbeat_period_s * HEARTBEATS_PER_WATCHDOG, host_state)

    def freeze(self, duration_ms: int, mode: FreezeMode = FreezeMode.TIMED, trigger: TriggerMode = TriggerMode.HOST) -> int:
        """Ask the device to time a freeze; returns its txn once the device has accepted it.

        CommandTimeout means the outcome is unknown: the device may be freezing. Never resend.
        """
        txn, _ = self._exchange(Freeze(mode, trigger, duration_ms), Ack)
        return txn

    def end_in(self, remaining_ms: int) -> Ack:
        return self._command(EndIn(remaining_ms), Ack)

    def stop(self, reason: int = 0) -> Ack:
        """Emergency stop; answered once the device's valve is closed. Idempotent."""
        return self._command(Stop(reason), Ack)

    def end_session(self) -> bool:
        """End the device session cleanly (protocol 1.1 BYE): the device closes its valve and runs no
        watchdog after, so a clean exit never latches a trip. True when the device confirmed it.
        A 1.0 device has no BYE: it will trip its watchdog, and the next connection accounts for it."""
        ident = self.identity
        if ident is None or ident.session_minor < 1 or self.lost or self._session.state is not SessionState.READY:
            return False
        try:
            reply = self._request(Bye(0), self._clock.wall(BYE_TIMEOUT_S))
        except BridgeError:
            return False
        return isinstance(reply.message, Ack) and reply.message.result is Result.OK

    def clear_fault(self) -> Ack:
        return self._command(ClearFault(), Ack)

    def counters(self) -> Counters:
        return self._command(GetCounters(), Counters)

    def read_calibration(self) -> CalData:
        return self._command(CalRead(), CalData)

    def write_calibration(self, cal: CalWrite) -> Ack:
        return self._command(cal, Ack)

    def latest_telemetry(self) -> TelemetryReceived | None:
        with self._telemetry_lock:
            return self._latest

    def heartbeat_for(self, seconds: float, host_state: int = 0) -> list[LinkEvent]:
        """Keep the device fed for a while from the caller's own loop (thaws, measurements);
        returns the events that arrived meanwhile."""
        events: list[LinkEvent] = []
        deadline = self._clock.monotonic() + seconds
        while self._clock.monotonic() < deadline and not self.lost:
            self.heartbeat(host_state)
            item = self.next_event(min(self.heartbeat_period_s, max(0.0, deadline - self._clock.monotonic())))
            if item is not None:
                events.append(item)
        return events

    def wait_for_telemetry(self, timeout_s: float = 1.0) -> TelemetryReceived | None:
        """The next telemetry frame from now on (wall-time timeout), e.g. after a (re)connection or a
        CLEAR_FAULT, so a gate never judges the device on data older than the last command."""
        since = self._clock.monotonic()
        deadline = since + self._clock.wall(timeout_s)
        while self._clock.monotonic() < deadline and not self.lost:
            latest = self.latest_telemetry()
            if latest is not None and latest.received_at > since:
                return latest
            self.heartbeat()
            self._clock.wait(self._closing, 0.02)
        return self.latest_telemetry()

    def next_event(self, timeout_s: float) -> LinkEvent | None:
        """The next device event, reboot or link loss; None if nothing came within the timeout."""
        return self._events.get(self._clock.real_seconds(timeout_s))

    def stats(self) -> LinkStats:
        return LinkStats(self._bytes_received, dataclasses.replace(self._decoder.stats), dataclasses.replace(self._session.stats),
                         self._events.dropped, self._beat_gap_max)

    @property
    def lost(self) -> bool:
        """True once the port failed: this link is finished; open a new one."""
        return self._lost is not None

    @property
    def needs_handshake(self) -> bool:
        """True after the device rebooted: its session is gone until a new HELLO."""
        return self._session.state is not SessionState.READY

    @property
    def clock(self) -> Clock:
        return self._clock

    def close(self, *, end_session: bool = True) -> None:
        """End the session (BYE) and release the port. ``end_session=False`` leaves as a crashed
        host would, without a word: the device's watchdog must then act (tests of that path)."""
        if end_session and not self._closing.is_set() and self._thread.is_alive():
            self.end_session()
        self._closing.set()
        self._transport.wake_reader()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._transport.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _command(self, msg: Message, reply_type: type[_ReplyT]) -> _ReplyT:
        """Send a request and wait for its answer, which the protocol says is a ``reply_type``."""
        return self._exchange(msg, reply_type)[1]

    def _exchange(self, msg: Message, reply_type: type[_ReplyT]) -> tuple[int, _ReplyT]:
        """Send a request and wait: the txn it ran under and its ``reply_type`` answer. An ACK that
        refuses it raises DeviceFault or CommandRejected; any other answer raises UnexpectedReply."""
        reply = self._request(msg, self._clock.wall(REQUEST_TIMEOUT_S))
        if isinstance(reply.message, Ack) and reply.message.result is Result.FAULT_LATCHED:
            flags = Fault(reply.message.detail16)
            raise DeviceFault(
                self.port,
                f"the device refused {type(msg).__name__.upper()}: latched fault {fault_names(flags)}",
                _FAULT_ADVICE.get(flags, _REJECTION_ADVICE[Result.FAULT_LATCHED]),
                Result.FAULT_LATCHED,
                int(flags),
            )
        if isinstance(reply.message, Ack) and reply.message.result is not Result.OK:
            result = reply.message.result
            raise CommandRejected(
                self.port,
                f"the device refused {type(msg).__name__.upper()}: {result.name}{_detail(msg, reply.message, self.identity)}",
                _REJECTION_ADVICE.get(result, "See docs/protocol.md for this result code"),
                result,
            )
        if not isinstance(reply.message, reply_type):
            raise UnexpectedReply(
                self.port,
                f"the device answered {type(msg).__name__.upper()} with {type(reply.message).__name__.upper()}, "
                f"not {reply_type.__name__.upper()}",
                "The device firmware breaks docs/protocol.md: run `givre conformance` against it",
            )
        return reply.txn, reply.message

    def _request(self, msg: Message, timeout_s: float) -> Reply:
        waiter = _Waiter()
        self._submit(msg, waiter)
        if not self._clock.wait(waiter.done, timeout_s):
            raise CommandTimeout(
                self.port, f"no answer to {type(msg).__name__.upper()}", "The outcome is unknown; check the device", waiter.txn
            )
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return waiter.reply

    def _submit(self, msg: Message, waiter: _Waiter | None) -> None:
        msg.pack()  # a field out of range is the caller's ValueError, never the link thread's death
        if self._lost is not None:
            raise self._lost
        if self._closing.is_set():
            raise LinkLost(self.port, "the link is closed", "Reconnect to the device")
        self._outbox.put((msg, waiter))
        self._transport.wake_reader()

    # ---- the link thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                self._drain_outbox()
                data = self._transport.read()
                now = self._clock.monotonic()
                if data:
                    self._bytes_received += len(data)
                    for frame in self._decoder.feed(data):
                        self._dispatch(self._session.receive(frame, now))
                self._dispatch(self._session.poll(now))
                self._beat_on_lease(now)
        except LinkLost as exc:
            self._fail(exc)

    def _beat_on_lease(self, now: float) -> None:
        until, host_state = self._lease
        if now < until and now - self._last_beat >= self.heartbeat_period_s:
            self._write_unsolicited(Heartbeat(host_state))

    def _write_unsolicited(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            now = self._clock.monotonic()
            if self._lease_since and self._last_beat >= self._lease_since:  # both within one running lease
                self._beat_gap_max = max(self._beat_gap_max, now - self._last_beat)
            self._last_beat = now
        self._transport.write(self._session.unsolicited(msg))

    def _drain_outbox(self) -> None:
        while True:
            try:
                msg, waiter = self._outbox.get_nowait()
            except queue.Empty:
                return
            if waiter is None:
                self._write_unsolicited(msg)
                continue
            try:
                txn, wire = self._session.request(msg, self._clock.monotonic())
            except NotAllowed as exc:
                error_type = DeviceRebooted if self._session.state is SessionState.REBOOTED else LinkLost
                waiter.error = error_type(self.port, str(exc), "Handshake with the device again; nothing was sent")
                waiter.done.set()
                continue
            waiter.txn = txn
            self._waiters[txn] = waiter
            self._transport.write(wire)

    def _dispatch(self, out: Output) -> None:
        for wire in out.to_send:
            self._transport.write(wire)
        rebooted = False
        for event in out.events:
            if isinstance(event, Reply):
                self._settle(event.txn, reply=event)
            elif isinstance(event, RequestExpired):
                self._settle(event.txn, error=self._expiry_error(event, rebooted))
            elif isinstance(event, TelemetryReceived):
                with self._telemetry_lock:
                    self._latest = event
                if self.on_telemetry is not None:
                    self.on_telemetry(event)
            elif isinstance(event, RebootDetected):
                rebooted = True
                self._events.put(event)
            elif isinstance(event, ForeignVersion):
                self._foreign = event
            else:
                self._events.put(event)

    def _expiry_error(self, event: RequestExpired, rebooted: bool) -> BridgeError:
        name = type(event.request).__name__.upper()
        if rebooted:
            return DeviceRebooted(self.port, f"the device rebooted while {name} was pending", "Reconnect; nothing is resent automatically")
        return CommandTimeout(
            self.port,
            f"no answer to {name} after {event.attempts} attempts",
            "The outcome is unknown: read the device counters before doing anything else",
            event.txn,
        )

    def _settle(self, txn: int, *, reply: Reply | None = None, error: BridgeError | None = None) -> None:
        waiter = self._waiters.pop(txn, None)
        if waiter is None:
            return
        waiter.reply, waiter.error = reply, error
        waiter.done.set()

    def _fail(self, exc: LinkLost) -> None:
        self._lost = exc
        waiters = list(self._waiters.values())
        self._waiters.clear()
        while True:
            try:
                _, waiter = self._outbox.get_nowait()
            except queue.Empty:
                break
            if waiter is not None:
                waiters.append(waiter)
        for waiter in waiters:
            waiter.error = exc
            waiter.done.set()
        self._events.put(LinkDown(exc))


def _detail(msg: Message, ack: Ack, identity: DeviceIdentity | None) -> str:
    if isinstance(msg, Freeze) and ack.result is Result.OVER_CAP:
        cap = identity.max_freeze_ms if identity else ack.detail32
        return f" ({msg.duration_ms} ms asked, the device's cap is {cap} ms)"
    return ""
