"""Protocol conformance kit: checks a device against the rules of docs/protocol.md, one check per
rule, each PASS / FAIL / NOT_APPLICABLE with what was measured (docs/conformance.md).

It drives the device at the frame level through its own raw client, not ``Link``: a conformance kit
must send what a correct host never would (corrupt frames, reused txns, unknown types, deliberate
silence) and see every frame the device sends back, in order, with its arrival time. Every wait is
bounded by a deadline. Whatever the checks find, the kit leaves the device as it found it: valve
closed, calibration restored, no fault the kit caused, session ended with BYE.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.codec import (
    CRC,
    FLAG_DUPLICATE,
    FLAG_RETRANSMIT,
    HEADER,
    U16_MAX,
    U32_MAX,
    Frame,
    FrameDecoder,
    cobs_encode,
    crc32,
    encode_frame,
    next_nonzero_u16,
    next_seq,
)
from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import (
    LATCHING_FAULTS,
    NOT_AVAILABLE_U32,
    PROTO_MAJOR,
    PROTO_MINOR,
    REGISTRY,
    Ack,
    BoundEvent,
    Bye,
    CalData,
    CalRead,
    CalWrite,
    Capability,
    ClearFault,
    Counters,
    DecodeError,
    DeviceState,
    EndIn,
    EndReason,
    Event,
    EventAck,
    EventCode,
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
    Telemetry,
    TriggerMode,
    decode_message,
    schema_hash,
)
from firmware_bridge.transport import SerialTransport, list_ports
from firmware_bridge.units import DEFAULT_WATCHDOG_MS, HEARTBEATS_PER_WATCHDOG

# ---- what the kit asks for and what it tolerates (docs/conformance.md, "Tolerances") ----------------

WORK_WATCHDOG_MS = 2000  # checks not about the watchdog ask for this: a pause of the host never trips it
WATCHDOG_CLAMPS = ((0, DEFAULT_WATCHDOG_MS), (50, 100), (1000, 1000), (65_000, 60_000))  # asked -> enforced (0: the default)
REPLY_TIMEOUT_S = 0.5  # a request not answered in this long is not answered
EVENT_TIMEOUT_S = 1.0  # beyond a freeze's own duration
LINK_TOLERANCE_MS = 50  # watchdog: serial latency and the device's telemetry send, on top of watchdog_ms
CLOCK_SLACK_MS = 5  # a device clock may run 1 % off (|timer_ppm| <= 10 000) and rounds to the ms
AT_ONCE_MS = 30  # "a TELEMETRY at once on a state change": the periodic schedule would take 100 ms
IDLE_PERIOD_MS, IDLE_TOLERANCE_MS = 100, 15
FAST_PERIOD_MS, FAST_TOLERANCE_MS = 20, 5
EVENT_REPEAT_MS, EVENT_REPEAT_TOLERANCE_MS = 100, 30
EVENT_ACK_GRACE_MS = 60  # a copy already on the wire when EVENT_ACK was sent is not a repeat
TIMER_TOLERANCE_MS = 10  # a device-timed end vs the duration asked, on the device's own clock
TXN_CACHE_MIN = 32

DEVICE_TRIP_MS = 20  # §5.7: the device closes no later than watchdog_ms + 20 ms after the last host frame
REARM_MARGIN_MS = 150  # silence beyond watchdog_ms after which a re-armed watchdog must have tripped
NO_SESSION_QUIET_MS = 150  # after BYE: an event sent at once or repeated once would show in this long

SHORT_FREEZE_MS = 50  # enough to raise FREEZE_STARTED and FREEZE_DONE
TIMED_FREEZE_MS = 200  # a freeze the check lets run to its end
END_IN_MS = 150  # what END_IN asks for when the cap leaves room
LONG_FREEZE_MS = 5000  # a freeze the check always ends itself, long before that
RUNNING_MS = 150  # how long a freeze runs before a check stops it, so its valve-open time means something
STORED_LATENCY_MS = 100  # valve latencies written to prove the device does not time with them
UNKNOWN_TYPE = 0x7F  # the last host type: no minor version will assign it soon
SAMPLES = 4  # telemetry periods per median (twice as many at 50 Hz)
FEWEST_FOR_PERIOD = 3  # frames (two gaps): the fewest a median period is taken over
EVENTS_PER_FREEZE = 2  # FREEZE_STARTED and FREEZE_DONE

TRIGGERS = Capability.HAND_TRIGGER | Capability.FOOT_SWITCH
EVENT_TYPES = frozenset({Event.MSG_TYPE, BoundEvent.MSG_TYPE})
REPLY_TYPES = frozenset({HelloAck.MSG_TYPE, Ack.MSG_TYPE, Counters.MSG_TYPE, CalData.MSG_TYPE})
assert UNKNOWN_TYPE not in REGISTRY


# ---- results --------------------------------------------------------------------------------------


class Verdict(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_APPLICABLE = "NOT_APPLICABLE"


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's outcome. ``measured`` is the figure a firmware maker compares with the rule;
    ``detail`` says what broke (FAIL) or why the rule does not apply to this device (NOT_APPLICABLE)."""

    id: str
    section: str
    protocol: str  # the section of docs/protocol.md it tests, e.g. "§5.7"
    title: str
    verdict: Verdict
    measured: str
    detail: str

    @property
    def ref(self) -> str:
        return f"{self.section}/{self.id}"

    def line(self) -> str:
        label = "N/A" if self.verdict is Verdict.NOT_APPLICABLE else self.verdict.value
        text = f"{label:4}  {self.ref:17} {self.protocol:6} {self.title}"
        if self.measured:
            text += f"  ({self.measured})"
        if self.detail:
            text += f"  -- {self.detail}"
        return text

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "section": self.section, "protocol": self.protocol, "title": self.title, "verdict": self.verdict.value,
                "measured": self.measured, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Report:
    device: dict[str, object]  # identity from the HELLO_ACK the kit opened with
    checks: tuple[Check, ...]
    notes: tuple[str, ...]  # what the kit did to the device beyond the checks (e.g. cleared an old trip)
    left_problems: tuple[str, ...]  # the device could not be left as found: a failure in itself
    duration_s: float

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.verdict is Verdict.FAIL)

    @property
    def result(self) -> str:
        return "FAIL" if self.failed or self.left_problems else "PASS"

    def counts(self) -> dict[str, int]:
        return {v.value: sum(c.verdict is v for c in self.checks) for v in Verdict}

    def as_dict(self) -> dict[str, object]:
        return {"device": self.device, "result": self.result, "checks": [c.as_dict() for c in self.checks],
                "counts": self.counts(), "notes": list(self.notes), "left_problems": list(self.left_problems),
                "duration_s": round(self.duration_s, 2)}


class ConformanceError(BridgeError):
    """The kit could not run (no device, another protocol, a device not fit to test); not a verdict."""


class UnknownSection(ValueError):
    pass


class Unmet(Exception):
    """The device did not give a check what it needed (no answer, a refused precondition): FAIL."""


class NotApplicable(Exception):
    """The rule needs something this device does not have (a capability, protocol 1.1)."""


@dataclass(frozen=True, slots=True)
class Finding:
    problems: tuple[str, ...]
    measured: str


class Expect:
    """Collects every broken rule a check sees, so one run reports them all, not just the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def that(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    def done(self, measured: str = "") -> Finding:
        return Finding(tuple(self.problems), measured)


# ---- the raw client ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One frame from the device, with the host time the read that delivered it returned."""

    index: int  # position in the client's log
    at: float
    frame: Frame
    message: Message | None  # None: the payload does not fit its type's layout (see problem)
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Sent:
    txn: int
    msg_type: int
    at: float  # host time once the bytes were handed to the port
    mark: int  # log position when sent: the answer is after it


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request and its answer: their host times bracket the moment the device acted on it."""

    sent: Sent
    reply: Received

    @property
    def message(self) -> Message:
        assert self.reply.message is not None
        return self.reply.message

    @property
    def txn(self) -> int:
        return self.sent.txn


class RawClient:
    """A host that does exactly what a check says: any bytes, any txn, any flags, or silence.

    Single-threaded: frames are read only while a check waits, which it always does with a deadline.
    While it waits the client plays a well-behaved host unless told not to: it sends HEARTBEAT five
    times per watchdog period and acknowledges every event (``silent()`` and ``holding_acks()`` stop that).
    """

    def __init__(self, transport: SerialTransport, clock: Clock) -> None:
        self._transport = transport
        self.clock = clock
        self.decoder = FrameDecoder()
        self.log: list[Received] = []
        self.minor = PROTO_MINOR  # the session's minor: the version put in every header
        self.watchdog_ms: int | None = None  # the open session's, as far as the kit knows; None: no session
        self.keepalive = True
        self.auto_ack = True
        self._seq = 0
        self._txn = random.randrange(1, U16_MAX + 1)
        self.last_sent_at = clock.monotonic()

    @property
    def port(self) -> str:
        return self._transport.url

    def new_txn(self) -> int:
        txn = self._txn
        self._txn = next_nonzero_u16(txn)
        return txn

    def header(self, msg_type: int, *, txn: int = 0, flags: int = 0, major: int = PROTO_MAJOR, minor: int | None = None) -> bytes:
        """A header with the next seq, for frames a check builds by hand (short or corrupt ones)."""
        seq, self._seq = self._seq, next_seq(self._seq)
        return HEADER.pack(major, self.minor if minor is None else minor, msg_type, flags, seq, txn)

    def wire(self, msg_type: int, payload: bytes, *, txn: int = 0, flags: int = 0, version: tuple[int, int] | None = None) -> bytes:
        """A whole frame with the next seq; ``version``: the (major, minor) in its header, else the session's."""
        major, minor = (PROTO_MAJOR, self.minor) if version is None else version
        frame = Frame(major, minor, msg_type, flags, self._seq, txn, payload)
        self._seq = next_seq(self._seq)
        return encode_frame(frame)

    def write(self, data: bytes) -> float:
        self._transport.write(data)
        self.last_sent_at = self.clock.monotonic()
        return self.last_sent_at

    def send(self, msg: Message, *, txn: int = 0, flags: int = 0, major: int = PROTO_MAJOR, minor: int | None = None) -> Sent:
        mark = self.mark()
        version = (major, self.minor if minor is None else minor)
        at = self.write(self.wire(msg.MSG_TYPE, msg.pack(), txn=txn, flags=flags, version=version))
        return Sent(txn, msg.MSG_TYPE, at, mark)

    def send_raw(self, msg_type: int, payload: bytes, *, txn: int, flags: int = 0) -> Sent:
        mark = self.mark()
        return Sent(txn, msg_type, self.write(self.wire(msg_type, payload, txn=txn, flags=flags)), mark)

    def mark(self) -> int:
        return len(self.log)

    def wait(self, match: Callable[[Received], bool], timeout_s: float, since: int) -> Received | None:
        """The first frame from ``since`` on that matches, reading until the deadline; None if none came."""
        deadline = self.clock.monotonic() + timeout_s
        index = since
        while True:
            while index < len(self.log):
                item = self.log[index]
                index += 1
                if match(item):
                    return item
            if self.clock.monotonic() >= deadline:
                return None
            self._read_once()

    def reply(self, sent: Sent, timeout_s: float = REPLY_TIMEOUT_S) -> Received | None:
        return self.wait(lambda r: r.frame.txn == sent.txn and r.frame.msg_type in REPLY_TYPES, timeout_s, sent.mark)

    def exchange(self, msg: Message, *, txn: int | None = None, flags: int = 0, major: int = PROTO_MAJOR,
                 minor: int | None = None) -> Exchange:
        sent = self.send(msg, txn=self.new_txn() if txn is None else txn, flags=flags, major=major, minor=minor)
        return self.answer(sent)

    def answer(self, sent: Sent) -> Exchange:
        got = self.reply(sent)
        name = wire_name(sent.msg_type)
        if got is None:
            raise Unmet(f"no answer to {name} (txn {sent.txn}) within {REPLY_TIMEOUT_S * 1000:.0f} ms")
        if got.message is None:
            raise Unmet(f"{name} was answered with an undecodable {wire_name(got.frame.msg_type)}: {got.problem}")
        return Exchange(sent, got)

    @contextmanager
    def silent(self) -> Iterator[None]:
        """Send nothing unasked, not even HEARTBEAT or EVENT_ACK: the watchdog checks starve the device."""
        saved = self.keepalive, self.auto_ack
        self.keepalive = self.auto_ack = False
        try:
            yield
        finally:
            self.keepalive, self.auto_ack = saved

    @contextmanager
    def holding_acks(self) -> Iterator[None]:
        """Keep the session alive but acknowledge no event: the event checks watch them repeat."""
        saved = self.auto_ack
        self.auto_ack = False
        try:
            yield
        finally:
            self.auto_ack = saved

    def _read_once(self) -> None:
        data = self._transport.read()  # waits at most the transport's read timeout (10 ms)
        now = self.clock.monotonic()
        for frame in self.decoder.feed(data):
            try:
                message: Message | None = decode_message(frame.msg_type, frame.payload)
                problem = ""
            except DecodeError as exc:
                message, problem = None, str(exc)
            self.log.append(Received(len(self.log), now, frame, message, problem))
            event = event_of(message)
            if event is not None and self.auto_ack:
                self.send(EventAck(event.event_id))
        if self.keepalive and self.watchdog_ms and now - self.last_sent_at >= self.watchdog_ms / (1000 * HEARTBEATS_PER_WATCHDOG):
            self.send(Heartbeat(0))


# ---- small helpers --------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
M = TypeVar("M", bound=Message)
T = TypeVar("T")


def wire_name(msg_type: int) -> str:
    """HELLO_ACK, GET_COUNTERS...: the names of docs/protocol.md §4."""
    cls = REGISTRY.get(msg_type)
    return _CAMEL.sub("_", cls.__name__).upper() if cls is not None else f"type 0x{msg_type:02X}"


def describe(message: Message | None) -> str:
    if message is None:
        return "nothing"
    if isinstance(message, Ack):
        text = f"ACK {message.result.name}"
        if message.detail16:
            text += f" detail16=0x{message.detail16:04X}"
        if message.detail32:
            text += f" detail32={message.detail32}"
        return text
    return wire_name(message.MSG_TYPE)


def describe_received(item: Received | None) -> str:
    if item is None:
        return "no answer"
    if item.message is None:
        return f"an undecodable {wire_name(item.frame.msg_type)} ({item.problem})"
    return describe(item.message) + (" (DUPLICATE)" if item.frame.flags & FLAG_DUPLICATE else "")


def event_of(message: Message | None) -> Event | None:
    """The 1.0 fields of either event type."""
    if isinstance(message, BoundEvent):
        return message.unbound()
    return message if isinstance(message, Event) else None


