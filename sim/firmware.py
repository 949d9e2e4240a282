"""The device side of docs/protocol.md, written from the document: a state machine with no I/O.

It shares the codec and message table with the host (firmware_bridge.codec / .messages), not the
host's session logic. It is strict: a malformed or out-of-range request gets a refusal code, so a
host bug shows up in tests instead of being papered over.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

from firmware_bridge.codec import FLAG_DUPLICATE, Frame, encode_frame
from firmware_bridge.messages import (
    LATCHING_FAULTS,
    NOT_AVAILABLE_TEMP,
    NOT_AVAILABLE_U16,
    NOT_AVAILABLE_U32,
    PROTO_MAJOR,
    PROTO_MINOR,
    REGISTRY,
    SCHEMA_HASH,
    Ack,
    BoundEvent,
    Bye,
    CalData,
    CalRead,
    CalWrite,
    Capability,
    ClearFault,
    Counters,
    Cryogen,
    DecodeError,
    DeviceKind,
    DeviceState,
    EndIn,
    EndReason,
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
from firmware_bridge.units import DEFAULT_WATCHDOG_MS, MAX_SCALED_WATCHDOG_MS
from sim.model import CRYOGEN_TIP_C, TISSUE_FRACTION_OF_TIP, DeviceModel, SensorFault

MIN_WATCHDOG_MS = 100
MAX_WATCHDOG_MS = MAX_SCALED_WATCHDOG_MS  # every watchdog a virtual-time host asks for; a real device may cap lower
TXN_CACHE_SIZE = 32
MAX_PENDING_EVENTS = 32
EVENT_RESEND_MS = 100
TELEMETRY_FREEZING_MS = 20  # 50 Hz while the valve may be open
TELEMETRY_IDLE_MS = 100  # 10 Hz otherwise
NO_FLOW_DETECT_MS = 300  # valve sensed open, pressure not falling, for this long: nozzle blocked
STUCK_DETECT_MS = 200  # valve position sensor disagrees with the command for this long
CARTRIDGE_LOW_FRACTION = 0.15
CAL_GAIN_LIMIT_PPM = 2_000_000  # CAL_WRITE: a gain must be in 1..1 999 999 ppm (§7.5)
CAL_TIMER_LIMIT_PPM = 10_000  # CAL_WRITE: |timer_ppm| at most this
TRIGGER_INPUTS = Capability.HAND_TRIGGER | Capability.FOOT_SWITCH  # what a trigger-started freeze needs
SENSOR_FAULTS = {SensorFault.OPEN: Fault.SENSOR_OPEN, SensorFault.SHORT: Fault.SENSOR_SHORT}

# Deliberately broken devices, to prove the conformance kit fails what it must (docs/conformance.md).
# Each is one small hook below, marked "defect"; a device built from the document has none of them.
DEFECTS: dict[str, str] = {
    "no-watchdog": "the host-silence watchdog never trips",
    "rearm-watchdog": "any host frame re-arms a tripped watchdog (the 1.0 rule): two trips per silence",
    "double-freeze": "a retransmitted FREEZE is executed again instead of answered from the txn cache",
    "slow-telemetry": "telemetry stays at 100 ms while freezing and a state change waits for the next slot",
    "stop-before-close": "STOP mid-freeze is answered (detail32 0) before the valve is commanded closed",
    "no-bye": "BYE is an unknown type, as in 1.0: the session, and its watchdog, outlive the host",
    "events-not-repeated": "an event is sent once, never repeated until acknowledged",
}
DEFECT_STOP_LAG_MS = 50  # stop-before-close: how long after its answer the valve is commanded closed

# Lying devices: the wire stays valid (framing, CRC, layouts, every protocol rule), only the figures
# are false, so the host's plausibility checks (controller/procedure/plausibility.py) must catch them.
# Each is one small hook below, marked "lie"; each lasts until cleared (Firmware.stop_lying).
LIES: dict[str, str] = {
    "tissue-cold": "from the moment a freeze starts, the tissue thermocouple reads -327.67 C (raw -32767 cdeg)",
    "freeze-ms-huge": "every freeze that ends reports valve_open_ms 4 294 967 294 (FREEZE_DONE, COUNTERS, STOP's answer)",
    "freeze-ms-zero": "every freeze that ends reports valve_open_ms 0 with end_reason COMPLETED, however long and however it ended",
    "event-flood": "the last event raised is raised again and again with new event ids, thousands per second",
    "temperature-jump": "while the valve is commanded open, tip and tissue read their frozen values at once (no cooling curve)",
}
LIE_TISSUE_CDEG = -32_767  # the most negative reading an i16 carries that is not "not available" (0x7FFF)
LIE_FREEZE_MS = 0xFFFF_FFFE  # one below the u32 "not available" sentinel: a figure, and an absurd one
FLOOD_EVENTS_PER_S = 5000  # event-flood: new events per second of device time, as fast as a pty takes them
FLOOD_MAX_PER_TICK = 100  # event-flood: at most this many per tick, so a late tick does not raise a burst of thousands
FLOOD_TICK_MS = 1.0  # event-flood: the device thread wakes this often while flooding

# Requests each state accepts; the rest are refused with the code given.
ACCEPTS: dict[DeviceState, frozenset[type[Message]]] = {
    DeviceState.NO_SESSION: frozenset({Hello, Stop, Bye}),
    DeviceState.READY: frozenset({Hello, Freeze, EndIn, Stop, GetCounters, CalRead, CalWrite, ClearFault, Bye}),
    DeviceState.WAIT_TRIGGER: frozenset({Hello, Freeze, EndIn, Stop, GetCounters, CalRead, Bye}),
    DeviceState.FREEZING: frozenset({Hello, Freeze, EndIn, Stop, GetCounters, CalRead, Bye}),
    DeviceState.FAULT: frozenset({Hello, Freeze, EndIn, Stop, GetCounters, CalRead, CalWrite, ClearFault, Bye}),
}
REFUSAL: dict[DeviceState, Result] = {
    DeviceState.NO_SESSION: Result.NO_SESSION,
    DeviceState.READY: Result.BAD_REQUEST,
    DeviceState.WAIT_TRIGGER: Result.BUSY,
    DeviceState.FREEZING: Result.BUSY,
    DeviceState.FAULT: Result.FAULT_LATCHED,
}


@dataclass(frozen=True, slots=True)
class Identity:
    kind: DeviceKind = DeviceKind.SPRAY
    cryogen: Cryogen = Cryogen.N2O
    serial: str = "SIM-0001"
    firmware: tuple[int, int, int] = (1, 0, 0)
    max_freeze_ms: int = 60_000
    capabilities: Capability = Capability.PRESSURE_SENSOR | Capability.HAND_TRIGGER | Capability.HALO_TIMING | Capability.DEAD_MAN
    proto_major: int = PROTO_MAJOR  # tests override these to play an incompatible device
    proto_minor: int = PROTO_MINOR
    schema_hash: int = SCHEMA_HASH


@dataclass(slots=True)
class LastFreeze:
    txn: int = 0
    requested_ms: int = 0
    valve_open_ms: int = 0
    halo_to_off_ms: int = NOT_AVAILABLE_U32
    end_reason: EndReason = EndReason.NONE
    boot_count: int = 0


@dataclass
class NonVolatile:
    """Survives reboots: boot counter, calibration, the record of the last freeze."""

    boot_count: int = 0
    calibration: CalData = field(default_factory=lambda: CalData(0, 0, 0, 1_000_000, 0, 1_000_000, 0, 0, 0, 0))
    last_freeze: LastFreeze = field(default_factory=LastFreeze)


@dataclass(slots=True)
class _Freeze:
    txn: int
    mode: FreezeMode
    trigger: TriggerMode
    requested_ms: int
    started_ms: float | None = None  # device clock, when the valve was commanded open
    deadline_ms: float | None = None
    halo_marked_ms: float | None = None
    capped: bool = False  # END_IN asked for more than the cap allowed
    released_since_accept: bool = False  # §6.1: only a press after acceptance opens the valve


@dataclass(slots=True)
class _PendingEvent:
    event: BoundEvent  # sent as a 1.0 EVENT (its first nine fields) in a 1.0 session
    last_sent_ms: float


class Firmware:
    def __init__(self, identity: Identity, model: DeviceModel, nvm: NonVolatile) -> None:
        self.identity = identity
        self.model = model
        self.nvm = nvm
        self.silent = False  # fault: decode nothing, answer nothing, send nothing
        self.trigger_held = False  # the hand trigger / foot switch, pressed by the simulator's API
        self.min_telemetry_period_ms = 0.0  # virtual time: keep the wall-time frame rate sane
        self.defects: frozenset[str] = frozenset()  # names from DEFECTS
        self.lies: frozenset[str] = frozenset()  # names from LIES (start_lying, stop_lying)
        self._tissue_cold = False  # lie tissue-cold: a freeze started since the lie began
        self._flood_from_ms: float | None = None  # lie event-flood: device time the next flood events are counted from
        self._last_event: BoundEvent | None = None  # the last event raised this boot (what event-flood repeats)
        self.host_frames = 0
        self.session_id = 0  # host_nonce of the open session; 0 when none
        self.session_minor = 0  # the minor version both ends speak in this session

    # ---- lifecycle -------------------------------------------------------------------------------

    def power_on(self, device_ms: float, true_s: float) -> None:
        """Power-on or reset: valve closed, session gone, the cut freeze (if any) recorded."""
        if self.nvm.last_freeze.end_reason is EndReason.NONE and self.nvm.last_freeze.txn:
            self.nvm.last_freeze.end_reason = EndReason.RESET
        self.model.command_valve(False, true_s)
        self.nvm.boot_count += 1
        self.boot_ms = device_ms
        self.state = DeviceState.NO_SESSION
        self.faults = Fault(0)
        self.freeze: _Freeze | None = None
        self.watchdog_ms = DEFAULT_WATCHDOG_MS
        self.last_host_ms = device_ms
        self.watchdog_tripped = False
        self.session_id = 0
        self.session_minor = 0
        self.txn_cache: OrderedDict[int, Message] = OrderedDict()
        self.pending_events: OrderedDict[int, _PendingEvent] = OrderedDict()
        self.next_event_id = 1
        self.seq = 0
        self.total_valve_open_ms = 0.0
        self.freezes_started = 0
        self.watchdog_trips = 0
        self.next_telemetry_ms = device_ms
        self._late_stop: tuple[float, _Freeze] | None = None  # defect stop-before-close: when an answered STOP closes which freeze
        self._mismatch_since_ms: float | None = None
        self._no_flow_since_ms: float | None = None
        self._low_reported = False
        self._last_event = None
        self._flood_from_ms = None

    # ---- lies ------------------------------------------------------------------------------------

    def start_lying(self, lie: str) -> None:
        """Begin one of LIES; it lasts until stop_lying()."""
        if lie not in LIES:
            raise ValueError(f"lie {lie!r}: allowed values are {', '.join(sorted(LIES))}")
        self.lies |= {lie}

    def stop_lying(self) -> None:
        """Every lie ends: the figures are true again from now on."""
        self.lies = frozenset()
        self._tissue_cold = False
        self._flood_from_ms = None

    # ---- incoming --------------------------------------------------------------------------------

    def on_frame(self, frame: Frame, device_ms: float, true_s: float) -> list[bytes]:
        if self.silent:
            return []
        if frame.proto_major != self.identity.proto_major:
            if frame.msg_type == Hello.MSG_TYPE:  # answer in our own version so the host can say why
                return [self._encode(self._hello_ack(0, self.identity.proto_minor), frame.txn)]
            return []
        decoded = self._decode(frame)
        if decoded is None:
            return []  # not a frame this firmware takes from a host: dropped, and it does not feed the watchdog
        self.host_frames += 1
        self.last_host_ms = device_ms
        if self.identity.proto_minor == 0 or "rearm-watchdog" in self.defects:  # defect: the 1.0 rule
            self.watchdog_tripped = False  # 1.0: any host frame re-armed a tripped watchdog (1.1: HELLO or CLEAR_FAULT)
        known, msg = decoded
        if not known:  # §4.4 step 5: an unknown type is refused before the txn cache is consulted, and not cached
            return [self._encode(Ack(frame.msg_type, Result.UNSUPPORTED, 0, 0), frame.txn)] if frame.txn else []
        return self._request(frame, msg, device_ms, true_s)

    def _decode(self, frame: Frame) -> tuple[bool, Message | None] | None:
        """(known, message) for a host frame of this firmware's major version: known is False for a
        type this firmware does not know, message is None for a known type with an undefined value.
        None when the frame is dropped: a device type, a wrong length, or what a 1.0 device ignores."""
        if frame.msg_type & 0x80:
            return None  # a device message type: not a host frame
        known = REGISTRY.get(frame.msg_type)
        if known is not None and self.identity.proto_minor < known.SINCE_MINOR:
            known = None  # added after this firmware's version: unknown here
        if known is Bye and "no-bye" in self.defects:
            known = None  # defect: BYE unknown, as in 1.0
        if known is None:
            return None if self.identity.proto_minor == 0 else (False, None)  # a 1.0 device ignores a type it does not know
        try:
            return True, decode_message(frame.msg_type, frame.payload)
        except DecodeError:
            if self.identity.proto_minor == 0 or len(frame.payload) != known.LAYOUT.size:
                return None  # a wrong length is treated like a corrupt frame (§2)
            return True, None  # 1.1: the right length with an undefined value is a BAD_REQUEST, answered

    def _request(self, frame: Frame, msg: Message | None, device_ms: float, true_s: float) -> list[bytes]:
        """A host frame of a known type: heartbeats and event acks, then requests, each acted on once per txn."""
        if isinstance(msg, Heartbeat):
            return []
        if isinstance(msg, EventAck):
            self.pending_events.pop(msg.event_id, None)
            return []
        if frame.txn == 0:
            return []  # requests must carry a txn
        cached = self.txn_cache.get(frame.txn)
        if isinstance(msg, Hello) and not (isinstance(cached, HelloAck) and cached.host_nonce == msg.host_nonce):
            cached = None  # a new host may reuse a txn: a HELLO repeats only if its nonce does
        if isinstance(msg, Freeze) and "double-freeze" in self.defects:
            cached = None  # defect: a retransmitted FREEZE runs again
        if cached is not None:  # a retransmission: answer again, never act again
            return [self._encode(cached, frame.txn, FLAG_DUPLICATE)]
        reply = self._handle(msg, frame.txn, device_ms, true_s) if msg is not None else self._refuse_undecodable(frame.msg_type)
        self.txn_cache[frame.txn] = reply
        while len(self.txn_cache) > TXN_CACHE_SIZE:
            self.txn_cache.popitem(last=False)
        return [self._encode(reply, frame.txn), *self._flush_new_events(device_ms)]

    def _refuse_undecodable(self, msg_type: int) -> Ack:  # §4.4 step 9
        """A known type with an undefined value gets the refusal the FREEZE table would give first
        (NO_SESSION, FAULT_LATCHED, BUSY), else BAD_REQUEST."""
        known = REGISTRY[msg_type]  # unknown types were answered before (§4.4 step 5)
        if known not in ACCEPTS[self.state]:
            return Ack(msg_type, REFUSAL[self.state], 0, 0)
        if known is Freeze and self.state is DeviceState.FAULT:
            return Ack(msg_type, Result.FAULT_LATCHED, int(self.faults), 0)
        if known is Freeze and self.freeze is not None:
            return Ack(msg_type, Result.BUSY, 0, 0)
        return Ack(msg_type, Result.BAD_REQUEST, 0, 0)

    def _handle(self, msg: Message, txn: int, device_ms: float, true_s: float) -> Message:
        if type(msg) not in ACCEPTS[self.state]:
            return self._ack(msg, REFUSAL[self.state])
        match msg:
            case Hello():
                reply = self._on_hello(msg, device_ms, true_s)
            case Bye():
                reply = self._on_bye(msg, device_ms, true_s)
            case Stop():
                reply = self._on_stop(msg, device_ms, true_s)
            case Freeze():
                reply = self._on_freeze(msg, txn, device_ms, true_s)
            case EndIn():
                reply = self._on_end_in(msg, device_ms)
            case GetCounters():
                reply = self._counters(device_ms)
            case CalRead():
                reply = self.nvm.calibration
            case CalWrite():
                reply = self._on_cal_write(msg)
            case ClearFault():
                reply = self._on_clear_fault(msg)
            case _:
                reply = self._ack(msg, Result.UNSUPPORTED)
        return reply

    def _on_hello(self, msg: Hello, device_ms: float, true_s: float) -> Message:
        if self.freeze is not None:
            self._end_freeze(EndReason.NEW_SESSION, device_ms, true_s)
        requested = msg.watchdog_ms or DEFAULT_WATCHDOG_MS
        self.watchdog_ms = min(MAX_WATCHDOG_MS, max(MIN_WATCHDOG_MS, requested))
        self.watchdog_tripped = False  # a new session re-arms the watchdog
        self.txn_cache.clear()
        self.session_id = msg.host_nonce
        self.session_minor = min(self.identity.proto_minor, msg.proto_minor)  # HELLO_ACK speaks it, so a 1.0 host accepts us
        if self.state is DeviceState.NO_SESSION:
            self.state = DeviceState.FAULT if self.faults & LATCHING_FAULTS else DeviceState.READY
            self._report_at_once(device_ms)
        return self._hello_ack(msg.host_nonce, self.session_minor)

    def _on_bye(self, msg: Bye, device_ms: float, true_s: float) -> Message:
        """The host leaves: close the valve, then no session, so no watchdog and nothing latched."""
        valve_open_ms = 0
        if self.freeze is not None:
            valve_open_ms = self._end_freeze(EndReason.STOPPED, device_ms, true_s)
        self.state = DeviceState.NO_SESSION
        self.session_id = 0
        self.session_minor = 0
        self.watchdog_tripped = False
        self.txn_cache.clear()
        self._report_at_once(device_ms)  # BYE's own answer is cached after this, so a repeated BYE gets it again
        return self._ack(msg, Result.OK, detail32=valve_open_ms)

    def _hello_ack(self, nonce: int, proto_minor: int) -> HelloAck:
        """In the session's version (min of both minors) with that version's schema hash."""
        ident = self.identity
        major, minor, patch = ident.firmware
        schema = ident.schema_hash if proto_minor == ident.proto_minor else schema_hash(proto_minor)
        return HelloAck(
            ident.proto_major, proto_minor, ident.kind, ident.cryogen, major, minor, patch, ident.serial,
            self.nvm.boot_count, ident.max_freeze_ms, self.watchdog_ms, ident.capabilities, int(self.faults),
            schema, nonce,
        )

    def _on_stop(self, msg: Stop, device_ms: float, true_s: float) -> Message:
        if self.freeze is not None and self.state is DeviceState.FREEZING and "stop-before-close" in self.defects:
            self._late_stop = (device_ms + DEFECT_STOP_LAG_MS, self.freeze)  # defect: answered now, closed later (tick)
            return self._ack(msg, Result.OK)
        valve_open_ms = 0
        if self.freeze is not None:
            valve_open_ms = self._end_freeze(EndReason.STOPPED, device_ms, true_s)
        return self._ack(msg, Result.OK, detail32=valve_open_ms)

    def _on_freeze(self, msg: Freeze, txn: int, device_ms: float, true_s: float) -> Message:
        refusal = self._freeze_refusal(msg)
        if refusal is not None:
            return refusal
        self.freeze = _Freeze(txn, msg.mode, msg.trigger, msg.duration_ms, released_since_accept=not self.trigger_held)
        self.nvm.last_freeze = LastFreeze(txn, msg.duration_ms, 0, NOT_AVAILABLE_U32, EndReason.NONE, self.nvm.boot_count)
        if msg.trigger is TriggerMode.HOST:
            self._open_valve(device_ms, true_s)
        else:
            self.state = DeviceState.WAIT_TRIGGER
            self._report_at_once(device_ms)
        return self._ack(msg, Result.OK, detail32=msg.duration_ms)

    def _freeze_refusal(self, msg: Freeze) -> Ack | None:
        """The first row of docs/protocol.md §6.1's table that applies (rows 2 to 7: row 1, no session,
        is refused before by ACCEPTS), as its ACK; None to accept the freeze."""
        caps = self.identity.capabilities
        cap_ms = self.identity.max_freeze_ms
        refusals = (
            (self.state is DeviceState.FAULT, Result.FAULT_LATCHED, int(self.faults), 0),
            (self.freeze is not None, Result.BUSY, 0, 0),
            (msg.duration_ms <= 0, Result.BAD_REQUEST, 0, 0),
            (msg.duration_ms > cap_ms, Result.OVER_CAP, 0, cap_ms),
            (msg.mode is FreezeMode.HALO and not caps & Capability.HALO_TIMING, Result.UNSUPPORTED, 0, 0),
            (msg.trigger is not TriggerMode.HOST and not caps & TRIGGER_INPUTS, Result.UNSUPPORTED, 0, 0),
            (msg.trigger is TriggerMode.DEAD_MAN and not caps & Capability.DEAD_MAN, Result.UNSUPPORTED, 0, 0),
            (self.model.cartridge.remaining_g <= 0, Result.CARTRIDGE_EMPTY, 0, 0),
        )
        return next((self._ack(msg, result, d16, d32) for applies, result, d16, d32 in refusals if applies), None)

    def _on_end_in(self, msg: EndIn, device_ms: float) -> Message:
        f = self.freeze
        if f is None or f.started_ms is None or f.deadline_ms is None:
            return self._ack(msg, Result.NOT_FREEZING)
        if f.mode is not FreezeMode.HALO or f.halo_marked_ms is not None:
            return self._ack(msg, Result.BAD_REQUEST)
        cap_deadline = f.started_ms + f.requested_ms
        f.halo_marked_ms = device_ms
        f.capped = device_ms + msg.remaining_ms > cap_deadline
        f.deadline_ms = min(cap_deadline, device_ms + msg.remaining_ms)
        self._queue_event(EventCode.HALO_MARKED, device_ms)
        return self._ack(msg, Result.OK, detail32=int(f.deadline_ms - device_ms))

    def _on_cal_write(self, msg: CalWrite) -> Message:
        gains_ok = all(0 < gain < CAL_GAIN_LIMIT_PPM for gain in (msg.tip_gain_ppm, msg.tissue_gain_ppm))
        if not gains_ok or abs(msg.timer_ppm) > CAL_TIMER_LIMIT_PPM:
            return self._ack(msg, Result.BAD_REQUEST)
        self.nvm.calibration = CalData(*dataclasses.astuple(msg))
        return self._ack(msg, Result.OK)

    def _on_clear_fault(self, msg: ClearFault) -> Message:
        still = self._present_faults()
        cleared = self.faults & LATCHING_FAULTS & ~still
        self.faults = (self.faults & ~LATCHING_FAULTS) | still
        if cleared:
            self._queue_event(EventCode.FAULT_CLEARED, self.last_host_ms, faults=cleared)
        if not self.faults & LATCHING_FAULTS and self.state is DeviceState.FAULT:
            self.state = DeviceState.READY
            self._report_at_once(self.last_host_ms)
        if not self.faults & Fault.WATCHDOG_TRIP:
            self.watchdog_tripped = False  # one silence, one trip: re-armed only once the trip is cleared
        return self._ack(msg, Result.OK if not still else Result.FAULT_LATCHED, detail16=int(self.faults))

    def _present_faults(self) -> Fault:
        """Latching faults whose cause is still there (they cannot be cleared yet)."""
        present = Fault(0)
        if self.model.valve_stuck_open:
            present |= Fault.VALVE_STUCK_OPEN
        if self.model.valve_stuck_closed:
            present |= Fault.VALVE_STUCK_CLOSED
        for sensor in (self.model.tip, self.model.tissue):
            present |= SENSOR_FAULTS.get(sensor.fault, Fault(0))
        return present & self.faults

    # ---- time --------------------------------------------------------------------------------

    def tick(self, device_ms: float, true_s: float) -> list[bytes]:
        """Run the device's timers; returns frames to send (telemetry, events)."""
        self.model.step(true_s)
        self._check_watchdog(device_ms, true_s)
        self._check_valve_and_supply(device_ms, true_s)  # causes are reported before their effects
        if self._late_stop is not None and device_ms >= self._late_stop[0]:
            stopped, self._late_stop = self._late_stop[1], None  # defect stop-before-close: the STOP answered earlier acts now
            if self.freeze is stopped:
                self._end_freeze(EndReason.STOPPED, device_ms, true_s)
        self._check_freeze(device_ms, true_s)
        if self.silent:
            return []
        self._flood(device_ms)
        out = self._resend_events(device_ms)
        if device_ms >= self.next_telemetry_ms:  # also without a session: a reboot shows at once
            out.append(self._encode(self._telemetry(device_ms), 0))
            freezing = self.state in (DeviceState.FREEZING, DeviceState.WAIT_TRIGGER) or self.model.valve_open
            period = TELEMETRY_FREEZING_MS if freezing and "slow-telemetry" not in self.defects else TELEMETRY_IDLE_MS
            self.next_telemetry_ms = device_ms + max(period, self.min_telemetry_period_ms)
        return out

    def next_deadline_ms(self, device_ms: float) -> float:
        candidates = [self.next_telemetry_ms]  # the device thread also wakes at least every 20 ms of wall time
        if self.freeze is not None and self.freeze.deadline_ms is not None:
            candidates.append(self.freeze.deadline_ms)
        if self.state is not DeviceState.NO_SESSION and not self.watchdog_tripped:
            candidates.append(self.last_host_ms + self.watchdog_ms)
        if "event-flood" in self.lies and self.state is not DeviceState.NO_SESSION:
            candidates.append(device_ms + FLOOD_TICK_MS)  # lie: wake often to keep flooding
        return min(candidates)

    def _check_watchdog(self, device_ms: float, true_s: float) -> None:
        if self.state is DeviceState.NO_SESSION or self.watchdog_tripped or "no-watchdog" in self.defects:
            return
        if device_ms - self.last_host_ms <= self.watchdog_ms:
            return
        self.watchdog_tripped = True
        self.watchdog_trips += 1
        if self.freeze is not None:
            self._end_freeze(EndReason.WATCHDOG, device_ms, true_s)
        self._latch(Fault.WATCHDOG_TRIP, device_ms, EventCode.WATCHDOG_TRIP)

    def _check_freeze(self, device_ms: float, true_s: float) -> None:
        f = self.freeze
        if f is None:
            return
        held = self.trigger_held
        if self.state is DeviceState.WAIT_TRIGGER:
            if not held:
                f.released_since_accept = True
            elif f.released_since_accept:  # a trigger held since before the FREEZE never fires it
                self._open_valve(device_ms, true_s)
            return
        assert f.deadline_ms is not None and f.started_ms is not None
        # Retained RAM: what a reset would leave for the host to read back.
        self.nvm.last_freeze.valve_open_ms = round(device_ms - f.started_ms)
        if f.trigger is TriggerMode.DEAD_MAN and not held:
            self._end_freeze(EndReason.TRIGGER_RELEASED, device_ms, true_s)
        elif device_ms >= f.deadline_ms:
            cut_by_cap = f.mode is FreezeMode.HALO and (f.halo_marked_ms is None or f.capped)
            self._end_freeze(EndReason.CAP if cut_by_cap else EndReason.COMPLETED, device_ms, true_s)
        elif self.model.cartridge.remaining_g <= 0:
            self._end_freeze(EndReason.CARTRIDGE_EMPTY, device_ms, true_s)

    def _check_valve_and_supply(self, device_ms: float, true_s: float) -> None:
        self._check_valve_position(device_ms, true_s)
        self._check_flow(device_ms, true_s)
        self._check_sensors(device_ms, true_s)
        self._check_cartridge(device_ms)

    def _check_valve_position(self, device_ms: float, true_s: float) -> None:
        """The valve's position sensor disagreeing with its command for STUCK_DETECT_MS latches a stuck valve."""
        model = self.model
        if model.valve_commanded == model.valve_open:
            self._mismatch_since_ms = None
        elif self._mismatch_since_ms is None:
            self._mismatch_since_ms = device_ms
        elif device_ms - self._mismatch_since_ms >= STUCK_DETECT_MS:
            fault = Fault.VALVE_STUCK_OPEN if model.valve_open else Fault.VALVE_STUCK_CLOSED
            if not self.faults & fault:
                self._latch_and_end_freeze(fault, device_ms, true_s)

    def _check_flow(self, device_ms: float, true_s: float) -> None:
        """An open valve with gas left and a blocked nozzle for NO_FLOW_DETECT_MS latches NO_FLOW."""
        model = self.model
        no_flow = model.valve_open and model.nozzle_blocked and model.cartridge.remaining_g > 0
        if not no_flow:
            self._no_flow_since_ms = None
        elif self._no_flow_since_ms is None:
            self._no_flow_since_ms = device_ms
        elif device_ms - self._no_flow_since_ms >= NO_FLOW_DETECT_MS and not self.faults & Fault.NO_FLOW:
            self._latch_and_end_freeze(Fault.NO_FLOW, device_ms, true_s)

    def _check_sensors(self, device_ms: float, true_s: float) -> None:
        for sensor, present in ((self.model.tip, True), (self.model.tissue, self.model.has_tissue_sensor)):
            fault = SENSOR_FAULTS.get(sensor.fault)
            if present and fault is not None and not self.faults & fault:
                self._latch_and_end_freeze(fault, device_ms, true_s)

    def _check_cartridge(self, device_ms: float) -> None:
        fraction = self.model.cartridge.fraction_left
        if fraction <= 0 and not self.faults & Fault.CARTRIDGE_EMPTY:
            self.faults |= Fault.CARTRIDGE_EMPTY
            self._queue_event(EventCode.CARTRIDGE_EMPTY, device_ms)
        elif fraction < CARTRIDGE_LOW_FRACTION and not self._low_reported:
            self._low_reported = True
            self.faults |= Fault.CARTRIDGE_LOW
            self._queue_event(EventCode.CARTRIDGE_LOW, device_ms)
        elif fraction >= CARTRIDGE_LOW_FRACTION and self._low_reported:  # a new cartridge
            self._low_reported = False
            self.faults &= ~(Fault.CARTRIDGE_LOW | Fault.CARTRIDGE_EMPTY)

    def _latch_and_end_freeze(self, fault: Fault, device_ms: float, true_s: float) -> None:
        self._latch(fault, device_ms)
        if self.freeze is not None:
            self._end_freeze(EndReason.FAULT, device_ms, true_s)

    # ---- freeze mechanics ------------------------------------------------------------------------

    def _open_valve(self, device_ms: float, true_s: float) -> None:
        f = self.freeze
        assert f is not None
        f.started_ms = device_ms
        f.deadline_ms = device_ms + f.requested_ms
        self.state = DeviceState.FREEZING
        self.freezes_started += 1
        self.model.command_valve(True, true_s)
        self._tissue_cold = self._tissue_cold or "tissue-cold" in self.lies  # lie: the cold reading starts with the freeze
        self._report_at_once(device_ms)
        self._queue_event(EventCode.FREEZE_STARTED, device_ms)

    def _end_freeze(self, reason: EndReason, device_ms: float, true_s: float) -> int:
        """Close the valve and record what the device measured. Returns the valve-open ms."""
        f = self.freeze
        assert f is not None
        self.model.command_valve(False, true_s)
        if reason in (EndReason.COMPLETED, EndReason.CAP) and f.deadline_ms is not None:
            # The device's timer is an interrupt: it ends the freeze at its deadline. This thread may
            # run a little later (Python scheduling); the valve log keeps that true lateness.
            device_ms = min(device_ms, f.deadline_ms)
        valve_open_ms = 0 if f.started_ms is None else round(device_ms - f.started_ms)
        halo_to_off = NOT_AVAILABLE_U32 if f.halo_marked_ms is None else round(device_ms - f.halo_marked_ms)
        valve_open_ms, reason = self._lie_about_freeze(valve_open_ms, reason)
        self.total_valve_open_ms += valve_open_ms
        self.nvm.last_freeze = LastFreeze(f.txn, f.requested_ms, valve_open_ms, halo_to_off, reason, self.nvm.boot_count)
        self._queue_event(EventCode.FREEZE_DONE, device_ms, reason=reason)
        self.freeze = None
        self.state = DeviceState.FAULT if self.faults & LATCHING_FAULTS else DeviceState.READY
        self._report_at_once(device_ms)
        return valve_open_ms

    def _lie_about_freeze(self, valve_open_ms: int, reason: EndReason) -> tuple[int, EndReason]:
        """Lies freeze-ms-huge and freeze-ms-zero: the figures every report of this freeze will carry
        (the last-freeze record, so FREEZE_DONE, COUNTERS and STOP's or BYE's answer agree). The valve
        really moved as the model says (valve_log); only the report is false."""
        if "freeze-ms-zero" in self.lies:
            return 0, EndReason.COMPLETED
        if "freeze-ms-huge" in self.lies:
            return LIE_FREEZE_MS, reason
        return valve_open_ms, reason

    def _report_at_once(self, device_ms: float) -> None:
        """A state change is reported at once (§6.5), without waiting for the next period slot."""
        if "slow-telemetry" not in self.defects:  # defect: it waits for the slot
            self.next_telemetry_ms = device_ms

    def _latch(self, fault: Fault, device_ms: float, code: EventCode = EventCode.FAULT_RAISED) -> None:
        self.faults |= fault
        self._report_at_once(device_ms)
        if self.state is not DeviceState.NO_SESSION:
            self.state = DeviceState.FAULT
        self._queue_event(code, device_ms, faults=fault)

    # ---- outgoing --------------------------------------------------------------------------------

    def _encode(self, msg: Message, txn: int, flags: int = 0) -> bytes:
        frame = Frame(self.identity.proto_major, self.identity.proto_minor, msg.MSG_TYPE, flags, self.seq, txn, msg.pack())
        self.seq = (self.seq + 1) & 0xFFFF
        return encode_frame(frame)

    def _ack(self, request: Message, result: Result, detail16: int = 0, detail32: int = 0) -> Ack:
        return Ack(request.MSG_TYPE, result, detail16, detail32)

    def _queue_event(self, code: EventCode, device_ms: float, *, reason: EndReason = EndReason.NONE, faults: Fault | None = None) -> None:
        last = self.nvm.last_freeze
        event = BoundEvent(
            self.next_event_id, code, reason, last.txn, int(self.faults if faults is None else faults),
            last.requested_ms, last.valve_open_ms, last.halo_to_off_ms, int(device_ms - self.boot_ms) & 0xFFFFFFFF,
            self.nvm.boot_count, self.session_id,
        )
        self._raise_event(event)

    def _raise_event(self, event: BoundEvent) -> None:
        self.next_event_id = self.next_event_id % 0xFFFF + 1
        self._last_event = event
        self.pending_events[event.event_id] = _PendingEvent(event, -1.0)
        while len(self.pending_events) > MAX_PENDING_EVENTS:
            self.pending_events.popitem(last=False)

    def _flood(self, device_ms: float) -> None:
        """Lie event-flood: the last event raised (a FAULT_CLEARED of nothing if none was) is raised
        again with a new id, FLOOD_EVENTS_PER_S per second of device time. Each is a valid event:
        sent at once, repeated until acknowledged, at most MAX_PENDING_EVENTS kept (the oldest dropped)."""
        if "event-flood" not in self.lies or self.state is DeviceState.NO_SESSION:
            self._flood_from_ms = None
            return
        if self._flood_from_ms is None:
            self._flood_from_ms = device_ms
            if self._last_event is None:
                self._queue_event(EventCode.FAULT_CLEARED, device_ms, faults=Fault(0))
            return
        due = int((device_ms - self._flood_from_ms) * FLOOD_EVENTS_PER_S / 1000)
        if due <= 0:
            return
        self._flood_from_ms = device_ms  # a late tick does not owe what it missed beyond FLOOD_MAX_PER_TICK
        template = self._last_event
        assert template is not None
        uptime = int(device_ms - self.boot_ms) & 0xFFFFFFFF
        for _ in range(min(due, FLOOD_MAX_PER_TICK)):
            self._raise_event(dataclasses.replace(template, event_id=self.next_event_id, uptime_ms=uptime))

    def _flush_new_events(self, device_ms: float) -> list[bytes]:
        if self.state is DeviceState.NO_SESSION:
            return []  # no events without a session (after BYE they wait for the next one)
        out = []
        for pending in self.pending_events.values():
            if pending.last_sent_ms < 0:
                pending.last_sent_ms = device_ms
                out.append(self._encode(self._wire_event(pending.event), 0))
        return out

    def _resend_events(self, device_ms: float) -> list[bytes]:
        if self.state is DeviceState.NO_SESSION:
            return []
        out = []
        for pending in self.pending_events.values():
            repeat = device_ms - pending.last_sent_ms >= EVENT_RESEND_MS and "events-not-repeated" not in self.defects  # defect
            if pending.last_sent_ms < 0 or repeat:
                pending.last_sent_ms = device_ms
                out.append(self._encode(self._wire_event(pending.event), 0))
        return out

    def _wire_event(self, event: BoundEvent) -> Message:
        """A 1.1 session gets the bound EVENT; a 1.0 host knows only the unbound one."""
        return event if self.session_minor >= 1 else event.unbound()

    def _telemetry(self, device_ms: float) -> Telemetry:
        f = self.freeze
        model = self.model
        caps = self.identity.capabilities
        elapsed = remaining = 0
        if f is not None and f.started_ms is not None and f.deadline_ms is not None:
            elapsed = round(device_ms - f.started_ms)
            remaining = max(0, round(f.deadline_ms - device_ms))
        cal = self.nvm.calibration
        tip_c = model.read_tip() if caps & Capability.TIP_THERMOCOUPLE else None
        tissue_c = model.read_tissue() if caps & Capability.TISSUE_THERMOCOUPLE else None
        if "temperature-jump" in self.lies and model.valve_commanded:  # lie: frozen at once, no cooling curve
            tip_c = CRYOGEN_TIP_C[model.cryogen] if tip_c is not None else None
            tissue_c = TISSUE_FRACTION_OF_TIP * CRYOGEN_TIP_C[model.cryogen] if tissue_c is not None else None
        tissue_cdeg = _cdeg(tissue_c, cal.tissue_gain_ppm, cal.tissue_offset_cdeg)
        if self._tissue_cold and tissue_c is not None:  # lie tissue-cold (an open thermocouple still reads nothing)
            tissue_cdeg = LIE_TISSUE_CDEG
        return Telemetry(
            uptime_ms=int(device_ms - self.boot_ms) & 0xFFFFFFFF,
            boot_count=self.nvm.boot_count,
            state=self.state,
            valve=int(model.valve_commanded) | int(model.valve_open) << 1,
            trigger=int(self.trigger_held),
            freeze_txn=self.nvm.last_freeze.txn,
            elapsed_ms=elapsed,
            remaining_ms=remaining,
            pressure_kpa=min(0xFFFE, round(model.pressure_kpa)) if caps & Capability.PRESSURE_SENSOR else NOT_AVAILABLE_U16,
            tip_cdeg=_cdeg(tip_c, cal.tip_gain_ppm, cal.tip_offset_cdeg),
            tissue_cdeg=tissue_cdeg,
            fault_flags=int(self.faults),
        )

    def _counters(self, device_ms: float) -> Counters:
        last = self.nvm.last_freeze
        return Counters(
            self.nvm.boot_count, int(device_ms - self.boot_ms) & 0xFFFFFFFF, round(self.total_valve_open_ms),
            self.freezes_started, self.watchdog_trips, last.txn, last.requested_ms, last.valve_open_ms,
            last.halo_to_off_ms, last.end_reason, last.boot_count, int(self.faults),
        )


def _cdeg(raw_c: float | None, gain_ppm: int, offset_cdeg: int) -> int:
    """Apply the stored calibration to a raw reading; centi-degrees, or 'not available'."""
    if raw_c is None:
        return NOT_AVAILABLE_TEMP
    corrected = raw_c * gain_ppm / 1_000_000 + offset_cdeg / 100
    return max(-32_767, min(32_766, round(corrected * 100)))