def telemetry_of(item: Received) -> Telemetry | None:
    return item.message if isinstance(item.message, Telemetry) else None


def is_reply(item: Received) -> bool:
    return item.frame.msg_type in REPLY_TYPES


def valve_commanded(telemetry: Telemetry) -> bool:
    return bool(telemetry.valve & 0x01)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def delimited(body: bytes) -> bytes:
    return b"\x00" + cobs_encode(body) + b"\x00"


def uptime_periods(frames: list[Telemetry]) -> list[int]:
    """Intervals between telemetry frames on the device's own clock: a busy host's scheduling does
    not stretch them (uptime_ms is a u32 and wraps)."""
    return [(b.uptime_ms - a.uptime_ms) & 0xFFFFFFFF for a, b in itertools.pairwise(frames)]


def acked(exchange: Exchange, result: Result) -> bool:
    return isinstance(exchange.message, Ack) and exchange.message.result is result


def nonce() -> int:
    return random.randrange(1, 1 << 32)


# ---- the context every check shares -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatchedTrip:
    fault_flags: int  # as the first TELEMETRY after the trip shows them
    report_delay_ms: float | None  # device clock: the trip event's uptime -> that TELEMETRY's; None without the event


@dataclass(slots=True)
class FreezeRun:
    """A freeze a check started: its FREEZE exchange."""

    exchange: Exchange
    duration_ms: int

    @property
    def txn(self) -> int:
        return self.exchange.txn


class Context:
    """The raw client, the device as the kit found it, and the scenarios several checks read (each run
    once, on first use). Helpers raise Unmet when the device does not give what a check needs."""

    def __init__(self, client: RawClient, opening: Exchange, calibration: CalData) -> None:
        self.client = client
        self.opening = cast(HelloAck, opening.message)  # identity and capabilities as found
        self.calibration = calibration  # as found: the kit restores it
        self.session = opening  # the HELLO exchange of the current session
        self.session_nonce = cast(HelloAck, opening.message).host_nonce
        self.frames_from = opening.reply.index  # device frames before the kit's own HELLO_ACK may be torn
        self.decoder_baseline = dataclasses.replace(client.decoder.stats)
        self._scenarios: dict[str, object] = {}

    # -- sessions ---------------------------------------------------------------------------------

    def hello(self, watchdog_ms: int = WORK_WATCHDOG_MS, *, minor: int = PROTO_MINOR, txn: int | None = None,
              host_nonce: int | None = None) -> Exchange:
        """A HELLO that must open a session: the answer is a HELLO_ACK echoing the nonce."""
        host_nonce = nonce() if host_nonce is None else host_nonce
        x = self.client.exchange(Hello(PROTO_MAJOR, minor, watchdog_ms, host_nonce), txn=txn, minor=minor)
        ack = x.message
        if not isinstance(ack, HelloAck) or ack.host_nonce != host_nonce:
            raise Unmet(f"HELLO answered {describe_received(x.reply)} instead of a HELLO_ACK echoing nonce 0x{host_nonce:08X}")
        self.client.minor = min(minor, ack.proto_minor)
        self.client.watchdog_ms = ack.watchdog_ms
        self.session, self.session_nonce = x, host_nonce
        return x

    @property
    def session_ack(self) -> HelloAck:
        return cast(HelloAck, self.session.message)

    def tidy(self) -> None:
        """Before every check: end whatever the last one left running and start a fresh 1.1 session,
        READY. A watchdog trip is the only fault the kit causes, and the only one it clears."""
        client = self.client
        client.keepalive = client.auto_ack = True
        try:
            client.exchange(Stop(0))
            if cast(HelloAck, self.hello().message).fault_flags & Fault.WATCHDOG_TRIP:
                client.exchange(ClearFault())
        except Unmet as exc:
            raise ConformanceError(client.port, f"the device stopped cooperating between checks ({exc})",
                                   "Power-cycle the device and run the kit again") from None

    def leave_session(self) -> Exchange:
        """BYE, for checks that need the device without a session."""
        self.needs_1_1("without BYE (a 1.1 message, never sent to a 1.0 device) the kit cannot end a session")
        x = self.client.exchange(Bye(0))
        if not acked(x, Result.OK):
            raise Unmet(f"BYE answered {describe_received(x.reply)}: the kit cannot end the session to test this")
        self.client.watchdog_ms = None
        return x

    def latch_watchdog_trip(self) -> LatchedTrip:
        """A latched fault to test with: a default-watchdog session, then silence until TELEMETRY shows it."""
        old = self.seen_event_ids()
        hello = self.hello(0)
        watchdog_ms = cast(HelloAck, hello.message).watchdog_ms
        client = self.client
        with client.silent():
            got = client.wait(lambda r: (t := telemetry_of(r)) is not None and bool(t.fault_flags & Fault.WATCHDOG_TRIP),
                              (watchdog_ms + 1000) / 1000, hello.reply.index + 1)
            if got is None:
                raise Unmet(f"no latched fault to test with: the watchdog did not trip within {watchdog_ms + 1000} ms "
                            "of host silence (see watchdog/W1)")
            trip = client.wait(lambda r: (ev := event_of(r.message)) is not None and ev.code is EventCode.WATCHDOG_TRIP
                               and ev.event_id not in old, EVENT_TIMEOUT_S, hello.reply.index + 1)
        telemetry = cast(Telemetry, got.message)
        event = event_of(trip.message) if trip is not None else None
        delay = None if event is None else float((telemetry.uptime_ms - event.uptime_ms) & 0xFFFFFFFF)
        return LatchedTrip(telemetry.fault_flags, delay)

    # -- requests ---------------------------------------------------------------------------------

    def call(self, msg: Message, expect: type[M]) -> M:
        x = self.client.exchange(msg)
        if not isinstance(x.message, expect):
            raise Unmet(f"{wire_name(msg.MSG_TYPE)} answered {describe_received(x.reply)}, expected {wire_name(expect.MSG_TYPE)}")
        return x.message

    def counters(self) -> Counters:
        return self.call(GetCounters(), Counters)

    def freeze(self, duration_ms: int, mode: FreezeMode = FreezeMode.TIMED, trigger: TriggerMode = TriggerMode.HOST) -> FreezeRun:
        """A FREEZE the check needs accepted."""
        x = self.client.exchange(Freeze(mode, trigger, duration_ms))
        if not acked(x, Result.OK):
            raise Unmet(f"FREEZE {mode.name} {trigger.name} {duration_ms} ms answered {describe_received(x.reply)}")
        return FreezeRun(x, duration_ms)

    def stop(self) -> Exchange:
        x = self.client.exchange(Stop(0))
        if not acked(x, Result.OK):
            raise Unmet(f"STOP answered {describe_received(x.reply)}")
        return x

    # -- waiting for what the device sends --------------------------------------------------------

    def telemetry(self, match: Callable[[Telemetry], bool], since: int, what: str, timeout_s: float = 1.0) -> Received:
        got = self.client.wait(lambda r: (t := telemetry_of(r)) is not None and match(t), timeout_s, since)
        if got is None:
            raise Unmet(f"no TELEMETRY {what} within {timeout_s * 1000:.0f} ms")
        return got

    def freezing(self, run: FreezeRun) -> Received:
        """The first TELEMETRY of a freeze: FREEZING, its txn, valve commanded open."""
        return self.telemetry(lambda t: t.state is DeviceState.FREEZING and t.freeze_txn == run.txn and valve_commanded(t),
                              run.exchange.sent.mark, f"showing freeze txn {run.txn} FREEZING with the valve open")

    def running(self, run: FreezeRun, elapsed_ms: int = RUNNING_MS) -> Received:
        """Wait until the device says the freeze has run this long (its own elapsed_ms)."""
        return self.telemetry(lambda t: t.freeze_txn == run.txn and t.elapsed_ms >= elapsed_ms, run.exchange.sent.mark,
                              f"showing freeze txn {run.txn} at {elapsed_ms} ms", (elapsed_ms + 1000) / 1000)

    def next_telemetry(self) -> Received:
        """Wait for the next TELEMETRY to arrive, so what the check sends next lands right after one:
        a device that reports a change only on its periodic schedule then shows its whole period."""
        return self.telemetry(lambda t: True, self.client.mark(), "at all")

    def event(self, match: Callable[[Event], bool], since: int, what: str, timeout_s: float = EVENT_TIMEOUT_S) -> tuple[Received, Event]:
        got = self.client.wait(lambda r: (ev := event_of(r.message)) is not None and match(ev), timeout_s, since)
        if got is None:
            raise Unmet(f"no {what} event within {timeout_s * 1000:.0f} ms")
        return got, cast(Event, event_of(got.message))

    def freeze_done(self, run: FreezeRun, since: int | None = None) -> tuple[Received, Event]:
        return self.event(lambda ev: ev.code is EventCode.FREEZE_DONE and ev.freeze_txn == run.txn,
                          run.exchange.sent.mark if since is None else since, f"FREEZE_DONE for freeze txn {run.txn}",
                          run.duration_ms / 1000 + EVENT_TIMEOUT_S)

    def events_since(self, mark: int) -> list[tuple[Received, Event]]:
        return [(r, ev) for r in self.client.log[mark:] if (ev := event_of(r.message)) is not None]

    def seen_event_ids(self) -> set[int]:
        """Every event id received so far: a late copy of an earlier check's event is not news."""
        return {ev.event_id for _, ev in self.events_since(0)}

    def telemetry_between(self, start: int, end: int) -> list[Telemetry]:
        return [t for r in self.client.log[start:end] if (t := telemetry_of(r)) is not None]

    # -- capabilities and versions -----------------------------------------------------------------

    def needs(self, present: bool, missing: str) -> None:
        if not present:
            raise NotApplicable(missing)

    @property
    def caps(self) -> Capability:
        return self.opening.capabilities

    def needs_halo(self) -> None:
        self.needs(bool(self.caps & Capability.HALO_TIMING), "no halo timing (capability 0x0020): END_IN and HALO freezes are unsupported")

    def needs_trigger(self) -> None:
        self.needs(bool(self.caps & TRIGGERS), "no hand trigger or foot switch (capability 0x0008 / 0x0010)")

    def needs_1_1(self, why: str) -> None:
        self.needs(self.opening.proto_minor >= 1, f"the device speaks protocol 1.{self.opening.proto_minor}: {why}")

    # -- scenarios ---------------------------------------------------------------------------------

    def scenario(self, build: Callable[[Context], T]) -> T:
        """Run an expensive sequence once and let several checks read it; its failure fails each of them."""
        key = build.__name__
        if key not in self._scenarios:
            try:
                self._scenarios[key] = build(self)
            except Unmet as exc:
                self._scenarios[key] = exc
        found = self._scenarios[key]
        if isinstance(found, Unmet):
            raise Unmet(str(found))
        return cast(T, found)

    # -- calibration --------------------------------------------------------------------------------

    def read_calibration(self) -> CalData:
        return self.call(CalRead(), CalData)

    def restore_calibration(self) -> None:
        if self.read_calibration() == self.calibration:
            return
        x = self.client.exchange(CalWrite(*dataclasses.astuple(self.calibration)))
        if not acked(x, Result.OK) or self.read_calibration() != self.calibration:
            raise Unmet(f"could not restore the calibration as found (CAL_WRITE answered {describe_received(x.reply)})")


# ---- the registry -----------------------------------------------------------------------------------

SECTIONS = (
    "framing", "version", "handshake", "requests", "freeze", "cap", "idempotency", "stop", "end_in", "events",
    "watchdog", "counters", "telemetry", "calibration", "session",
)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    id: str
    section: str
    protocol: str
    title: str
    run: Callable[[Context], Finding]


CHECKS: list[CheckSpec] = []


def _check(section: str, rule_id: str, protocol: str, title: str) -> Callable[[Callable[[Context], Finding]], Callable[[Context], Finding]]:
    assert section in SECTIONS and all(spec.id != rule_id for spec in CHECKS)

    def register(fn: Callable[[Context], Finding]) -> Callable[[Context], Finding]:
        CHECKS.append(CheckSpec(rule_id, section, protocol, title, fn))
        return fn

    return register


# ---- framing (§2.4, §4.4) ---------------------------------------------------------------------------


def _ignored(ctx: Context, garbage: bytes, what: str) -> Finding:
    """Send garbage and a good GET_COUNTERS in one write. The device reads its input in order, so an
    answer to the garbage would come before the good one's; the good answer proves it resynchronised."""
    client = ctx.client
    mark = client.mark()
    txn = client.new_txn()
    client.write(garbage + client.wire(GetCounters.MSG_TYPE, b"", txn=txn))
    good = client.wait(lambda r: r.frame.txn == txn and is_reply(r), REPLY_TIMEOUT_S, mark)
    strays = [r for r in client.log[mark : good.index if good else len(client.log)] if is_reply(r)]
    e = Expect()
    e.that(not strays, f"answered {what}: {', '.join(describe_received(r) for r in strays)}")
    e.that(good is not None and good.message is not None,  # COUNTERS, or ACK NO_SESSION without a session
           f"the GET_COUNTERS sent right after {what} got {describe_received(good)}: the receiver did not resynchronise")
    return e.done("not answered, the next request answered" if not e.problems else "")


def _probe_header(ctx: Context, major: int = PROTO_MAJOR) -> bytes:
    """A GET_COUNTERS header with a txn of its own: an answer to it would be recognisable."""
    return ctx.client.header(GetCounters.MSG_TYPE, txn=ctx.client.new_txn(), major=major)


@_check("framing", "F1", "§2.4", "empty frames (delimiters in a row) ignored")
def _empty_frames(ctx: Context) -> Finding:
    return _ignored(ctx, b"\x00\x00\x00\x00", "4 delimiters in a row")


@_check("framing", "F2", "§2.4", "a run over 253 bytes without delimiter discarded, a frame at its tail too")
def _overlong_run(ctx: Context) -> Finding:
    def run(length: int) -> bytes:  # garbage, then a valid frame's COBS block and its closing delimiter
        body = _probe_header(ctx)
        return b"\x55" * length + delimited(body + CRC.pack(crc32(body)))[1:]

    return _ignored(ctx, run(254) + run(300), "runs of 254 and 300 bytes ending in a valid frame")


@_check("framing", "F3", "§2.4", "a body shorter than 12 bytes discarded")
def _short_frames(ctx: Context) -> Finding:
    head = _probe_header(ctx)[:7]
    return _ignored(ctx, delimited(head + CRC.pack(crc32(head))) + delimited(b"\x01\x02\x03"),
                    "bodies of 11 bytes (CRC right) and 3 bytes")


@_check("framing", "F4", "§2.4", "a bad CRC or invalid COBS discarded")
def _bad_crc(ctx: Context) -> Finding:
    body = _probe_header(ctx)
    wrong_crc = body + CRC.pack(crc32(body) ^ 0x00000001)
    flipped = bytearray(body + CRC.pack(crc32(body)))
    flipped[6] ^= 0x01  # a bit of the txn: the CRC no longer matches
    bad_cobs = b"\x00" + bytes([0x30]) + cobs_encode(body + CRC.pack(crc32(body)))[1:] + b"\x00"  # a code byte past the end
    return _ignored(ctx, delimited(wrong_crc) + delimited(bytes(flipped)) + bad_cobs,
                    "a CRC off by one bit, a flipped header bit, a COBS code past the end")


@_check("framing", "F5", "§4.4", "a payload whose length differs from its layout discarded")
def _wrong_length(ctx: Context) -> Finding:
    client = ctx.client
    garbage = (client.wire(GetCounters.MSG_TYPE, b"\x00", txn=client.new_txn())
               + client.wire(Stop.MSG_TYPE, b"", txn=client.new_txn())
               + client.wire(Stop.MSG_TYPE, b"\x00\x00", txn=client.new_txn()))
    return _ignored(ctx, garbage, "GET_COUNTERS with 1 byte, STOP with 0 and 2 bytes")


@_check("framing", "F6", "§2", "every device frame well-formed: COBS, CRC-32, header, layout size")
def _device_frames(ctx: Context) -> Finding:
    ctx.next_telemetry()  # at least one fresh frame to judge
    client = ctx.client
    frames = client.log[ctx.frames_from :]
    stats, base = client.decoder.stats, ctx.decoder_baseline
    e = Expect()
    for name in ("crc_errors", "framing_errors", "short_frames", "overflows"):
        count = getattr(stats, name) - getattr(base, name)
        e.that(count == 0, f"{count} {name.replace('_', ' ')}")
    foreign = [r.frame for r in frames if r.frame.proto_major != PROTO_MAJOR or not r.frame.msg_type & 0x80]
    if foreign:
        e.fail(f"{len(foreign)} frames of another major or a host type, e.g. {foreign[0].proto_major}.x type 0x{foreign[0].msg_type:02X}")
    bad = [r for r in frames if r.message is None]
    if bad:
        e.fail(f"{len(bad)} payloads that do not fit their layout, e.g. {bad[0].problem}")
    return e.done(f"{len(frames)} frames since the handshake")


# ---- versions (§3.2, §3.3) -------------------------------------------------------------------------


@_check("version", "V1", "§3.2", "another major: HELLO answered in the device's own version, nonce 0, no session; the rest ignored")
def _foreign_major(ctx: Context) -> Finding:
    ctx.leave_session()
    other = PROTO_MAJOR + 1
    x = ctx.client.exchange(Hello(other, 0, 0, nonce()), major=other, minor=0)
    e = Expect()
    ack, header = x.message, x.reply.frame
    if e.that(isinstance(ack, HelloAck), f"a {other}.0 HELLO got {describe_received(x.reply)}, expected a HELLO_ACK"):
        assert isinstance(ack, HelloAck)
        e.that(ack.proto_major == PROTO_MAJOR and header.proto_major == PROTO_MAJOR,
               f"HELLO_ACK major {ack.proto_major} (header {header.proto_major}), expected the device's own {PROTO_MAJOR}")
        e.that(ack.host_nonce == 0, f"host_nonce 0x{ack.host_nonce:08X}: a payload of another major cannot be trusted, it must be 0")
    probe = ctx.client.exchange(GetCounters())
    e.that(acked(probe, Result.NO_SESSION), f"GET_COUNTERS after it got {describe_received(probe.reply)}, "
                                             "expected ACK NO_SESSION: the foreign HELLO opened a session")
    body = _probe_header(ctx, major=other)
    ignored = _ignored(ctx, delimited(body + CRC.pack(crc32(body))), f"a {other}.0 GET_COUNTERS")
    e.problems.extend(ignored.problems)
    return e.done(f"HELLO_ACK {header.proto_major}.{header.proto_minor}, no session")


@_check("version", "V2", "§3.3", "HELLO_ACK in the negotiated minor with that minor's schema hash")
def _schema(ctx: Context) -> Finding:
    ack, header = ctx.session_ack, ctx.session.reply.frame
    negotiated = min(PROTO_MINOR, header.proto_minor)
    e = Expect()
    e.that(ack.proto_minor == negotiated,
           f"HELLO_ACK minor {ack.proto_minor} to a 1.{PROTO_MINOR} HELLO from a 1.{header.proto_minor} device, expected 1.{negotiated}")
    expected = schema_hash(ack.proto_minor) if ack.proto_minor <= PROTO_MINOR else None
    wanted = f"0x{expected:08X} for 1.{ack.proto_minor}" if expected is not None else "a minor this kit knows"
    e.that(ack.schema_hash == expected, f"schema_hash 0x{ack.schema_hash:08X}, expected {wanted}")
    return e.done(f"1.{ack.proto_minor}: 0x{ack.schema_hash:08X}")


@_check("version", "V3", "§3.2", "a 1.0 HELLO negotiates 1.0: HELLO_ACK minor 0 with the 1.0 schema hash")
def _negotiates_1_0(ctx: Context) -> Finding:
    ack = cast(HelloAck, ctx.hello(minor=0).message)
    e = Expect()
    e.that(ack.proto_minor == 0, f"HELLO_ACK minor {ack.proto_minor} to a 1.0 HELLO: a 1.0 host would refuse the device")
    e.that(ack.schema_hash == schema_hash(0), f"schema_hash 0x{ack.schema_hash:08X}, expected the 1.0 hash 0x{schema_hash(0):08X}")
    return e.done(f"1.{ack.proto_minor}: 0x{ack.schema_hash:08X}")


# ---- handshake (§5.1, §7.6) ------------------------------------------------------------------------


@_check("handshake", "H1", "§5.1", "HELLO_ACK fields: version, nonce echoed, serial, cap, kind, cryogen, boot")
def _hello_ack_fields(ctx: Context) -> Finding:
    x, host_nonce = ctx.session, ctx.session_nonce
    ack, header = ctx.session_ack, x.reply.frame
    e = Expect()
    e.that(ack.proto_major == PROTO_MAJOR and header.proto_major == PROTO_MAJOR,
           f"proto_major {ack.proto_major} (header {header.proto_major})")
    e.that(ack.host_nonce == host_nonce, f"nonce 0x{ack.host_nonce:08X} echoed for 0x{host_nonce:08X}")
    e.that(bool(ack.serial) and ack.serial.isascii() and ack.serial.isprintable(),
           f"serial {ack.serial!r}: must be non-empty printable ASCII")
    e.that(ack.max_freeze_ms > 0, "max_freeze_ms 0")
    e.that(ack.boot_count > 0, "boot_count 0: it counts power-ons from 1")
    seen = ctx.telemetry(lambda t: True, x.reply.index + 1, "after HELLO_ACK")
    t = cast(Telemetry, seen.message)
    e.that(t.boot_count == ack.boot_count, f"TELEMETRY boot_count {t.boot_count}, HELLO_ACK {ack.boot_count}")
    e.that(t.state in (DeviceState.READY, DeviceState.FAULT), f"state {t.state.name} after HELLO, expected READY")
    return e.done(f"{ack.kind.name} {ack.cryogen.name} serial {ack.serial} cap {ack.max_freeze_ms} ms boot {ack.boot_count}")


@_check("handshake", "H2", "§5.1", "watchdog_ms clamped to 100..60000, 0 meaning 250")
def _watchdog_clamp(ctx: Context) -> Finding:
    e = Expect()
    seen = []
    for asked, enforced in WATCHDOG_CLAMPS:
        got = cast(HelloAck, ctx.hello(asked).message).watchdog_ms
        seen.append(f"{asked}->{got}")
        e.that(got == enforced, f"asked {asked} ms, the device enforces {got} ms, expected {enforced}")
    return e.done(", ".join(seen))


@_check("handshake", "H3", "§5.1", "a HELLO during a freeze ends it first: NEW_SESSION, stamped with the old session")
def _hello_ends_freeze(ctx: Context) -> Finding:
    earlier = ctx.session_nonce
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.running(run, SHORT_FREEZE_MS)
    hello = ctx.hello()
    e = Expect()
    after = ctx.telemetry(lambda t: True, hello.reply.index + 1, "after the HELLO_ACK")
    e.that(not valve_commanded(cast(Telemetry, after.message)), "the first TELEMETRY after the HELLO_ACK shows the valve commanded open")
    done_at, done = ctx.freeze_done(run, hello.sent.mark)
    e.that(done.end_reason is EndReason.NEW_SESSION, f"FREEZE_DONE end_reason {done.end_reason.name}, expected NEW_SESSION")
    if isinstance(done_at.message, BoundEvent):
        e.that(done_at.message.session_id == earlier,
               f"FREEZE_DONE session_id 0x{done_at.message.session_id:08X}, the session it ended was 0x{earlier:08X}")
    return e.done(f"FREEZE_DONE {done.end_reason.name} after {done.valve_open_ms} ms")


@_check("handshake", "H4", "§7.6", "HELLO_ACK's serial is the port's USB serial number")
def _usb_serial(ctx: Context) -> Finding:
    port = next((p for p in list_ports() if p.device == ctx.client.port), None)
    ctx.needs(port is not None and bool(port.serial_number),
              "the port reports no USB serial number (a pty, a socket or an adapter without one)")
    assert port is not None
    e = Expect()
    e.that(port.serial_number == ctx.opening.serial, f"USB serial {port.serial_number}, HELLO_ACK serial {ctx.opening.serial}")
    return e.done(f"{port.serial_number}")


# ---- requests (§4.4, §4.5) -------------------------------------------------------------------------


@_check("requests", "R1", "§4.5", "without a session only HELLO, STOP, BYE served; others ACK NO_SESSION")
def _no_session_requests(ctx: Context) -> Finding:
    ctx.leave_session()
    refused: list[Message] = [GetCounters(), CalRead(), CalWrite(*dataclasses.astuple(ctx.calibration)), ClearFault(),
                              Freeze(FreezeMode.TIMED, TriggerMode.HOST, SHORT_FREEZE_MS), EndIn(SHORT_FREEZE_MS)]
    e = Expect()
    for msg in refused:
        x = ctx.client.exchange(msg)
        e.that(acked(x, Result.NO_SESSION) and cast(Ack, x.message).request_type == msg.MSG_TYPE,
               f"{wire_name(msg.MSG_TYPE)} answered {describe_received(x.reply)}, expected ACK NO_SESSION for it")
    for msg in (Stop(0), Bye(0)):
        x = ctx.client.exchange(msg)
        e.that(acked(x, Result.OK), f"{wire_name(msg.MSG_TYPE)} answered {describe_received(x.reply)}, expected ACK OK")
    return e.done(f"{len(refused)} requests refused NO_SESSION, STOP and BYE OK")


@_check("requests", "R2", "§4.4", "a request with txn 0 neither executed nor answered")
def _txn_zero(ctx: Context) -> Finding:
    client = ctx.client
    before = ctx.counters()
    mark = client.mark()
    txn = client.new_txn()
    client.write(client.wire(Freeze.MSG_TYPE, Freeze(FreezeMode.TIMED, TriggerMode.HOST, TIMED_FREEZE_MS).pack(), txn=0)
                 + client.wire(GetCounters.MSG_TYPE, b"", txn=txn))
    good = client.wait(lambda r: r.frame.txn == txn and is_reply(r), REPLY_TIMEOUT_S, mark)
    e = Expect()
    answered = [r for r in client.log[mark:] if is_reply(r) and r.frame.txn == 0]
    e.that(not answered, f"the txn-0 FREEZE was answered: {describe_received(answered[0]) if answered else ''}")
    if e.that(good is not None and isinstance(good.message, Counters), f"the GET_COUNTERS after it got {describe_received(good)}"):
        started = cast(Counters, cast(Received, good).message).freezes_started - before.freezes_started
        e.that(started == 0, f"the txn-0 FREEZE was executed: freezes_started +{started}")
    return e.done("not answered, not executed" if not e.problems else "")


@_check("requests", "R3", "§4.4", "an unknown host type with txn != 0: ACK UNSUPPORTED naming it")
def _unknown_type(ctx: Context) -> Finding:
    ctx.needs_1_1("a 1.0 device ignores unknown types (§11.4)")
    x = ctx.client.answer(ctx.client.send_raw(UNKNOWN_TYPE, b"", txn=ctx.client.new_txn()))
    e = Expect()
    ack = x.message
    e.that(isinstance(ack, Ack) and ack.result is Result.UNSUPPORTED and ack.request_type == UNKNOWN_TYPE
           and ack.detail16 == ack.detail32 == 0,
           f"type 0x{UNKNOWN_TYPE:02X} answered {describe_received(x.reply)}, expected ACK UNSUPPORTED for 0x{UNKNOWN_TYPE:02X}, details 0")
    return e.done(f"type 0x{UNKNOWN_TYPE:02X}: {describe_received(x.reply)}")


@_check("requests", "R4", "§4.3", "an undefined enum value, right length: ACK BAD_REQUEST, not executed")
def _undefined_enum(ctx: Context) -> Finding:
    ctx.needs_1_1("a 1.0 device discards undefined values like a corrupt frame")
    before = ctx.counters()
    e = Expect()
    for what, payload in (("mode 7", Freeze.LAYOUT.pack(7, TriggerMode.HOST, TIMED_FREEZE_MS)),
                          ("trigger 9", Freeze.LAYOUT.pack(FreezeMode.TIMED, 9, TIMED_FREEZE_MS))):
        x = ctx.client.answer(ctx.client.send_raw(Freeze.MSG_TYPE, payload, txn=ctx.client.new_txn()))
        e.that(acked(x, Result.BAD_REQUEST), f"FREEZE with {what} answered {describe_received(x.reply)}, expected ACK BAD_REQUEST")
    started = ctx.counters().freezes_started - before.freezes_started
    e.that(started == 0, f"freezes_started +{started}: an undefined FREEZE was executed")
    return e.done("FREEZE mode 7, trigger 9 refused" if not e.problems else "")


@_check("requests", "R5", "§4.4", "never answered: HEARTBEAT or EVENT_ACK with a txn, a device message type")
def _never_answered(ctx: Context) -> Finding:
    client = ctx.client
    garbage = (client.wire(Heartbeat.MSG_TYPE, Heartbeat(0).pack(), txn=client.new_txn())
               + client.wire(EventAck.MSG_TYPE, EventAck(0xFFFF).pack(), txn=client.new_txn())
               + client.wire(GetCounters.MSG_TYPE | 0x80, b"", txn=client.new_txn()))
    return _ignored(ctx, garbage, "HEARTBEAT and EVENT_ACK with a txn, type 0x86")


@_check("requests", "R6", "§4.5", "during a freeze: CLEAR_FAULT BUSY, GET_COUNTERS and CAL_READ answered")
def _freezing_requests(ctx: Context) -> Finding:
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.freezing(run)
    clear = ctx.client.exchange(ClearFault())
    counters = ctx.client.exchange(GetCounters())
    cal = ctx.client.exchange(CalRead())
    ctx.stop()
    e = Expect()
    e.that(acked(clear, Result.BUSY), f"CLEAR_FAULT answered {describe_received(clear.reply)}, expected ACK BUSY")
    e.that(isinstance(counters.message, Counters), f"GET_COUNTERS answered {describe_received(counters.reply)}")
    e.that(isinstance(cal.message, CalData), f"CAL_READ answered {describe_received(cal.reply)}")
    return e.done()


# ---- FREEZE and its refusals (§6.1): the table, top to bottom --------------------------------------------


def _refused(ctx: Context, e: Expect, msg: Freeze | bytes, result: Result, why: str) -> Ack:
    """Send a FREEZE (a message, or a raw payload with undefined values) and expect one result."""
    if isinstance(msg, bytes):
        x = ctx.client.answer(ctx.client.send_raw(Freeze.MSG_TYPE, msg, txn=ctx.client.new_txn()))
        label = "FREEZE with an undefined mode"
    else:
        x = ctx.client.exchange(msg)
        label = f"FREEZE {msg.mode.name} {msg.trigger.name} {msg.duration_ms} ms"
    e.that(acked(x, result), f"{label} ({why}) answered {describe_received(x.reply)}, expected {result.name}")
    return x.message if isinstance(x.message, Ack) else Ack(Freeze.MSG_TYPE, Result.OK, 0, 0)


def _over_cap(ctx: Context) -> int:
    ctx.needs(ctx.opening.max_freeze_ms < U32_MAX, "the device's cap is the largest duration a FREEZE can carry")
    return ctx.opening.max_freeze_ms + 1


@_check("freeze", "FZ1", "§6.1", "no session: NO_SESSION before every other refusal")
def _fz_no_session(ctx: Context) -> Finding:
    over = _over_cap(ctx)
    ctx.leave_session()
    e = Expect()
    _refused(ctx, e, Freeze(FreezeMode.TIMED, TriggerMode.HOST, 0), Result.NO_SESSION, "duration 0")
    _refused(ctx, e, Freeze(FreezeMode.TIMED, TriggerMode.HOST, over), Result.NO_SESSION, "over the cap")
    _refused(ctx, e, Freeze(FreezeMode.HALO, TriggerMode.DEAD_MAN, SHORT_FREEZE_MS), Result.NO_SESSION, "any mode")
    return e.done()


@_check("freeze", "FZ2", "§6.1", "a latched fault: FAULT_LATCHED, detail16 = the fault flags, even for a valid FREEZE")
def _fz_fault_latched(ctx: Context) -> Finding:
    over = _over_cap(ctx)
    flags = ctx.latch_watchdog_trip().fault_flags
    e = Expect()
    for msg, why in ((Freeze(FreezeMode.TIMED, TriggerMode.HOST, TIMED_FREEZE_MS), "a valid one"),
                     (Freeze(FreezeMode.TIMED, TriggerMode.HOST, 0), "duration 0"),
                     (Freeze(FreezeMode.TIMED, TriggerMode.HOST, over), "over the cap")):
        ack = _refused(ctx, e, msg, Result.FAULT_LATCHED, why)
        if ack.result is Result.FAULT_LATCHED:
            e.that(ack.detail16 == flags, f"detail16 0x{ack.detail16:04X}, the fault flags are 0x{flags:04X}")
    return e.done(f"fault flags 0x{flags:04X}")


@_check("freeze", "FZ3", "§6.1", "a freeze running: BUSY before BAD_REQUEST and OVER_CAP, the freeze unharmed")
def _fz_busy(ctx: Context) -> Finding:
    over = _over_cap(ctx)
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.freezing(run)
    e = Expect()
    mark = ctx.client.mark()
    for msg, why in ((Freeze(FreezeMode.TIMED, TriggerMode.HOST, TIMED_FREEZE_MS), "a valid one"),
                     (Freeze(FreezeMode.TIMED, TriggerMode.HOST, 0), "duration 0"),
                     (Freeze(FreezeMode.TIMED, TriggerMode.HOST, over), "over the cap")):
        _refused(ctx, e, msg, Result.BUSY, why)
    t = cast(Telemetry, ctx.next_telemetry().message)
    e.that(t.state is DeviceState.FREEZING and t.freeze_txn == run.txn and valve_commanded(t),
           f"the running freeze did not survive: state {t.state.name}, freeze_txn {t.freeze_txn}")
    e.that(not any(ev.code is EventCode.FREEZE_DONE for _, ev in ctx.events_since(mark)), "a FREEZE_DONE came during the refusals")
    ctx.stop()
    return e.done()


@_check("freeze", "FZ4", "§6.1", "duration 0: BAD_REQUEST before OVER_CAP and UNSUPPORTED")
def _fz_duration_zero(ctx: Context) -> Finding:
    before = ctx.counters()
    e = Expect()
    for mode, trigger in ((FreezeMode.TIMED, TriggerMode.HOST), (FreezeMode.HALO, TriggerMode.HOST),
                          (FreezeMode.TIMED, TriggerMode.DEAD_MAN)):
        _refused(ctx, e, Freeze(mode, trigger, 0), Result.BAD_REQUEST, "duration 0")
    started = ctx.counters().freezes_started - before.freezes_started
    e.that(started == 0, f"freezes_started +{started}")
    return e.done()


@_check("freeze", "FZ5", "§6.1", "an undefined mode ranks as BAD_REQUEST: after NO_SESSION, FAULT_LATCHED, BUSY")
def _fz_undefined_rank(ctx: Context) -> Finding:
    ctx.needs_1_1("a 1.0 device discards undefined values")
    undefined = Freeze.LAYOUT.pack(7, TriggerMode.HOST, TIMED_FREEZE_MS)
    e = Expect()
    _refused(ctx, e, undefined, Result.BAD_REQUEST, "in READY")
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.freezing(run)
    _refused(ctx, e, undefined, Result.BUSY, "during a freeze")
    ctx.stop()
    ctx.latch_watchdog_trip()
    _refused(ctx, e, undefined, Result.FAULT_LATCHED, "with a latched fault")
    ctx.leave_session()
    _refused(ctx, e, undefined, Result.NO_SESSION, "without a session")
    return e.done()


@_check("freeze", "FZ6", "§6.1", "over the cap: OVER_CAP, detail32 = the cap; the cap itself accepted")
def _fz_over_cap(ctx: Context) -> Finding:
    over = _over_cap(ctx)
    cap = ctx.opening.max_freeze_ms
    e = Expect()
    ack = _refused(ctx, e, Freeze(FreezeMode.TIMED, TriggerMode.HOST, over), Result.OVER_CAP, f"cap {cap} ms")
    e.that(ack.result is not Result.OVER_CAP or ack.detail32 == cap, f"detail32 {ack.detail32}, the cap is {cap}")
    if not ctx.caps & Capability.HALO_TIMING:
        _refused(ctx, e, Freeze(FreezeMode.HALO, TriggerMode.HOST, over), Result.OVER_CAP, "before UNSUPPORTED")
    x = ctx.client.exchange(Freeze(FreezeMode.TIMED, TriggerMode.HOST, cap))
    e.that(acked(x, Result.OK), f"FREEZE of exactly the cap ({cap} ms) answered {describe_received(x.reply)}, expected OK")
    ctx.stop()
    return e.done(f"cap {cap} ms, detail32 {ack.detail32}")


@_check("freeze", "FZ7", "§6.1", "a capability missing: UNSUPPORTED")
def _fz_unsupported(ctx: Context) -> Finding:
    caps = ctx.caps
    cases = []
    if not caps & Capability.HALO_TIMING:
        cases.append((Freeze(FreezeMode.HALO, TriggerMode.HOST, TIMED_FREEZE_MS), "HALO without 0x0020"))
    if not caps & TRIGGERS:
        cases.append((Freeze(FreezeMode.TIMED, TriggerMode.TRIGGER_START, TIMED_FREEZE_MS), "a trigger without 0x0008/0x0010"))
    if not caps & Capability.DEAD_MAN or not caps & TRIGGERS:
        cases.append((Freeze(FreezeMode.TIMED, TriggerMode.DEAD_MAN, TIMED_FREEZE_MS), "DEAD_MAN without 0x0040 or a trigger"))
    ctx.needs(bool(cases), "the device has halo timing, a trigger and dead-man mode: nothing to refuse")
    before = ctx.counters()
    e = Expect()
    for msg, why in cases:
        _refused(ctx, e, msg, Result.UNSUPPORTED, why)
    started = ctx.counters().freezes_started - before.freezes_started
    e.that(started == 0, f"freezes_started +{started}")
    return e.done(", ".join(why for _, why in cases))


@_check("freeze", "FZ8", "§6.1", "accepted: ACK OK detail32 = duration, FREEZE_STARTED, FREEZING with the valve open")
def _fz_accepted(ctx: Context) -> Finding:
    before = ctx.counters()
    run = ctx.freeze(TIMED_FREEZE_MS)
    e = Expect()
    ack = cast(Ack, run.exchange.message)
    e.that(ack.detail32 == TIMED_FREEZE_MS, f"detail32 {ack.detail32}, expected the duration {TIMED_FREEZE_MS}")
    ctx.freezing(run)
    _, started = ctx.event(lambda ev: ev.code is EventCode.FREEZE_STARTED and ev.freeze_txn == run.txn,
                           run.exchange.sent.mark, f"FREEZE_STARTED for txn {run.txn}")
    e.that(started.requested_ms == TIMED_FREEZE_MS, f"FREEZE_STARTED requested_ms {started.requested_ms}")
    ctx.stop()
    count = ctx.counters().freezes_started - before.freezes_started
    e.that(count == 1, f"freezes_started +{count}, expected +1")
    return e.done(f"detail32 {ack.detail32}")


def _waits_for_trigger(ctx: Context, trigger: TriggerMode) -> Finding:
    before = ctx.counters()
    run = ctx.freeze(LONG_FREEZE_MS, trigger=trigger)
    seen = ctx.telemetry(lambda t: t.freeze_txn == run.txn or t.state is not DeviceState.READY, run.exchange.sent.mark,
                         "after the FREEZE")
    t = cast(Telemetry, seen.message)
    if t.trigger:
        raise Unmet("the trigger or foot switch is held: release it while the kit runs")
    record = ctx.counters()  # the last-freeze record is written when the FREEZE is accepted (§7.3)
    ctx.stop()
    e = Expect()
    e.that(t.state is DeviceState.WAIT_TRIGGER and not valve_commanded(t),
           f"state {t.state.name}, valve 0x{t.valve:02X}: expected WAIT_TRIGGER with the valve closed")
    e.that(t.elapsed_ms == 0 and t.remaining_ms == 0, f"elapsed_ms {t.elapsed_ms}, remaining_ms {t.remaining_ms} with the valve not open")
    e.that(record.last_txn == run.txn and record.last_end_reason is EndReason.NONE and record.last_valve_open_ms == 0,
           f"last freeze txn {record.last_txn} {record.last_end_reason.name} {record.last_valve_open_ms} ms, "
           f"expected txn {run.txn} NONE 0 ms once accepted")
    started = ctx.counters().freezes_started - before.freezes_started
    e.that(started == 0, f"freezes_started +{started} without a trigger press")
    return e.done(f"state {t.state.name}")


@_check("freeze", "FZ9", "§6.1", "TRIGGER_START: accepted, waits for the trigger with the valve closed")
def _fz_trigger_start(ctx: Context) -> Finding:
    ctx.needs_trigger()
    return _waits_for_trigger(ctx, TriggerMode.TRIGGER_START)


@_check("freeze", "FZ10", "§6.1", "DEAD_MAN: accepted, waits for the trigger with the valve closed")
def _fz_dead_man(ctx: Context) -> Finding:
    ctx.needs_trigger()
    ctx.needs(bool(ctx.caps & Capability.DEAD_MAN), "no dead-man mode (capability 0x0040)")
    return _waits_for_trigger(ctx, TriggerMode.DEAD_MAN)


# ---- the device's own timer and cap (§6.2, §6.3) ----------------------------------------------------


@_check("cap", "CP1", "§6.2", "a TIMED freeze ends by itself at its duration (COMPLETED)")
def _timed_end(ctx: Context) -> Finding:
    run = ctx.freeze(TIMED_FREEZE_MS)
    first = ctx.freezing(run)
    done_at, done = ctx.freeze_done(run)
    e = Expect()
    e.that(done.end_reason is EndReason.COMPLETED, f"end_reason {done.end_reason.name}, expected COMPLETED")
    e.that(abs(done.valve_open_ms - TIMED_FREEZE_MS) <= TIMER_TOLERANCE_MS,
           f"valve_open_ms {done.valve_open_ms} for {TIMED_FREEZE_MS} ms (tolerance {TIMER_TOLERANCE_MS} ms)")
    e.that(done.requested_ms == TIMED_FREEZE_MS, f"requested_ms {done.requested_ms}")
    e.that(done.halo_to_off_ms == NOT_AVAILABLE_U32, f"halo_to_off_ms {done.halo_to_off_ms} for a TIMED freeze")
    return e.done(f"device {done.valve_open_ms} ms for {TIMED_FREEZE_MS}, host saw {ms(done_at.at - first.at):.0f} ms")


@_check("cap", "CP2", "§6.3", "a HALO freeze without END_IN ends at its cap (CAP)")
def _halo_cap(ctx: Context) -> Finding:
    ctx.needs_halo()
    run = ctx.freeze(TIMED_FREEZE_MS, FreezeMode.HALO)
    _, done = ctx.freeze_done(run)
    e = Expect()
    e.that(done.end_reason is EndReason.CAP, f"end_reason {done.end_reason.name}, expected CAP")
    e.that(abs(done.valve_open_ms - TIMED_FREEZE_MS) <= TIMER_TOLERANCE_MS,
           f"valve_open_ms {done.valve_open_ms} for a cap of {TIMED_FREEZE_MS} ms (tolerance {TIMER_TOLERANCE_MS} ms)")
    e.that(done.halo_to_off_ms == NOT_AVAILABLE_U32, f"halo_to_off_ms {done.halo_to_off_ms} with no halo marked")
    return e.done(f"{done.end_reason.name} after {done.valve_open_ms} ms")


# ---- at most once (§5.4) -----------------------------------------------------------------------------


def _duplicate(e: Expect, first: Exchange, again: Exchange) -> None:
    """A replay: DUPLICATE set, the cached reply's type and payload byte for byte."""
    e.that(bool(again.reply.frame.flags & FLAG_DUPLICATE),
           f"the retransmission got {describe_received(again.reply)} without the DUPLICATE flag")
    e.that(again.reply.frame.msg_type == first.reply.frame.msg_type and again.reply.frame.payload == first.reply.frame.payload,
           f"the retransmission got {describe_received(again.reply)}, not the cached {describe_received(first.reply)}")


def _retransmit(ctx: Context, msg: Message, first: Exchange) -> Exchange:
    """The same request again: same txn, RETRANSMIT set, a new seq."""
    return ctx.client.answer(ctx.client.send(msg, txn=first.txn, flags=FLAG_RETRANSMIT))


@_check("idempotency", "I1", "§5.4", "a retransmitted FREEZE while it runs: cached answer, DUPLICATE, not executed")
def _retransmit_running(ctx: Context) -> Finding:
    before = ctx.counters()
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.freezing(run)
    again = _retransmit(ctx, Freeze(FreezeMode.TIMED, TriggerMode.HOST, LONG_FREEZE_MS), run.exchange)
    e = Expect()
    _duplicate(e, run.exchange, again)
    ctx.stop()
    started = ctx.counters().freezes_started - before.freezes_started
    e.that(started == 1, f"freezes_started +{started}, expected +1")
    return e.done(f"answered {describe_received(again.reply)}")


@_check("idempotency", "I2", "§5.4", "a retransmitted FREEZE after it ended: DUPLICATE, no second freeze")
def _retransmit_done(ctx: Context) -> Finding:
    run = ctx.freeze(SHORT_FREEZE_MS)
    ctx.freeze_done(run)
    before = ctx.counters()
    again = _retransmit(ctx, Freeze(FreezeMode.TIMED, TriggerMode.HOST, SHORT_FREEZE_MS), run.exchange)
    e = Expect()
    _duplicate(e, run.exchange, again)
    after = ctx.counters()
    e.that(after.freezes_started == before.freezes_started,
           f"freezes_started +{after.freezes_started - before.freezes_started}: it froze twice")
    reopened = [t for t in ctx.telemetry_between(again.sent.mark, ctx.client.mark()) if valve_commanded(t)]
    e.that(not reopened, "the valve was commanded open again")
    return e.done(f"answered {describe_received(again.reply)}")


@_check("idempotency", "I3", "§5.4", f"the txn cache holds at least the last {TXN_CACHE_MIN} txns")
def _cache_depth(ctx: Context) -> Finding:
    exchanges = [ctx.client.exchange(GetCounters()) for _ in range(TXN_CACHE_MIN + 1)]
    e = Expect()
    for first in (exchanges[1], exchanges[-1]):  # the oldest the cache must still hold, and the newest
        _duplicate(e, first, _retransmit(ctx, GetCounters(), first))
    return e.done(f"{TXN_CACHE_MIN + 1} requests, the oldest of the last {TXN_CACHE_MIN} replayed")


@_check("idempotency", "I4", "§5.4", "the txn cache is emptied at HELLO")
def _cache_cleared(ctx: Context) -> Finding:
    first = ctx.client.exchange(GetCounters())
    ctx.hello()
    again = _retransmit(ctx, GetCounters(), first)
    e = Expect()
    e.that(not again.reply.frame.flags & FLAG_DUPLICATE and isinstance(again.message, Counters),
           f"a pre-HELLO txn after the HELLO got {describe_received(again.reply)}: expected a fresh COUNTERS")
    return e.done(f"answered {describe_received(again.reply)}")


@_check("idempotency", "I5", "§5.4", "a HELLO is a repeat only if its txn and its nonce match")
def _hello_repeat(ctx: Context) -> Finding:
    host_nonce = nonce()
    hello = ctx.hello(host_nonce=host_nonce)
    probe = ctx.client.exchange(GetCounters())
    e = Expect()
    _duplicate(e, hello, _retransmit(ctx, Hello(PROTO_MAJOR, PROTO_MINOR, WORK_WATCHDOG_MS, host_nonce), hello))
    kept = _retransmit(ctx, GetCounters(), probe)
    e.that(bool(kept.reply.frame.flags & FLAG_DUPLICATE), "the repeated HELLO emptied the txn cache")
    fresh = ctx.hello(txn=hello.txn)  # the same txn from a new host: a new nonce
    e.that(not fresh.reply.frame.flags & FLAG_DUPLICATE, "a HELLO with the same txn but a new nonce was answered from the cache")
    cleared = _retransmit(ctx, GetCounters(), probe)
    e.that(not cleared.reply.frame.flags & FLAG_DUPLICATE, "the new host's HELLO did not empty the txn cache")
    return e.done()


# ---- STOP in every state (§6.4) ----------------------------------------------------------------------


def _stop_ok(ctx: Context, e: Expect, state: str) -> Exchange:
    x = ctx.client.exchange(Stop(0))
    if e.that(acked(x, Result.OK), f"STOP in {state} answered {describe_received(x.reply)}, expected ACK OK"):
        detail = cast(Ack, x.message).detail32
        e.that(detail == 0, f"STOP in {state}: detail32 {detail}, expected 0 (no freeze ran)")
    return x


@_check("stop", "S1", "§6.4", "STOP without a session: ACK OK, detail32 0")
def _stop_no_session(ctx: Context) -> Finding:
    ctx.leave_session()
    e = Expect()
    _stop_ok(ctx, e, "NO_SESSION")
    return e.done()


@_check("stop", "S2", "§6.4", "STOP in READY: ACK OK, detail32 0")
def _stop_ready(ctx: Context) -> Finding:
    e = Expect()
    _stop_ok(ctx, e, "READY")
    return e.done()


@_check("stop", "S3", "§6.4", "STOP in WAIT_TRIGGER cancels: ACK OK 0, FREEZE_DONE STOPPED 0 ms, READY")
def _stop_waiting(ctx: Context) -> Finding:
    ctx.needs_trigger()
    run = ctx.freeze(LONG_FREEZE_MS, trigger=TriggerMode.TRIGGER_START)
    ctx.telemetry(lambda t: t.state is DeviceState.WAIT_TRIGGER, run.exchange.sent.mark, "showing WAIT_TRIGGER")
    e = Expect()
    x = _stop_ok(ctx, e, "WAIT_TRIGGER")
    _, done = ctx.freeze_done(run, x.sent.mark)
    e.that(done.end_reason is EndReason.STOPPED and done.valve_open_ms == 0,
           f"FREEZE_DONE {done.end_reason.name} valve_open_ms {done.valve_open_ms}, expected STOPPED 0")
    state = cast(Telemetry, ctx.telemetry(lambda t: True, x.reply.index + 1, "after the STOP").message).state
    e.that(state is DeviceState.READY, f"state {state.name} after the STOP, expected READY")
    return e.done(f"FREEZE_DONE {done.end_reason.name} {done.valve_open_ms} ms")


@dataclass(frozen=True, slots=True)
class StoppedFreeze:
    """A freeze stopped mid-way, with the counters read before, while it ran and after it ended."""

    run: FreezeRun
    before: Counters
    during: Counters
    stop: Exchange
    after_stop: list[Telemetry]  # every TELEMETRY from the STOP's answer to the first after FREEZE_DONE
    done: Event
    after: Counters
    boot_count: int


def stopped_freeze(ctx: Context) -> StoppedFreeze:
    before = ctx.counters()
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.running(run)
    during = ctx.counters()
    stop = ctx.stop()
    done_at, done = ctx.freeze_done(run, stop.sent.mark)
    closing = ctx.telemetry(lambda t: True, max(done_at.index, stop.reply.index) + 1, "after the FREEZE_DONE")
    after = ctx.counters()
    return StoppedFreeze(run, before, during, stop, ctx.telemetry_between(stop.reply.index + 1, closing.index + 1), done, after,
                         ctx.session_ack.boot_count)


def _valve_open_bracket(start: Exchange, end: Exchange) -> tuple[float, float]:
    """The valve opened between FREEZE sent and answered, and closed between the ending request sent
    and answered: the device's valve-open ms must lie within these host-measured bounds."""
    return ms(end.sent.at - start.reply.at), ms(end.reply.at - start.sent.at)


def _within_bracket(e: Expect, what: str, value: int, bracket: tuple[float, float]) -> None:
    low, high = bracket
    e.that(low - CLOCK_SLACK_MS <= value <= high + CLOCK_SLACK_MS, f"{what} {value} ms, but the host saw {low:.0f}..{high:.0f} ms")


@_check("stop", "S4", "§6.4", "STOP while freezing: answered after the valve is closed, detail32 = valve-open ms")
def _stop_freezing(ctx: Context) -> Finding:
    s = ctx.scenario(stopped_freeze)
    ack = cast(Ack, s.stop.message)
    bracket = _valve_open_bracket(s.run.exchange, s.stop)
    e = Expect()
    still_open = [t for t in s.after_stop if valve_commanded(t)]
    e.that(not still_open, f"{len(still_open)} TELEMETRY after the STOP's answer show the valve commanded open")
    _within_bracket(e, "detail32", ack.detail32, bracket)
    e.that(ack.detail32 == s.done.valve_open_ms, f"detail32 {ack.detail32} but FREEZE_DONE says {s.done.valve_open_ms} ms")
    e.that(s.done.end_reason is EndReason.STOPPED, f"FREEZE_DONE end_reason {s.done.end_reason.name}, expected STOPPED")
    return e.done(f"detail32 {ack.detail32} ms, host bracket {bracket[0]:.0f}..{bracket[1]:.0f} ms")


@_check("stop", "S5", "§6.4", "STOP with a latched fault: ACK OK")
def _stop_fault(ctx: Context) -> Finding:
    ctx.latch_watchdog_trip()
    e = Expect()
    _stop_ok(ctx, e, "FAULT")
    return e.done()


# ---- END_IN (§6.3) ----------------------------------------------------------------------------------


def _end_in(ctx: Context, remaining_ms: int) -> Exchange:
    return ctx.client.exchange(EndIn(remaining_ms))


@_check("end_in", "EI1", "§6.3", "END_IN in a HALO freeze: ACK OK, detail32 = ms left, HALO_MARKED, ends COMPLETED then")
def _end_in_within_cap(ctx: Context) -> Finding:
    ctx.needs_halo()
    run = ctx.freeze(LONG_FREEZE_MS, FreezeMode.HALO)
    ctx.freezing(run)
    x = _end_in(ctx, END_IN_MS)
    e = Expect()
    e.that(acked(x, Result.OK), f"END_IN answered {describe_received(x.reply)}, expected ACK OK")
    left = cast(Ack, x.message).detail32
    e.that(abs(left - END_IN_MS) <= 1, f"detail32 {left}, expected {END_IN_MS} (well within the cap)")
    ctx.event(lambda ev: ev.code is EventCode.HALO_MARKED and ev.freeze_txn == run.txn, x.sent.mark, "HALO_MARKED")
    _, done = ctx.freeze_done(run, x.sent.mark)
    e.that(done.end_reason is EndReason.COMPLETED, f"end_reason {done.end_reason.name}, expected COMPLETED")
    e.that(abs(done.halo_to_off_ms - END_IN_MS) <= TIMER_TOLERANCE_MS,
           f"halo_to_off_ms {done.halo_to_off_ms} for END_IN {END_IN_MS} (tolerance {TIMER_TOLERANCE_MS} ms)")
    return e.done(f"detail32 {left}, halo_to_off {done.halo_to_off_ms} ms")


@_check("end_in", "EI2", "§6.3", "END_IN past the cap: detail32 = start + cap - now, ends CAP at the cap")
def _end_in_cut(ctx: Context) -> Finding:
    ctx.needs_halo()
    cap = TIMED_FREEZE_MS
    run = ctx.freeze(cap, FreezeMode.HALO)
    ctx.freezing(run)
    x = _end_in(ctx, LONG_FREEZE_MS)
    e = Expect()
    e.that(acked(x, Result.OK), f"END_IN answered {describe_received(x.reply)}, expected ACK OK")
    left = cast(Ack, x.message).detail32
    ran_low, ran_high = _valve_open_bracket(run.exchange, x)  # how long it had run when END_IN came
    _within_bracket(e, "detail32 (the cap less the time run)", left, (cap - ran_high, cap - ran_low))
    _, done = ctx.freeze_done(run, x.sent.mark)
    e.that(done.end_reason is EndReason.CAP, f"end_reason {done.end_reason.name}, expected CAP")
    e.that(abs(done.valve_open_ms - cap) <= TIMER_TOLERANCE_MS, f"valve_open_ms {done.valve_open_ms} for a cap of {cap} ms")
    return e.done(f"detail32 {left} (host: {cap - ran_high:.0f}..{cap - ran_low:.0f}), "
                  f"{done.end_reason.name} after {done.valve_open_ms} ms")


@_check("end_in", "EI3", "§6.3", "END_IN in a TIMED freeze: BAD_REQUEST")
def _end_in_timed(ctx: Context) -> Finding:
    run = ctx.freeze(LONG_FREEZE_MS)
    ctx.freezing(run)
    x = _end_in(ctx, END_IN_MS)
    ctx.stop()
    e = Expect()
    e.that(acked(x, Result.BAD_REQUEST), f"END_IN answered {describe_received(x.reply)}, expected ACK BAD_REQUEST")
    return e.done()


@_check("end_in", "EI4", "§6.3", "END_IN outside a freeze: NOT_FREEZING")
def _end_in_idle(ctx: Context) -> Finding:
    x = _end_in(ctx, END_IN_MS)
    e = Expect()
    e.that(acked(x, Result.NOT_FREEZING), f"END_IN answered {describe_received(x.reply)}, expected ACK NOT_FREEZING")
    return e.done()


@_check("end_in", "EI5", "§6.3", "a second END_IN: BAD_REQUEST, the first deadline kept")
def _end_in_twice(ctx: Context) -> Finding:
    ctx.needs_halo()
    run = ctx.freeze(LONG_FREEZE_MS, FreezeMode.HALO)
    ctx.freezing(run)
    first = _end_in(ctx, END_IN_MS)
    second = _end_in(ctx, SHORT_FREEZE_MS)
    e = Expect()
    e.that(acked(first, Result.OK), f"the first END_IN answered {describe_received(first.reply)}")
    e.that(acked(second, Result.BAD_REQUEST), f"the second END_IN answered {describe_received(second.reply)}, expected BAD_REQUEST")
    _, done = ctx.freeze_done(run, first.sent.mark)
    e.that(abs(done.halo_to_off_ms - END_IN_MS) <= TIMER_TOLERANCE_MS,
           f"halo_to_off_ms {done.halo_to_off_ms}: the first END_IN asked {END_IN_MS}")
    return e.done(f"halo_to_off {done.halo_to_off_ms} ms")


@_check("end_in", "EI6", "§6.3", "END_IN while waiting for the trigger: NOT_FREEZING")
def _end_in_waiting(ctx: Context) -> Finding:
    ctx.needs_trigger()
    run = ctx.freeze(LONG_FREEZE_MS, FreezeMode.HALO if ctx.caps & Capability.HALO_TIMING else FreezeMode.TIMED,
                     TriggerMode.TRIGGER_START)
    ctx.telemetry(lambda t: t.state is DeviceState.WAIT_TRIGGER, run.exchange.sent.mark, "showing WAIT_TRIGGER")
    x = _end_in(ctx, END_IN_MS)
    ctx.stop()
    e = Expect()
    e.that(acked(x, Result.NOT_FREEZING), f"END_IN answered {describe_received(x.reply)}, expected ACK NOT_FREEZING")
    return e.done()


# ---- events (§5.5) ------------------------------------------------------------------------------------


def _short_freeze(ctx: Context) -> tuple[FreezeRun, Event]:
    run = ctx.freeze(SHORT_FREEZE_MS)
    _, done = ctx.freeze_done(run)
    return run, done


@_check("events", "E1", "§5.5", "a 1.1 session gets BOUND_EVENT (0x87) only, with its boot_count and session id")
def _bound_events(ctx: Context) -> Finding:
    ctx.needs_1_1("a 1.0 device sends only EVENT 0x84")
    mark = ctx.session.reply.index + 1
    run, _ = _short_freeze(ctx)
    ack = ctx.session_ack
    e = Expect()
    frames = [r for r in ctx.client.log[mark:] if r.frame.msg_type in EVENT_TYPES]
    unbound = [r for r in frames if r.frame.msg_type == Event.MSG_TYPE]
    e.that(not unbound, f"{len(unbound)} EVENT 0x84 frames in a 1.1 session")
    ours = [m for r in frames if isinstance(m := r.message, BoundEvent) and m.freeze_txn == run.txn]
    ids = {m.event_id for m in ours}
    e.that(len(ids) >= EVENTS_PER_FREEZE, f"{len(ids)} bound events for the freeze, expected FREEZE_STARTED and FREEZE_DONE")
    for m in ours:
        e.that(m.boot_count == ack.boot_count, f"event {m.event_id}: boot_count {m.boot_count}, HELLO_ACK says {ack.boot_count}")
        e.that(m.session_id == ctx.session_nonce,
               f"event {m.event_id}: session_id 0x{m.session_id:08X}, the session is 0x{ctx.session_nonce:08X}")
    return e.done(f"{len(ours)} copies, boot {ack.boot_count}, session 0x{ctx.session_nonce:08X}")


@_check("events", "E2", "§5.5", "an event repeated every 100 ms until EVENT_ACK, then no more")
def _event_repeats(ctx: Context) -> Finding:
    client = ctx.client
    wanted = 4
    with client.holding_acks():
        run = ctx.freeze(SHORT_FREEZE_MS)
        first, started = ctx.event(lambda ev: ev.code is EventCode.FREEZE_STARTED and ev.freeze_txn == run.txn,
                                   run.exchange.sent.mark, "FREEZE_STARTED")

        def copies() -> list[Received]:
            return [r for r in client.log[first.index :] if (ev := event_of(r.message)) is not None and ev.event_id == started.event_id]

        window_s = (wanted - 1) * (EVENT_REPEAT_MS + EVENT_REPEAT_TOLERANCE_MS) / 1000
        client.wait(lambda r: len(copies()) >= wanted, window_s, first.index)
        seen = copies()
        acked_at = client.send(EventAck(started.event_id)).at
        late = client.wait(lambda r: r.at - acked_at > EVENT_ACK_GRACE_MS / 1000 and (ev := event_of(r.message)) is not None
                           and ev.event_id == started.event_id, 2 * EVENT_REPEAT_MS / 1000, client.mark())
    e = Expect()
    gaps = [ms(b.at - a.at) for a, b in itertools.pairwise(seen)]
    if e.that(len(seen) >= FEWEST_FOR_PERIOD,
              f"{len(seen)} cop{'y' if len(seen) == 1 else 'ies'} in {ms(window_s):.0f} ms without EVENT_ACK: not repeated"):
        median = statistics.median(gaps)
        e.that(abs(median - EVENT_REPEAT_MS) <= EVENT_REPEAT_TOLERANCE_MS,
               f"repeated every {median:.0f} ms (median), expected {EVENT_REPEAT_MS} +/- {EVENT_REPEAT_TOLERANCE_MS}")
    if late is not None:
        e.fail(f"a copy came {ms(late.at - acked_at):.0f} ms after its EVENT_ACK")
    copies_text = f"{len(seen)} cop{'y' if len(seen) == 1 else 'ies'} in {ms(seen[-1].at - seen[0].at):.0f} ms"
    return e.done(copies_text + (f", every {statistics.median(gaps):.0f} ms" if gaps else ""))


@_check("events", "E3", "§5.5", "event ids consecutive: +1 per event, never 0")
def _event_ids(ctx: Context) -> Finding:
    mark = ctx.client.mark()
    known = ctx.seen_event_ids()
    _short_freeze(ctx)
    _short_freeze(ctx)
    fresh: list[int] = []
    for _, ev in ctx.events_since(mark):
        if ev.event_id not in known and ev.event_id not in fresh:
            fresh.append(ev.event_id)
    e = Expect()
    wanted = 2 * EVENTS_PER_FREEZE
    e.that(len(fresh) >= wanted, f"{len(fresh)} new event ids for two freezes, expected {wanted}")
    e.that(0 not in fresh, "an event id 0")
    jumps = [(a, b) for a, b in itertools.pairwise(fresh) if b != next_nonzero_u16(a)]
    if jumps:
        e.fail(f"ids jump from {jumps[0][0]} to {jumps[0][1]}")
    return e.done(f"ids {', '.join(map(str, fresh))}")


@_check("events", "E4", "§5.5", "end_reason NONE in every event but FREEZE_DONE")
def _event_end_reasons(ctx: Context) -> Finding:
    _short_freeze(ctx)
    e = Expect()
    events = {ev.event_id: ev for _, ev in ctx.events_since(ctx.frames_from)}  # every event seen in this run
    for ev in events.values():
        if ev.code is EventCode.FREEZE_DONE:
            e.that(ev.end_reason is not EndReason.NONE, f"FREEZE_DONE {ev.event_id} with end_reason NONE")
        else:
            e.that(ev.end_reason is EndReason.NONE, f"{ev.code.name} {ev.event_id} with end_reason {ev.end_reason.name}")
    return e.done(f"{len(events)} events")


@_check("events", "E5", "§5.5", "unacknowledged events kept across HELLO, stamped with their own session")
def _events_outlive_session(ctx: Context) -> Finding:
    ctx.needs_1_1("1.0 events carry no session id")
    client = ctx.client
    earlier = ctx.session_nonce
    with client.holding_acks():
        _, done = _short_freeze(ctx)
        hello = ctx.hello()
        copy, _ = ctx.event(lambda ev: ev.event_id == done.event_id, hello.reply.index + 1,
                            f"copy of FREEZE_DONE {done.event_id} in the new session", 3 * EVENT_REPEAT_MS / 1000)
    e = Expect()
    m = copy.message
    session = m.session_id if isinstance(m, BoundEvent) else None
    e.that(session == earlier and isinstance(m, BoundEvent) and m.boot_count == ctx.session_ack.boot_count,
           f"redelivered as {wire_name(copy.frame.msg_type)}" + (f" of session 0x{session:08X}" if session is not None else "")
           + f", expected BOUND_EVENT of the earlier session 0x{earlier:08X}")
    return e.done(f"event {done.event_id} redelivered" + (f" with session 0x{session:08X}" if session is not None else ""))


@_check("events", "E6", "§5.5", "a 1.0 HELLO gets EVENT (0x84) only")
def _events_for_1_0(ctx: Context) -> Finding:
    ctx.needs_1_1("it sends EVENT 0x84 in every session, nothing to negotiate")
    hello = ctx.hello(minor=0)
    run, _ = _short_freeze(ctx)
    frames = [r for r in ctx.client.log[hello.reply.index + 1 :] if r.frame.msg_type in EVENT_TYPES]
    bound = [r for r in frames if r.frame.msg_type == BoundEvent.MSG_TYPE]
    e = Expect()
    e.that(not bound, f"{len(bound)} BOUND_EVENT 0x87 frames in a 1.0 session: a 1.0 host cannot decode them")
    e.that(any(isinstance(r.message, Event) and r.message.freeze_txn == run.txn for r in frames), "no 0x84 event for the freeze")
    return e.done(f"{len(frames)} event frames, {len(bound)} bound")


# ---- watchdog (§5.7) ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchdogTrip:
    """The host falls silent mid-freeze; feeds the tripped device and falls silent again; sends HELLO
    and falls silent; clears the fault and falls silent once more."""

    watchdog_ms: int
    boot_count: int
    run: FreezeRun
    before: Counters
    closed_after_ms: float  # host: last frame written -> first TELEMETRY with the valve commanded closed
    after_trip: Telemetry  # that TELEMETRY
    trip_event: Event | None
    done: Event | None
    second_trip: Event | None  # a WATCHDOG_TRIP raised after the host's HEARTBEAT and EVENT_ACK: re-armed
    after: Counters  # once that second silence is over
    rehello: HelloAck  # a HELLO while WATCHDOG_TRIP is latched
    rehello_state: DeviceState
    rearmed_by_hello: bool
    clear: Exchange
    after_clear: Telemetry
    cleared_event: Event | None
    rearmed_by_clear: bool


def watchdog_trip(ctx: Context) -> WatchdogTrip:
    client = ctx.client
    watchdog_ms = cast(HelloAck, ctx.hello(0).message).watchdog_ms
    duration = min(ctx.opening.max_freeze_ms, LONG_FREEZE_MS)
    if duration <= watchdog_ms + LINK_TOLERANCE_MS:
        raise NotApplicable(f"the device's cap ({duration} ms) ends every freeze before the watchdog ({watchdog_ms} ms) could")
    before = ctx.counters()
    known = ctx.seen_event_ids()  # each trip, once seen, joins them: the next must be a new event

    def new_trip(since: int, timeout_s: float) -> Event | None:
        _, trip = _optional_event(ctx, lambda ev: ev.code is EventCode.WATCHDOG_TRIP and ev.event_id not in known, since, timeout_s)
        if trip is not None:
            known.add(trip.event_id)
        return trip

    with client.silent():
        run = ctx.freeze(duration)
        last = client.last_sent_at
        ctx.freezing(run)
        closed = client.wait(lambda r: (t := telemetry_of(r)) is not None and not valve_commanded(t),
                             (watchdog_ms + 1000) / 1000, run.exchange.reply.index)
        if closed is None:
            raise Unmet(f"the watchdog did not trip: valve still commanded open {ms(client.clock.monotonic() - last):.0f} ms "
                        "after the host's last frame")
        trip = new_trip(run.exchange.sent.mark, 0.3)
        _, done = _optional_event(ctx, lambda ev: ev.code is EventCode.FREEZE_DONE and ev.freeze_txn == run.txn, run.exchange.sent.mark)
        feed = client.send(Heartbeat(0))  # host frames after the trip: they must not re-arm it
        for event in (trip, done):
            if event is not None:
                client.send(EventAck(event.event_id))
        second = new_trip(feed.mark, (watchdog_ms + REARM_MARGIN_MS) / 1000)
    after = ctx.counters()
    rehello = ctx.hello(0)
    rehello_state = cast(Telemetry, ctx.telemetry(lambda t: True, rehello.reply.index + 1, "after the HELLO").message).state
    with client.silent():
        rearmed_by_hello = new_trip(rehello.sent.mark, (watchdog_ms + REARM_MARGIN_MS) / 1000) is not None
    clear = client.exchange(ClearFault())
    after_clear = cast(Telemetry, ctx.telemetry(lambda t: True, clear.reply.index + 1, "after CLEAR_FAULT").message)
    _, cleared = _optional_event(ctx, lambda ev: ev.code is EventCode.FAULT_CLEARED and ev.event_id not in known, clear.sent.mark)
    with client.silent():
        rearmed_by_clear = new_trip(clear.sent.mark, (watchdog_ms + REARM_MARGIN_MS) / 1000) is not None
    return WatchdogTrip(watchdog_ms, ctx.session_ack.boot_count, run, before, ms(closed.at - last), cast(Telemetry, closed.message),
                        trip, done, second, after, cast(HelloAck, rehello.message), rehello_state, rearmed_by_hello, clear,
                        after_clear, cleared, rearmed_by_clear)


def _optional_event(
    ctx: Context, match: Callable[[Event], bool], since: int, timeout_s: float = 0.3
) -> tuple[Received | None, Event | None]:
    got = ctx.client.wait(lambda r: (ev := event_of(r.message)) is not None and match(ev), timeout_s, since)
    return (got, event_of(got.message)) if got is not None else (None, None)


@_check("watchdog", "W1", "§5.7",
        f"host silence closes the valve: device within watchdog_ms + {DEVICE_TRIP_MS}, host sees it within + {LINK_TOLERANCE_MS}")
def _watchdog_closes(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    e.that(w.closed_after_ms >= w.watchdog_ms - CLOCK_SLACK_MS,
           f"the host saw the valve closed {w.closed_after_ms:.0f} ms after its last frame: before the {w.watchdog_ms} ms watchdog ran out")
    e.that(w.closed_after_ms <= w.watchdog_ms + LINK_TOLERANCE_MS,
           f"the host saw the valve closed {w.closed_after_ms:.0f} ms after its last frame; watchdog {w.watchdog_ms} ms")
    device = "no FREEZE_DONE"
    if w.done is not None:  # the FREEZE was the last host frame: its valve-open time is the silence the device measured
        device = f"device {w.done.valve_open_ms} ms"
        e.that(w.watchdog_ms - CLOCK_SLACK_MS <= w.done.valve_open_ms <= w.watchdog_ms + DEVICE_TRIP_MS + CLOCK_SLACK_MS,
               f"the device closed after {w.done.valve_open_ms} ms of silence, expected {w.watchdog_ms}..{w.watchdog_ms + DEVICE_TRIP_MS}")
    return e.done(f"host {w.closed_after_ms:.0f} ms, {device}, watchdog {w.watchdog_ms} ms")


@_check("watchdog", "W2", "§5.7", "a trip is reported: FAULT with WATCHDOG_TRIP, its event, FREEZE_DONE WATCHDOG, watchdog_trips")
def _watchdog_reported(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    t = w.after_trip
    e.that(bool(t.fault_flags & Fault.WATCHDOG_TRIP) and t.state is DeviceState.FAULT,
           f"TELEMETRY after the trip: state {t.state.name}, fault flags 0x{t.fault_flags:04X}")
    e.that(w.trip_event is not None, "no WATCHDOG_TRIP event")
    e.that(w.done is not None and w.done.end_reason is EndReason.WATCHDOG,
           f"FREEZE_DONE end_reason {w.done.end_reason.name if w.done else 'missing'}, expected WATCHDOG")
    e.that(w.after.watchdog_trips > w.before.watchdog_trips, "watchdog_trips did not grow")  # by exactly one: W3
    return e.done(f"FREEZE_DONE after {w.done.valve_open_ms} ms" if w.done else "")


@_check("watchdog", "W3", "§5.7", "one silence, one trip: HEARTBEAT and EVENT_ACK after a trip do not re-arm it")
def _watchdog_once(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    trips = w.after.watchdog_trips - w.before.watchdog_trips
    e.that(w.second_trip is None and trips == 1,
           f"watchdog_trips +{trips} and {'a' if w.second_trip else 'no'} second WATCHDOG_TRIP event after a HEARTBEAT "
           f"and {w.watchdog_ms + REARM_MARGIN_MS} ms of silence: the trip was re-armed")
    return e.done(f"watchdog_trips +{trips}")


@_check("watchdog", "W4", "§7.2", "CLEAR_FAULT clears the trip (ACK OK, READY, FAULT_CLEARED) and re-arms the watchdog")
def _watchdog_cleared(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    e.that(acked(w.clear, Result.OK) and not cast(Ack, w.clear.message).detail16 & Fault.WATCHDOG_TRIP,
           f"CLEAR_FAULT answered {describe_received(w.clear.reply)}")
    t = w.after_clear
    e.that(t.state is DeviceState.READY and not t.fault_flags & Fault.WATCHDOG_TRIP,
           f"after CLEAR_FAULT: state {t.state.name}, fault flags 0x{t.fault_flags:04X}")
    e.that(w.cleared_event is not None and bool(w.cleared_event.fault_flags & Fault.WATCHDOG_TRIP),
           "no FAULT_CLEARED event naming WATCHDOG_TRIP")
    e.that(w.rearmed_by_clear, f"no trip in {w.watchdog_ms + REARM_MARGIN_MS} ms of silence after CLEAR_FAULT: not re-armed")
    return e.done()


@_check("watchdog", "W5", "§5.7", "no watchdog without a session: silent 3 x watchdog_ms after BYE, no trip")
def _watchdog_after_bye(ctx: Context) -> Finding:
    client = ctx.client
    watchdog_ms = cast(HelloAck, ctx.hello(0).message).watchdog_ms
    before = ctx.counters()
    with client.silent():
        bye = ctx.leave_session()
        tripped = client.wait(lambda r: (t := telemetry_of(r)) is not None and bool(t.fault_flags & Fault.WATCHDOG_TRIP),
                              3 * watchdog_ms / 1000, bye.sent.mark)
    hello = ctx.hello()
    after = ctx.counters()
    e = Expect()
    if tripped is not None:
        e.fail(f"TELEMETRY showed WATCHDOG_TRIP {ms(tripped.at - bye.sent.at):.0f} ms after BYE")
    flags = cast(HelloAck, hello.message).fault_flags
    e.that(not flags & Fault.WATCHDOG_TRIP, f"the next HELLO_ACK has fault flags 0x{flags:04X}")
    e.that(after.watchdog_trips == before.watchdog_trips, f"watchdog_trips +{after.watchdog_trips - before.watchdog_trips}")
    return e.done(f"{3 * watchdog_ms} ms silent, watchdog_trips +{after.watchdog_trips - before.watchdog_trips}")


@_check("watchdog", "W6", "§5.1", "a HELLO after a trip: WATCHDOG_TRIP stays latched, the watchdog re-armed")
def _watchdog_hello(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    e.that(bool(w.rehello.fault_flags & Fault.WATCHDOG_TRIP) and w.rehello_state is DeviceState.FAULT,
           f"after the HELLO: fault flags 0x{w.rehello.fault_flags:04X}, state {w.rehello_state.name}; expected the trip latched, FAULT")
    e.that(w.rearmed_by_hello, f"no trip in {w.watchdog_ms + REARM_MARGIN_MS} ms of silence after the HELLO: not re-armed")
    return e.done()


# ---- counters (§7.3) ----------------------------------------------------------------------------------


class _EndedFreeze(Protocol):
    """A scenario that ran a freeze to its end: the freeze, the boot it ran in, the counters after."""

    @property
    def run(self) -> FreezeRun: ...
    @property
    def boot_count(self) -> int: ...
    @property
    def after(self) -> Counters: ...


def _last_freeze(e: Expect, ended: _EndedFreeze, reason: EndReason, valve_open_ms: int) -> None:
    c, run, boot_count = ended.after, ended.run, ended.boot_count
    e.that(c.last_txn == run.txn, f"last_txn {c.last_txn}, the freeze was txn {run.txn}")
    e.that(c.last_requested_ms == run.duration_ms, f"last_requested_ms {c.last_requested_ms}, asked {run.duration_ms}")
    e.that(c.last_valve_open_ms == valve_open_ms, f"last_valve_open_ms {c.last_valve_open_ms}, FREEZE_DONE says {valve_open_ms}")
    e.that(c.last_end_reason is reason, f"last_end_reason {c.last_end_reason.name}, expected {reason.name}")
    e.that(c.last_boot_count == boot_count == c.boot_count,
           f"last_boot_count {c.last_boot_count}, boot {c.boot_count}, HELLO_ACK {boot_count}")


@_check("counters", "CT1", "§7.3", "while a freeze runs: last_txn is it, last_end_reason NONE, valve-open so far")
def _counters_running(ctx: Context) -> Finding:
    s = ctx.scenario(stopped_freeze)
    e = Expect()
    c = s.during
    e.that(c.last_txn == s.run.txn and c.last_end_reason is EndReason.NONE,
           f"last_txn {c.last_txn} last_end_reason {c.last_end_reason.name}, expected txn {s.run.txn} NONE")
    e.that(0 < c.last_valve_open_ms <= s.done.valve_open_ms,
           f"last_valve_open_ms {c.last_valve_open_ms} while running, {s.done.valve_open_ms} in the end: expected the time so far")
    return e.done(f"last_valve_open_ms {c.last_valve_open_ms} so far")


@_check("counters", "CT2", "§7.3", "after STOP: the last freeze recorded STOPPED; freezes_started, total valve-open updated")
def _counters_stopped(ctx: Context) -> Finding:
    s = ctx.scenario(stopped_freeze)
    e = Expect()
    _last_freeze(e, s, EndReason.STOPPED, s.done.valve_open_ms)
    started = s.after.freezes_started - s.before.freezes_started
    e.that(started == 1, f"freezes_started +{started}")
    added = s.after.total_valve_open_ms - s.before.total_valve_open_ms
    e.that(abs(added - s.done.valve_open_ms) <= 1, f"total_valve_open_ms +{added}, the freeze was {s.done.valve_open_ms} ms")
    return e.done(f"{s.after.last_end_reason.name} {s.after.last_valve_open_ms} ms")


@_check("counters", "CT3", "§7.3", "after a watchdog trip: the last freeze recorded WATCHDOG")
def _counters_watchdog(ctx: Context) -> Finding:
    w = ctx.scenario(watchdog_trip)
    e = Expect()
    if e.that(w.done is not None, "no FREEZE_DONE for the freeze the watchdog ended"):
        assert w.done is not None
        _last_freeze(e, w, EndReason.WATCHDOG, w.done.valve_open_ms)
    return e.done(f"{w.after.last_end_reason.name} {w.after.last_valve_open_ms} ms")


# ---- telemetry (§6.5) ---------------------------------------------------------------------------------


def _median_period(ctx: Context, match: Callable[[Telemetry], bool], periods: int, what: str, timeout_s: float) -> float:
    """Median period of the next ``periods`` + 1 matching TELEMETRY frames, on the device's clock."""
    client = ctx.client
    mark = client.mark()

    def matching() -> list[Telemetry]:
        return [t for r in client.log[mark:] if (t := telemetry_of(r)) is not None and match(t)]

    client.wait(lambda r: len(matching()) > periods, timeout_s, mark)
    frames = matching()[: periods + 1]
    if len(frames) < FEWEST_FOR_PERIOD:
        raise Unmet(f"{len(frames)} TELEMETRY {what} in {timeout_s * 1000:.0f} ms")
    return statistics.median(uptime_periods(frames))


def _period(median: float, expected: int, tolerance: int) -> Finding:
    e = Expect()
    e.that(abs(median - expected) <= tolerance, f"every {median:.0f} ms, expected {expected} +/- {tolerance}")
    return e.done(f"median {median:.0f} ms, device clock")


def _at_once(delays: dict[str, float], bound_ms: float = AT_ONCE_MS) -> Finding:
    e = Expect()
    for change, delay in delays.items():
        e.that(delay <= bound_ms, f"{change} reported {delay:.0f} ms late")
    return e.done(", ".join(f"{change} {delay:.0f} ms" for change, delay in delays.items()))


@_check("telemetry", "T1", "§6.5", "every 100 ms when idle in a session")
def _telemetry_idle(ctx: Context) -> Finding:
    return _period(_median_period(ctx, lambda t: t.state is DeviceState.READY, SAMPLES, "in READY", 1.0), IDLE_PERIOD_MS, IDLE_TOLERANCE_MS)


@_check("telemetry", "T2", "§6.5", f"entering and leaving FREEZING reported at once (<= {AT_ONCE_MS} ms after the answer)")
def _telemetry_at_once(ctx: Context) -> Finding:
    ctx.next_telemetry()  # so the request lands right after a periodic frame: a late report shows its whole period
    run = ctx.freeze(LONG_FREEZE_MS)
    entered = ctx.freezing(run)
    ctx.next_telemetry()
    stop = ctx.stop()
    left = ctx.telemetry(lambda t: t.state is not DeviceState.FREEZING, stop.reply.index + 1, "after the STOP")
    return _at_once({"FREEZING": max(0.0, ms(entered.at - run.exchange.reply.at)), "freeze end": max(0.0, ms(left.at - stop.reply.at))})


@_check("telemetry", "T3", "§6.5", "every 20 ms (50 Hz) while freezing")
def _telemetry_freezing(ctx: Context) -> Finding:
    run = ctx.freeze(LONG_FREEZE_MS)
    median = _median_period(ctx, lambda t: t.state is DeviceState.FREEZING and t.freeze_txn == run.txn, 2 * SAMPLES,
                            "while FREEZING", 1.0)
    ctx.stop()
    return _period(median, FAST_PERIOD_MS, FAST_TOLERANCE_MS)


@_check("telemetry", "T4", "§6.5", "every 100 ms without a session")
def _telemetry_no_session(ctx: Context) -> Finding:
    ctx.leave_session()
    median = _median_period(ctx, lambda t: t.state is DeviceState.NO_SESSION, SAMPLES, "in NO_SESSION", 1.0)
    return _period(median, IDLE_PERIOD_MS, IDLE_TOLERANCE_MS)


@_check("telemetry", "T5", "§6.5", f"entering WAIT_TRIGGER and FAULT reported at once (<= {AT_ONCE_MS} ms)")
def _telemetry_other_changes(ctx: Context) -> Finding:
    delays: dict[str, float] = {}
    if ctx.caps & TRIGGERS:
        ctx.next_telemetry()
        run = ctx.freeze(LONG_FREEZE_MS, trigger=TriggerMode.TRIGGER_START)
        waiting = ctx.telemetry(lambda t: t.state is DeviceState.WAIT_TRIGGER, run.exchange.reply.index + 1, "showing WAIT_TRIGGER")
        delays["WAIT_TRIGGER"] = max(0.0, ms(waiting.at - run.exchange.reply.at))
        ctx.stop()
    ctx.next_telemetry()  # the silence starts right after a periodic frame, so a trip lands mid-period
    trip = ctx.latch_watchdog_trip()
    if trip.report_delay_ms is None:
        raise Unmet("no WATCHDOG_TRIP event to time the FAULT report against")
    delays["FAULT (device clock)"] = trip.report_delay_ms
    return _at_once(delays)


# ---- calibration (§7.5) -------------------------------------------------------------------------------

_CAL_RANGES: dict[str, tuple[int, int]] = {  # what CAL_WRITE accepts, per field
    "timer_ppm": (-10_000, 10_000), "flow_mg_per_s": (0, 0xFFFFFFFF), "tip_offset_cdeg": (-32_768, 32_767),
    "tip_gain_ppm": (1, 1_999_999), "tissue_offset_cdeg": (-32_768, 32_767), "tissue_gain_ppm": (1, 1_999_999),
    "valve_open_latency_ms": (0, 0xFFFF), "valve_close_latency_ms": (0, 0xFFFF), "calibrated_on_day": (0, 0xFFFFFFFF),
    "due_on_day": (0, 0xFFFFFFFF),
}


def _cal_write(cal: CalData, **changes: int) -> CalWrite:
    return CalWrite(*dataclasses.astuple(dataclasses.replace(cal, **changes)))


def _as_data(cal: CalWrite) -> CalData:
    return CalData(*dataclasses.astuple(cal))


def _nudged(cal: CalData) -> CalWrite:
    """Every field one step from the device's own, inside its range: a write that must read back."""
    changes = {}
    for name, (low, high) in _CAL_RANGES.items():
        value = getattr(cal, name)
        changes[name] = value + 1 if value < high else max(low, value - 1)
    return _cal_write(cal, **changes)


@_check("calibration", "CL1", "§7.5", "a good CAL_WRITE: ACK OK, CAL_READ returns every field")
def _cal_round_trip(ctx: Context) -> Finding:
    wanted = _nudged(ctx.calibration)
    try:
        x = ctx.client.exchange(wanted)
        got = ctx.read_calibration()
    finally:
        ctx.restore_calibration()
    e = Expect()
    e.that(acked(x, Result.OK), f"CAL_WRITE answered {describe_received(x.reply)}, expected ACK OK")
    e.that(got == _as_data(wanted), f"CAL_READ returned {got}, written {wanted}")
    return e.done("every field changed by one, read back, restored")


@_check("calibration", "CL2", "§7.5", "out-of-range gains or timer_ppm: BAD_REQUEST, the calibration unchanged")
def _cal_refused(ctx: Context) -> Finding:
    cal = ctx.calibration
    bad = {"tip_gain_ppm": (0, 2_000_000), "tissue_gain_ppm": (0, 2_000_000), "timer_ppm": (-10_001, 10_001)}
    e = Expect()
    try:
        for name, values in bad.items():
            for value in values:
                x = ctx.client.exchange(_cal_write(cal, **{name: value}))
                e.that(acked(x, Result.BAD_REQUEST), f"{name} {value} answered {describe_received(x.reply)}, expected BAD_REQUEST")
        e.that(ctx.read_calibration() == cal, "a refused CAL_WRITE changed the calibration")
    finally:
        ctx.restore_calibration()
    return e.done("gains 0 and 2000000, timer_ppm +/-10001 refused" if not e.problems else "")


@_check("calibration", "CL3", "§7.5", "boundary values accepted: gains 1 and 1999999 ppm, timer_ppm +/-10000")
def _cal_boundaries(ctx: Context) -> Finding:
    cal = ctx.calibration
    good = {"tip_gain_ppm": (1, 1_999_999), "tissue_gain_ppm": (1, 1_999_999), "timer_ppm": (-10_000, 10_000)}
    e = Expect()
    try:
        for name, values in good.items():
            for value in values:
                wanted = _cal_write(cal, **{name: value})
                x = ctx.client.exchange(wanted)
                if e.that(acked(x, Result.OK), f"{name} {value} answered {describe_received(x.reply)}, expected ACK OK"):
                    e.that(ctx.read_calibration() == _as_data(wanted), f"{name} {value} did not read back")
    finally:
        ctx.restore_calibration()
    return e.done("accepted and read back" if not e.problems else "")


def _under_way(run: FreezeRun) -> Callable[[Telemetry], bool]:
    """TELEMETRY showing this freeze running or waiting for its trigger."""
    return lambda t: t.freeze_txn == run.txn and t.state in (DeviceState.FREEZING, DeviceState.WAIT_TRIGGER)


@_check("calibration", "CL4", "§7.5", "CAL_WRITE during a freeze or waiting for the trigger: BUSY, unchanged")
def _cal_busy(ctx: Context) -> Finding:
    e = Expect()
    modes = [TriggerMode.HOST] + ([TriggerMode.TRIGGER_START] if ctx.caps & TRIGGERS else [])
    try:
        for trigger in modes:
            run = ctx.freeze(LONG_FREEZE_MS, trigger=trigger)
            ctx.telemetry(_under_way(run), run.exchange.sent.mark, "showing the freeze")
            x = ctx.client.exchange(_nudged(ctx.calibration))
            ctx.freeze_done(run, ctx.stop().sent.mark)
            state = "FREEZING" if trigger is TriggerMode.HOST else "WAIT_TRIGGER"
            e.that(acked(x, Result.BUSY), f"CAL_WRITE in {state} answered {describe_received(x.reply)}, expected ACK BUSY")
        e.that(ctx.read_calibration() == ctx.calibration, "the calibration changed")
    finally:
        ctx.restore_calibration()
    return e.done(" and ".join("FREEZING" if m is TriggerMode.HOST else "WAIT_TRIGGER" for m in modes))


@_check("calibration", "CL5", "§6.2", "stored valve latencies and flow do not alter the device's timing")
def _cal_latencies_unused(ctx: Context) -> Finding:
    e = Expect()
    try:
        x = ctx.client.exchange(_cal_write(ctx.calibration, valve_open_latency_ms=STORED_LATENCY_MS,
                                           valve_close_latency_ms=STORED_LATENCY_MS, flow_mg_per_s=1))
        if not acked(x, Result.OK):
            raise Unmet(f"CAL_WRITE of latencies answered {describe_received(x.reply)}")
        _, done = ctx.freeze_done(ctx.freeze(TIMED_FREEZE_MS))
    finally:
        ctx.restore_calibration()
    e.that(abs(done.valve_open_ms - TIMED_FREEZE_MS) <= TIMER_TOLERANCE_MS,
           f"valve_open_ms {done.valve_open_ms} for {TIMED_FREEZE_MS} ms with {STORED_LATENCY_MS} ms latencies stored")
    return e.done(f"{done.valve_open_ms} ms for {TIMED_FREEZE_MS} with {STORED_LATENCY_MS} ms latencies stored")


# ---- ending a session: BYE (§5.2) -----------------------------------------------------------------------


@_check("session", "SE1", "§5.2", "BYE ends the session: ACK OK detail32 0, then NO_SESSION")
def _bye(ctx: Context) -> Finding:
    ctx.needs_1_1("BYE is a 1.1 message")
    x = ctx.client.exchange(Bye(0))
    e = Expect()
    if e.that(acked(x, Result.OK), f"BYE answered {describe_received(x.reply)}, expected ACK OK"):
        ctx.client.watchdog_ms = None
        e.that(cast(Ack, x.message).detail32 == 0, f"detail32 {cast(Ack, x.message).detail32} with nothing running")
    probe = ctx.client.exchange(GetCounters())
    e.that(acked(probe, Result.NO_SESSION), f"GET_COUNTERS after BYE answered {describe_received(probe.reply)}, expected NO_SESSION")
    state = cast(Telemetry, ctx.telemetry(lambda t: True, probe.reply.index + 1, "after BYE").message).state
    e.that(state is DeviceState.NO_SESSION, f"TELEMETRY state {state.name} after BYE")
    return e.done()


@_check("session", "SE2", "§5.2",
        "BYE during a freeze: valve closed first, detail32 = valve-open ms; its FREEZE_DONE waits for the next session")
def _bye_freezing(ctx: Context) -> Finding:
    ctx.needs_1_1("BYE is a 1.1 message")
    client = ctx.client
    earlier = ctx.session_nonce
    e = Expect()
    with client.holding_acks():
        run = ctx.freeze(LONG_FREEZE_MS)
        ctx.running(run)
        x = client.exchange(Bye(0))
        if not e.that(acked(x, Result.OK), f"BYE answered {describe_received(x.reply)}, expected ACK OK"):
            return e.done()
        client.watchdog_ms = None
        detail = cast(Ack, x.message).detail32
        t = cast(Telemetry, ctx.telemetry(lambda t: True, x.reply.index + 1, "after BYE").message)
        e.that(not valve_commanded(t), "the first TELEMETRY after BYE's answer shows the valve commanded open")
        _within_bracket(e, "detail32", detail, _valve_open_bracket(run.exchange, x))
        sent = client.wait(lambda r: event_of(r.message) is not None, NO_SESSION_QUIET_MS / 1000, x.reply.index + 1)
        if sent is not None:
            e.fail(f"{describe_received(sent)} sent {ms(sent.at - x.reply.at):.0f} ms after BYE, with no session")
        hello = ctx.hello()
        done_at, done = ctx.freeze_done(run, x.sent.mark)
    e.that(done_at.index > hello.reply.index or done_at.index < x.reply.index, "FREEZE_DONE sent while no session existed")
    e.that(done.end_reason is EndReason.STOPPED and done.valve_open_ms == detail,
           f"FREEZE_DONE {done.end_reason.name} {done.valve_open_ms} ms, expected STOPPED {detail} ms")
    if isinstance(done_at.message, BoundEvent):
        e.that(done_at.message.session_id == earlier,
               f"FREEZE_DONE session_id 0x{done_at.message.session_id:08X}, BYE closed 0x{earlier:08X}")
    return e.done(f"detail32 {detail} ms, FREEZE_DONE {done.end_reason.name} in the next session")


@_check("session", "SE3", "§5.2", "BYE without a session: ACK OK detail32 0")
def _bye_no_session(ctx: Context) -> Finding:
    ctx.needs_1_1("BYE is a 1.1 message")
    ctx.leave_session()
    x = ctx.client.exchange(Bye(0))
    e = Expect()
    e.that(acked(x, Result.OK) and cast(Ack, x.message).detail32 == 0,
           f"BYE without a session answered {describe_received(x.reply)}, expected ACK OK detail32 0")
    return e.done()


@_check("session", "SE4", "§5.4", "BYE empties the txn cache; a repeated BYE gets its answer with DUPLICATE")
def _bye_cache(ctx: Context) -> Finding:
    ctx.needs_1_1("BYE is a 1.1 message")
    probe = ctx.client.exchange(GetCounters())
    bye = ctx.leave_session()
    e = Expect()
    _duplicate(e, bye, _retransmit(ctx, Bye(0), bye))
    again = _retransmit(ctx, GetCounters(), probe)
    e.that(acked(again, Result.NO_SESSION) and not again.reply.frame.flags & FLAG_DUPLICATE,
           f"a pre-BYE txn after BYE got {describe_received(again.reply)}, expected a fresh ACK NO_SESSION")
    return e.done()


# ---- running the kit ---------------------------------------------------------------------------------


def select_sections(only: set[str] | None) -> tuple[str, ...]:
    """The sections to run, in the kit's order; unknown names are refused with the allowed ones."""
    if only is None:
        return SECTIONS
    unknown = sorted(only - set(SECTIONS))
    if unknown or not only:
        named = f"unknown section{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}" if unknown else "no section named"
        raise UnknownSection(f"{named}; allowed: {', '.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in only)


def run_conformance(url: str, only: set[str] | None = None, clock: Clock = SYSTEM_CLOCK) -> Report:
    """Open the port, run the selected sections' checks in order, leave the device as found."""
    sections = select_sections(only)
    started = time.monotonic()
    transport = SerialTransport(url)
    try:
        client = RawClient(transport, clock)
        ctx, notes = _open(client)
        checks: list[Check] = []
        try:
            for section in sections:
                for spec in (s for s in CHECKS if s.section == section):
                    ctx.tidy()
                    checks.append(_run_check(spec, ctx))
        finally:
            left = _leave(ctx)
        return Report(_identity(client.port, ctx.opening), tuple(checks), tuple(notes), tuple(left), time.monotonic() - started)
    finally:
        transport.close()


def _run_check(spec: CheckSpec, ctx: Context) -> Check:
    try:
        finding = spec.run(ctx)
    except Unmet as exc:
        return Check(spec.id, spec.section, spec.protocol, spec.title, Verdict.FAIL, "", str(exc))
    except NotApplicable as exc:
        return Check(spec.id, spec.section, spec.protocol, spec.title, Verdict.NOT_APPLICABLE, "", str(exc))
    verdict = Verdict.FAIL if finding.problems else Verdict.PASS
    return Check(spec.id, spec.section, spec.protocol, spec.title, verdict, finding.measured, "; ".join(finding.problems))


def _open(client: RawClient) -> tuple[Context, list[str]]:
    """The kit's own handshake: a device it can test, and what it found there (to put back)."""
    port = client.port
    host_nonce = nonce()
    sent = client.send(Hello(PROTO_MAJOR, PROTO_MINOR, WORK_WATCHDOG_MS, host_nonce), txn=client.new_txn())
    got = client.reply(sent, 2 * REPLY_TIMEOUT_S)
    if got is None or not isinstance(got.message, HelloAck):
        raise ConformanceError(port, f"no HELLO_ACK within {2 * REPLY_TIMEOUT_S:g} s ({describe_received(got)})",
                               "Check that the device is switched on and that this is its port")
    ack = got.message
    if ack.proto_major != PROTO_MAJOR:
        raise ConformanceError(port, f"the device speaks protocol {ack.proto_major}.{ack.proto_minor}",
                               f"This kit checks protocol {PROTO_MAJOR}.x devices")
    if ack.host_nonce != host_nonce:
        raise ConformanceError(port, "the HELLO_ACK does not echo the kit's nonce", "Check that this is the device's port")
    client.watchdog_ms = ack.watchdog_ms
    foreign = ack.fault_flags & LATCHING_FAULTS & ~Fault.WATCHDOG_TRIP
    if foreign:
        raise ConformanceError(port, f"the device has latched faults 0x{foreign:04X}", "Fix their cause and clear them, then run the kit")
    if ack.fault_flags & Fault.CARTRIDGE_EMPTY:
        raise ConformanceError(port, "the cryogen supply is empty: every FREEZE would be refused", "Fit a full cartridge or dewar")
    notes = []
    try:
        if ack.fault_flags & Fault.WATCHDOG_TRIP:  # an earlier host left without BYE: not the device's fault, nor the kit's
            if not acked(client.exchange(ClearFault()), Result.OK):
                raise Unmet("CLEAR_FAULT did not clear the WATCHDOG_TRIP found latched")
            notes.append("cleared a WATCHDOG_TRIP latched before the kit connected")
        calibration = client.exchange(CalRead()).message
        if not isinstance(calibration, CalData):
            raise Unmet(f"CAL_READ answered {describe(calibration)}")
    except Unmet as exc:
        raise ConformanceError(port, f"the device would not start a test session ({exc})", "Check the device, then retry") from None
    return Context(client, Exchange(sent, got), calibration), notes


def _leave(ctx: Context) -> list[str]:
    """Valve closed, calibration as found, no trip of the kit's latched, events acknowledged, BYE.
    Returns what could not be done: the report counts it as a failure."""
    problems = []
    client = ctx.client
    client.keepalive = client.auto_ack = True
    try:
        ctx.stop()
        if cast(HelloAck, ctx.hello().message).fault_flags & Fault.WATCHDOG_TRIP:
            clear = client.exchange(ClearFault())
            if not acked(clear, Result.OK):
                problems.append(f"the kit's watchdog trip stays latched: CLEAR_FAULT answered {describe_received(clear.reply)}")
        ctx.restore_calibration()
        deadline = client.clock.monotonic() + EVENT_TIMEOUT_S  # acknowledge what the checks left unacknowledged
        while client.wait(lambda r: event_of(r.message) is not None, 1.5 * EVENT_REPEAT_MS / 1000, client.mark()) is not None:
            if client.clock.monotonic() > deadline:
                problems.append("events kept coming after EVENT_ACK")
                break
        if ctx.opening.proto_minor >= 1:  # a 1.0 device has no BYE: it trips its watchdog once the kit is gone
            bye = client.exchange(Bye(0))
            if not acked(bye, Result.OK):
                problems.append(f"BYE answered {describe_received(bye.reply)}: the device will trip its watchdog now the kit is gone")
        last = ctx.next_telemetry()
        if valve_commanded(cast(Telemetry, last.message)):
            problems.append("the valve is commanded open as the kit leaves")
    except (Unmet, BridgeError) as exc:
        problems.append(f"could not leave the device as found: {exc}")
    return problems


def _identity(port: str, ack: HelloAck) -> dict[str, object]:
    return {
        "port": port, "serial": ack.serial, "kind": ack.kind.name, "cryogen": ack.cryogen.name,
        "firmware": f"{ack.fw_major}.{ack.fw_minor}.{ack.fw_patch}", "protocol": f"{ack.proto_major}.{ack.proto_minor}",
        "boot_count": ack.boot_count, "max_freeze_ms": ack.max_freeze_ms,
        "capabilities": [c.name for c in Capability if c & ack.capabilities and c.name],
    }
