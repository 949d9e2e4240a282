"""A Givre spray device written from docs/protocol.md (protocol 1.1) alone.

The "paper device": a second, independent implementation of the device side of the wire
protocol, written by reading only docs/protocol.md (no code of the project's simulator, bridge or
controller was read or imported). It exists so that CI checks the host and the document against a
device that is not the project's own simulator.

Section numbers in comments (e.g. "§5.7") refer to docs/protocol.md. Standard library only.

Hardware model (deliberately minimal and deterministic):

- kind SPRAY, cryogen N2O; capabilities PRESSURE_SENSOR, HAND_TRIGGER, HALO_TIMING, DEAD_MAN
  (the hand trigger is "pressed" by calling ``press_trigger()`` / ``release_trigger()``);
- a normally-closed valve whose sensed position follows the command after a small fixed latency
  (6 ms opening, 4 ms closing); the freeze timing uses the commands, never the latency (§6.2);
- a constant supply pressure (4 500 kPa) that drops to 2 900 kPa while the valve is sensed open;
- an "infinite" cartridge (never low, never empty);
- no thermocouples: temperatures are reported "not available" (0x7FFF, §4.2).

Hardware faults can be injected (``hardware.stuck_valve``, ``hardware.nozzle_blocked``) to reach
the fault-detection rules of §7.1; a healthy device never raises them.

Served on a real pseudo-terminal: one device thread owns the pty master with select(); a host
opens ``path`` (the slave) like a USB serial port.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import pty
import select
import struct
import threading
import time
import tty
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

# ---------------------------------------------------------------------------------------------
# Constants of the document
# ---------------------------------------------------------------------------------------------

PROTO_MAJOR = 1  # §3.1
PROTO_MINOR = 1  # §3.1: "1 for this document"

# §3.3: a device only needs the constants; copied from the document.
SCHEMA_HASH: dict[int, int] = {0: 0x02490457, 1: 0xC2A8419C}

# §3.1 header: proto_major, proto_minor, msg_type, flags, seq, txn
HEADER = struct.Struct("<BBBBHH")
FLAG_RETRANSMIT = 0x01
FLAG_DUPLICATE = 0x02

# §4.1 host -> device
HELLO, HEARTBEAT, FREEZE, END_IN, STOP = 0x01, 0x02, 0x03, 0x04, 0x05
GET_COUNTERS, CAL_READ, CAL_WRITE, CLEAR_FAULT, EVENT_ACK, BYE = 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B
# §4.2 device -> host
HELLO_ACK, ACK, TELEMETRY, EVENT, COUNTERS, CAL_DATA, BOUND_EVENT = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87)

# §4.1 layouts of the host messages this (1.1) device knows.
HOST_LAYOUTS: dict[int, struct.Struct] = {
    HELLO: struct.Struct("<BBHI"),
    HEARTBEAT: struct.Struct("<B"),
    FREEZE: struct.Struct("<BBI"),
    END_IN: struct.Struct("<I"),
    STOP: struct.Struct("<B"),
    GET_COUNTERS: struct.Struct("<"),
    CAL_READ: struct.Struct("<"),
    CAL_WRITE: struct.Struct("<iIhihiHHII"),
    CLEAR_FAULT: struct.Struct("<"),
    EVENT_ACK: struct.Struct("<H"),
    BYE: struct.Struct("<B"),
}
# §4.2 layouts of the device messages.
HELLO_ACK_S = struct.Struct("<BBBBBBB16sIIHHHII")
ACK_S = struct.Struct("<BBHI")
TELEMETRY_S = struct.Struct("<IIBBBHIIHhhH")
EVENT_S = struct.Struct("<HBBHHIIII")
COUNTERS_S = struct.Struct("<IIQIIHIIIBIH")
CAL_DATA_S = struct.Struct("<iIhihiHHII")
BOUND_EVENT_S = struct.Struct("<HBBHHIIIIII")

NA_U16 = 0xFFFF  # §4.2 "not available"
NA_U32 = 0xFFFFFFFF
NA_TEMP = 0x7FFF

# §4.3 capabilities
CAP_PRESSURE_SENSOR = 0x0001
CAP_TIP_THERMOCOUPLE = 0x0002
CAP_TISSUE_THERMOCOUPLE = 0x0004
CAP_HAND_TRIGGER = 0x0008
CAP_FOOT_SWITCH = 0x0010
CAP_HALO_TIMING = 0x0020
CAP_DEAD_MAN = 0x0040

# §4.3 state
S_NO_SESSION, S_READY, S_WAIT_TRIGGER, S_FREEZING, S_FAULT = 0, 1, 2, 3, 4

# §4.3 ACK result
R_OK, R_BUSY, R_OVER_CAP, R_FAULT_LATCHED, R_BAD_REQUEST = 0, 1, 2, 3, 4
R_UNSUPPORTED, R_NOT_FREEZING, R_NO_SESSION, R_CARTRIDGE_EMPTY = 5, 6, 7, 8

# §4.3 fault flags
F_WATCHDOG_TRIP = 0x0001
F_CARTRIDGE_LOW = 0x0002
F_CARTRIDGE_EMPTY = 0x0004
F_NO_FLOW = 0x0008
F_SENSOR_OPEN = 0x0010
F_SENSOR_SHORT = 0x0020
F_VALVE_STUCK_OPEN = 0x0040
F_VALVE_STUCK_CLOSED = 0x0080
LATCHING = (F_WATCHDOG_TRIP | F_NO_FLOW | F_SENSOR_OPEN | F_SENSOR_SHORT
            | F_VALVE_STUCK_OPEN | F_VALVE_STUCK_CLOSED)

# §4.3 event codes
E_FREEZE_STARTED, E_FREEZE_DONE, E_FAULT_RAISED, E_FAULT_CLEARED = 1, 2, 3, 4
E_WATCHDOG_TRIP, E_CARTRIDGE_LOW, E_CARTRIDGE_EMPTY, E_HALO_MARKED = 5, 6, 7, 8

# §4.3 end_reason
END_NONE, END_COMPLETED, END_STOPPED, END_WATCHDOG, END_CAP = 0, 1, 2, 3, 4
END_TRIGGER_RELEASED, END_CARTRIDGE_EMPTY, END_FAULT, END_RESET, END_NEW_SESSION = 5, 6, 7, 8, 9

# §4.1 FREEZE enumerations
MODE_TIMED, MODE_HALO = 0, 1
TRIG_HOST, TRIG_TRIGGER_START, TRIG_DEAD_MAN = 0, 1, 2

KIND_SPRAY = 1  # §4.2
CRYOGEN_N2O = 1

DEFAULT_WATCHDOG_MS = 250  # §5.1: "0 means 250"
WATCHDOG_MIN_MS, WATCHDOG_MAX_MS = 100, 60_000
TXN_CACHE_SIZE = 32  # §5.4
MAX_PENDING_EVENTS = 32  # §5.5
EVENT_REPEAT_MS = 100.0  # §5.5
TELEMETRY_FAST_MS = 20.0  # §6.5: 50 Hz
TELEMETRY_SLOW_MS = 100.0  # §6.5: 10 Hz
MAX_ENCODED = 253  # §2.4
MIN_BODY = 12  # §2.4
VALVE_DISAGREE_MS = 200.0  # §7.1 VALVE_STUCK_*
NO_FLOW_MS = 300.0  # §7.1 NO_FLOW


def _ms(x: float) -> int:
    """A non-negative duration in device ms, rounded to the ms."""
    return max(0, int(x + 0.5))


# ---------------------------------------------------------------------------------------------
# §2: framing
# ---------------------------------------------------------------------------------------------


def crc32(data: bytes) -> int:
    """§2.3 CRC-32/ISO-HDLC: exactly zlib's CRC-32 (check value 0xCBF43926)."""
    return zlib.crc32(data) & 0xFFFFFFFF


assert crc32(b"123456789") == 0xCBF43926  # §2.3 check value


def cobs_encode(data: bytes) -> bytes:
    """§2.2 COBS; code 0xFF = 254 data bytes, no implied zero."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(block: bytes) -> bytes | None:
    """§2.2 COBS decoding; None for a block that is not valid COBS (§2.4)."""
    out = bytearray()
    i, n = 0, len(block)
    while i < n:
        code = block[i]
        if code == 0 or i + code > n:  # a zero inside, or a code past the end
            return None
        out += block[i + 1:i + code]
        i += code
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(body_without_crc: bytes) -> bytes:
    """§2.2: 0x00 COBS(header ‖ payload ‖ crc) 0x00, CRC little-endian (§2.3)."""
    body = body_without_crc + struct.pack("<I", crc32(body_without_crc))
    return b"\x00" + cobs_encode(body) + b"\x00"


class FrameReceiver:
    """§2.4: splits the byte stream at delimiters and silently drops what must be discarded."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False  # inside a run of more than 253 bytes: drop up to the next 0x00
        self.discarded = 0

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        """Return the bodies (header ‖ payload, CRC checked and removed) completed by data."""
        bodies: list[bytes] = []
        for b in data:
            if b == 0:
                if self._overflow:
                    self._overflow = False
                elif self._buf:  # an empty frame (two delimiters in a row) is ignored
                    body = self._check(bytes(self._buf))
                    if body is not None:
                        bodies.append(body)
                    else:
                        self.discarded += 1
                self._buf.clear()
            elif not self._overflow:
                self._buf.append(b)
                if len(self._buf) > MAX_ENCODED:  # §2.4: more than 253 bytes without delimiter
                    self._buf.clear()
                    self._overflow = True
                    self.discarded += 1
        return bodies

    @staticmethod
    def _check(block: bytes) -> bytes | None:
        body = cobs_decode(block)
        if body is None or len(body) < MIN_BODY:  # §2.4: invalid COBS, body < 12 bytes
            return None
        (crc,) = struct.unpack_from("<I", body, len(body) - 4)
        if crc != crc32(body[:-4]):  # §2.4: CRC fails
            return None
        return body[:-4]


# ---------------------------------------------------------------------------------------------
# Device clock (§7.5)
# ---------------------------------------------------------------------------------------------


class CorrectedClock:
    """§7.5: corrected_ms = raw_ms * (1 + timer_ppm / 10⁶), applied to each interval as it
    elapses: a new timer_ppm changes the rate from then on, the clock never jumps. It counts ms
    since power-on (uptime, §6.5)."""

    def __init__(self, timer_ppm: int) -> None:
        self._raw0 = time.monotonic()
        self._base_ms = 0.0
        self._rate = 1.0 + timer_ppm / 1e6

    def now(self) -> float:
        return self._base_ms + (time.monotonic() - self._raw0) * 1000.0 * self._rate

    def set_ppm(self, timer_ppm: int) -> None:
        raw = time.monotonic()
        self._base_ms += (raw - self._raw0) * 1000.0 * self._rate
        self._raw0 = raw
        self._rate = 1.0 + timer_ppm / 1e6

    def seconds_until(self, t_ms: float) -> float:
        return max(0.0, (t_ms - self.now()) / self._rate / 1000.0)


# ---------------------------------------------------------------------------------------------
# Hardware model
# ---------------------------------------------------------------------------------------------


class SprayHardware:
    """A normally-closed valve with a sensed position, a pressure sensor, a hand trigger and an
    infinite N2O cartridge. Physical: it survives a reset of the MCU (only the command resets)."""

    OPEN_LATENCY_S = 0.006
    CLOSE_LATENCY_S = 0.004
    SUPPLY_KPA = 4500
    FLOWING_KPA = 2900

    def __init__(self) -> None:
        self.commanded = False
        self._changed_at = -1e9
        self.trigger_held = False
        self.stuck_valve: bool | None = None  # injected fault: True stuck open, False closed
        self.nozzle_blocked = False  # injected fault: the pressure does not fall

    def command(self, open_: bool) -> None:
        if open_ != self.commanded:
            self.commanded = open_
            self._changed_at = time.monotonic()

    def sensed_open(self) -> bool:
        if self.stuck_valve is not None:
            return self.stuck_valve
        latency = self.OPEN_LATENCY_S if self.commanded else self.CLOSE_LATENCY_S
        if time.monotonic() - self._changed_at >= latency:
            return self.commanded
        return not self.commanded

    def pressure_kpa(self) -> int:
        if self.sensed_open() and not self.nozzle_blocked:
            return self.FLOWING_KPA
        return self.SUPPLY_KPA

    def supply_low(self) -> bool:  # infinite cartridge
        return False

    def supply_empty(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# Memory that survives a reset (§7.3, §7.4, §7.5)
# ---------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """§7.5, the CAL_DATA layout. Non-volatile."""

    timer_ppm: int = 0
    flow_mg_per_s: int = 400
    tip_offset_cdeg: int = 0
    tip_gain_ppm: int = 1_000_000
    tissue_offset_cdeg: int = 0
    tissue_gain_ppm: int = 1_000_000
    valve_open_latency_ms: int = 6
    valve_close_latency_ms: int = 4
    calibrated_on_day: int = 0
    due_on_day: int = 0

    def pack(self) -> bytes:
        return CAL_DATA_S.pack(
            self.timer_ppm, self.flow_mg_per_s, self.tip_offset_cdeg, self.tip_gain_ppm,
            self.tissue_offset_cdeg, self.tissue_gain_ppm, self.valve_open_latency_ms,
            self.valve_close_latency_ms, self.calibrated_on_day, self.due_on_day)


@dataclass
class LastFreeze:
    """§7.3 the last-freeze record; retained across a reset."""

    txn: int = 0
    requested_ms: int = 0
    valve_open_ms: int = 0
    halo_to_off_ms: int = NA_U32
    end_reason: int = END_NONE
    boot_count: int = 0


def _today() -> int:
    return (datetime.date.today() - datetime.date(1970, 1, 1)).days  # §4.3 days


@dataclass
class NonVolatile:
    """What survives a reset: boot counter and calibration (non-volatile), last-freeze record
    (retained RAM). Pass the same instance to a new PaperDevice to model a power cycle."""

    boot_count: int = 0
    calibration: Calibration = field(default_factory=lambda: Calibration(
        calibrated_on_day=_today() - 30, due_on_day=_today() + 335))
    last_freeze: LastFreeze = field(default_factory=LastFreeze)


# ---------------------------------------------------------------------------------------------
# Volatile protocol state
# ---------------------------------------------------------------------------------------------


@dataclass
class Freeze:
    """The freeze running or waiting for the trigger."""

    txn: int
    mode: int
    trigger: int
    duration_ms: int  # the duration (TIMED) or the cap for the whole spray (HALO), §6.3
    start: float | None = None  # device ms of the open command; None in WAIT_TRIGGER
    deadline: float = 0.0
    halo_at: float | None = None  # device ms of the accepted END_IN
    cut_to_cap: bool = False


@dataclass
class PendingEvent:
    """§5.5: an unacknowledged event, with its binding fields fixed when raised."""

    event_id: int
    code: int
    end_reason: int
    freeze_txn: int
    fault_flags: int
    requested_ms: int
    valve_open_ms: int
    halo_to_off_ms: int
    uptime_ms: int
    boot_count: int
    session_id: int
    last_sent: float | None = None  # device ms; None: send at once

    def payload(self, bound: bool) -> bytes:
        nine = (self.event_id, self.code, self.end_reason, self.freeze_txn, self.fault_flags,
                self.requested_ms, self.valve_open_ms, self.halo_to_off_ms, self.uptime_ms)
        if bound:
            return BOUND_EVENT_S.pack(*nine, self.boot_count, self.session_id)
        return EVENT_S.pack(*nine)


@dataclass(frozen=True)
class Identity:
    """What the device says of itself in HELLO_ACK (§5.1), fixed for its life."""

    serial: str = "PAPER-0001"
    max_freeze_ms: int = 30_000
    capabilities: int = CAP_PRESSURE_SENSOR | CAP_HAND_TRIGGER | CAP_HALO_TIMING | CAP_DEAD_MAN
    fw_version: tuple[int, int, int] = (0, 1, 0)


@dataclass
class CachedReply:
    """§5.4 / §10.2: a reply kept as message type and payload (a replay needs a new seq)."""

    msg_type: int
    payload: bytes
    hello_nonce: int | None  # for a HELLO: its host_nonce (§5.4 "both txn and host_nonce")


# ---------------------------------------------------------------------------------------------
# The firmware
# ---------------------------------------------------------------------------------------------


class PaperFirmware:
    """The protocol logic. Not thread-safe: PaperDevice calls it under one lock."""

    def __init__(self, nv: NonVolatile, transmit: Callable[[bytes], None], *,
                 identity: Identity | None = None, hardware: SprayHardware | None = None) -> None:
        self.nv = nv
        self._transmit = transmit
        identity = identity or Identity()
        self.serial = identity.serial
        self.max_freeze_ms = identity.max_freeze_ms
        self.capabilities = identity.capabilities
        self.fw_version = identity.fw_version
        self.hw = hardware or SprayHardware()
        self.rx = FrameReceiver()
        self._power_on()

    # -- §7.4 power-on / reset ---------------------------------------------------------------

    def _power_on(self) -> None:
        self.hw.command(False)  # §1: a reset closes the valve
        self.nv.boot_count = (self.nv.boot_count + 1) & 0xFFFFFFFF  # §7.4: +1 at every reset
        self.clock = CorrectedClock(self.nv.calibration.timer_ppm)
        self.rx.reset()
        self.seq = 0  # §3.1: the device's seq restarts at 0 at boot
        self.state = S_NO_SESSION
        self.session_id = 0
        self.minor = PROTO_MINOR  # negotiated minor of the current session
        self.watchdog_ms = DEFAULT_WATCHDOG_MS
        self.watchdog_armed = False  # §5.7: no session, no watchdog
        self.last_feed = 0.0
        self.last_trip_silence_ms: float | None = None
        self.txn_cache: OrderedDict[int, CachedReply] = OrderedDict()  # §5.4: emptied at boot
        self.events: list[PendingEvent] = []  # §7.4: pending events gone
        self.next_event_id = 1  # §7.4: event ids restart
        self.latched = 0  # §7.4: a reset clears latched faults
        self.total_valve_open_ms = 0  # §7.3: "since boot" counters restart
        self.freezes_started = 0
        self.watchdog_trips = 0
        self.freeze: Freeze | None = None
        self.host_state = 0
        self.host_seq: int | None = None
        self.host_seq_gaps = 0  # §3.1: gaps counted as link statistics
        self._disagree_since: float | None = None
        self._sensed_open_since: float | None = None
        self._flow_seen = False
        self._telemetry_now = True  # a reboot is seen at once by its boot_count (§5.1)
        self._next_telemetry = 0.0

    def reset(self) -> None:
        """§7.4: power-on, MCU watchdog or DTR reset. The last-freeze record survives: a freeze
        cut by the reset reads end_reason RESET with the valve-open time reached before it."""
        now = self.clock.now()
        f = self.freeze
        if f is not None:
            self.hw.command(False)
            rec = self.nv.last_freeze
            rec.valve_open_ms = _ms(now - f.start) if f.start is not None else 0
            rec.halo_to_off_ms = _ms(now - f.halo_at) if f.halo_at is not None else NA_U32
            rec.end_reason = END_RESET  # §6.4: RESET raises no event
        self._power_on()

    # -- helpers -------------------------------------------------------------------------------

    @property
    def session_open(self) -> bool:
        return self.state != S_NO_SESSION

    def fault_flags(self) -> int:
        flags = self.latched
        if self.hw.supply_empty():  # §4.3: CARTRIDGE_LOW/EMPTY follow the supply
            flags |= F_CARTRIDGE_EMPTY
        if self.hw.supply_low():
            flags |= F_CARTRIDGE_LOW
        return flags

    def _set_state(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self._telemetry_now = True  # §6.5: at once on every state change

    def _send(self, msg_type: int, payload: bytes, txn: int = 0, flags: int = 0) -> None:
        # §3.1: header proto_minor is always the device's own minor; seq +1 per frame sent.
        header = HEADER.pack(PROTO_MAJOR, PROTO_MINOR, msg_type, flags, self.seq, txn)
        self.seq = (self.seq + 1) & 0xFFFF
        self._transmit(encode_frame(header + payload))

    @staticmethod
    def _ack(request_type: int, result: int, detail16: int = 0,
             detail32: int = 0) -> tuple[int, bytes]:
        # §4.5: request_type is the request's type; details 0 unless stated.
        return ACK, ACK_S.pack(request_type, result, detail16 & 0xFFFF, detail32 & 0xFFFFFFFF)

    def _record_valve_open_ms(self, now: float) -> int:
        """§7.3: last_valve_open_ms, kept current while the valve is open."""
        f = self.freeze
        if f is not None and f.start is not None:
            return _ms(now - f.start)
        return self.nv.last_freeze.valve_open_ms

    def _raise(self, code: int, now: float, *, fault_flags: int | None = None,
               end_reason: int = END_NONE) -> None:
        """§5.5: raise an event; its fields are the last-freeze record at this moment."""
        rec = self.nv.last_freeze
        ev = PendingEvent(
            event_id=self.next_event_id, code=code, end_reason=end_reason,
            freeze_txn=rec.txn,
            fault_flags=self.fault_flags() if fault_flags is None else fault_flags,
            requested_ms=rec.requested_ms, valve_open_ms=self._record_valve_open_ms(now),
            halo_to_off_ms=rec.halo_to_off_ms, uptime_ms=int(now) & 0xFFFFFFFF,
            boot_count=self.nv.boot_count,
            session_id=self.session_id if self.session_open else 0)
        # §5.5: ids from 1, +1 per event, wrapping past 65535 to 1 (never 0)
        self.next_event_id = self.next_event_id + 1 if self.next_event_id < 0xFFFF else 1
        self.events.append(ev)
        if len(self.events) > MAX_PENDING_EVENTS:  # §5.5: at most 32, dropping the oldest
            del self.events[0]

    # -- valve and freeze endings (§6) ---------------------------------------------------------

    def _open_valve(self, now: float) -> None:
        """§6.1: command the valve open, start the timer, FREEZING, FREEZE_STARTED."""
        f = self.freeze
        assert f is not None
        self.hw.command(True)
        f.start = now
        f.deadline = now + f.duration_ms  # TIMED: the duration; HALO: the cap (§6.3)
        self.freezes_started += 1  # §7.3: valve openings
        self._set_state(S_FREEZING)
        self._telemetry_now = True
        self._raise(E_FREEZE_STARTED, now)

    def _end_freeze(self, now: float, reason: int, next_state: int = S_READY) -> int:
        """Close the valve first, complete the last-freeze record (§7.3), update the counters and
        raise FREEZE_DONE (§6.4). Returns the valve-open ms (0 if the valve never opened)."""
        f = self.freeze
        assert f is not None
        self.hw.command(False)
        valve_open = _ms(now - f.start) if f.start is not None else 0
        rec = self.nv.last_freeze
        rec.valve_open_ms = valve_open
        # §5.5: halo_to_off_ms only if a halo was marked in that freeze and it has ended.
        rec.halo_to_off_ms = _ms(now - f.halo_at) if f.halo_at is not None else NA_U32
        rec.end_reason = reason
        self.total_valve_open_ms += valve_open
        self.freeze = None
        self._set_state(next_state)
        self._telemetry_now = True  # §6.5: the valve closing / the freeze ending
        self._raise(E_FREEZE_DONE, now, end_reason=reason)
        return valve_open

    # -- reception (§4.4) -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        for body in self.rx.feed(data):
            self._run_freeze_timer(self.clock.now())  # a deadline that passed ends first
            self._on_frame(body)
            self._emit(self.clock.now())  # events and telemetry caused by it, after the reply

    def _on_frame(self, body: bytes) -> None:  # noqa: PLR0911, PLR0912 - §4.4's ten steps in order, as the document reads
        major, _minor, msg_type, _flags, seq, txn = HEADER.unpack_from(body)
        payload = body[HEADER.size:]
        now = self.clock.now()
        # §4.4 step 1 / §3.2: another major: a HELLO gets a HELLO_ACK in our own version with
        # host_nonce 0, no session opens; everything else is ignored (and feeds no watchdog).
        if major != PROTO_MAJOR:
            if msg_type == HELLO:
                self._send(HELLO_ACK, self._hello_ack_payload(PROTO_MINOR, DEFAULT_WATCHDOG_MS, 0),
                           txn)
            return
        if msg_type & 0x80:  # step 2: a device message type: ignored, does not feed
            return
        layout = HOST_LAYOUTS.get(msg_type)
        if layout is not None and len(payload) != layout.size:  # step 3: wrong length
            self.rx.discarded += 1
            return
        # step 4: a valid host frame: it feeds the watchdog (§5.7) whatever its txn
        if self.session_open and self.watchdog_armed:
            self.last_feed = now
        if self.host_seq is not None and seq != (self.host_seq + 1) & 0xFFFF:
            self.host_seq_gaps += 1
        self.host_seq = seq
        if layout is None:  # step 5: unknown host type
            if txn != 0:
                self._send(*self._ack(msg_type, R_UNSUPPORTED), txn=txn)  # not cached
            return
        if msg_type == HEARTBEAT:  # step 6
            (self.host_state,) = layout.unpack(payload)
            return
        if msg_type == EVENT_ACK:  # step 6, §5.5: remove that id; unknown ids ignored
            (event_id,) = layout.unpack(payload)
            self.events = [e for e in self.events if e.event_id != event_id]
            return
        if txn == 0:  # step 7: not executed, not answered
            return
        # step 8: txn cache; a HELLO is a repeat only if its host_nonce matches too (§5.4)
        cached = self.txn_cache.get(txn)
        if cached is not None:
            nonce = layout.unpack(payload)[3] if msg_type == HELLO else None
            if msg_type != HELLO or cached.hello_nonce == nonce:
                self._send(cached.msg_type, cached.payload, txn, FLAG_DUPLICATE)
                return
        # steps 9 and 10: check, execute, reply, cache (refusals included)
        reply_type, reply = self._execute(msg_type, payload, txn, now)
        nonce = layout.unpack(payload)[3] if msg_type == HELLO else None
        self.txn_cache[txn] = CachedReply(reply_type, reply, nonce)
        self.txn_cache.move_to_end(txn)
        while len(self.txn_cache) > TXN_CACHE_SIZE:  # §5.4: the oldest entry is evicted first
            self.txn_cache.popitem(last=False)
        self._send(reply_type, reply, txn)

    def _execute(self, msg_type: int, payload: bytes, txn: int,  # noqa: PLR0911 - one return per request type, as §4.5 lists them
                 now: float) -> tuple[int, bytes]:
        fields = HOST_LAYOUTS[msg_type].unpack(payload)
        # §4.5: HELLO, BYE and STOP are served in every state, with or without a session.
        if msg_type == HELLO:
            return self._hello(*fields, now=now)
        if msg_type == BYE:
            return self._bye(now)
        if msg_type == STOP:
            return self._stop(now)
        if self.state == S_NO_SESSION:  # §5.1: every other known request
            return self._ack(msg_type, R_NO_SESSION)
        if msg_type == FREEZE:
            return self._freeze(*fields, txn=txn, now=now)
        if msg_type == END_IN:
            return self._end_in(fields[0], now)
        if msg_type == GET_COUNTERS:
            return COUNTERS, self._counters_payload(now)
        if msg_type == CAL_READ:
            return CAL_DATA, self.nv.calibration.pack()
        if msg_type == CAL_WRITE:
            return self._cal_write(fields)
        if msg_type == CLEAR_FAULT:
            return self._clear_fault(now)
        raise AssertionError(f"unhandled host type {msg_type:#x}")

    # -- requests ---------------------------------------------------------------------------------

    def _hello_ack_payload(self, minor: int, watchdog_ms: int, nonce: int) -> bytes:
        serial = self.serial.encode("ascii")[:16]
        fw_major, fw_minor, fw_patch = self.fw_version
        return HELLO_ACK_S.pack(
            PROTO_MAJOR, minor, KIND_SPRAY, CRYOGEN_N2O, fw_major, fw_minor, fw_patch, serial,
            self.nv.boot_count, self.max_freeze_ms, watchdog_ms, self.capabilities,
            self.fault_flags(), SCHEMA_HASH[minor], nonce)

    def _hello(self, _major: int, host_minor: int, watchdog_ms: int, nonce: int, *,
               now: float) -> tuple[int, bytes]:
        # §5.1 step 3, in this order: end a running or waiting freeze (NEW_SESSION, stamped with
        # the ending session), empty the txn cache, re-arm the watchdog, take the session id and
        # the negotiated minor.
        if self.freeze is not None:
            self._end_freeze(now, END_NEW_SESSION)
        self.txn_cache.clear()
        # §5.1 step 2: clamp to 100..60 000, 0 means 250
        if watchdog_ms == 0:
            watchdog_ms = DEFAULT_WATCHDOG_MS
        self.watchdog_ms = min(max(watchdog_ms, WATCHDOG_MIN_MS), WATCHDOG_MAX_MS)
        self.watchdog_armed = True
        self.last_feed = now
        self.session_id = nonce
        self.minor = min(host_minor, PROTO_MINOR)  # §3.2 negotiated minor (HELLO payload's)
        # §8: NO_SESSION -> READY, or FAULT if a latching fault is latched; READY and FAULT keep
        # their state (a new session); a freeze ended above left READY.
        if self.state == S_NO_SESSION:
            self._set_state(S_FAULT if self.latched else S_READY)
        self._telemetry_now = True
        for ev in self.events:  # §5.5: pending events are kept and delivered in this session
            ev.last_sent = None
        return HELLO_ACK, self._hello_ack_payload(self.minor, self.watchdog_ms, nonce)

    def _bye(self, now: float) -> tuple[int, bytes]:
        # §5.2: close the valve first (STOPPED, FREEZE_DONE stamped with the closing session),
        # only then answer; then no session, no watchdog, txn cache emptied. Latched faults and
        # pending events are kept.
        valve_open = 0
        if self.freeze is not None:
            valve_open = self._end_freeze(now, END_STOPPED)
        self._set_state(S_NO_SESSION)
        self.watchdog_armed = False
        self.session_id = 0
        self.txn_cache.clear()  # BYE's own reply is stored afterwards (§5.2 step 3)
        return self._ack(BYE, R_OK, 0, valve_open)

    def _stop(self, now: float) -> tuple[int, bytes]:
        # §6.4: always accepted; answered after the valve is commanded closed; in WAIT_TRIGGER
        # it cancels the pending freeze (valve-open 0), state READY.
        valve_open = 0
        if self.freeze is not None:
            valve_open = self._end_freeze(now, END_STOPPED)
        return self._ack(STOP, R_OK, 0, valve_open)

    def _freeze(self, mode: int, trigger: int, duration_ms: int, *, txn: int,  # noqa: PLR0911 - §6.1's table, one return per row
                now: float) -> tuple[int, bytes]:
        # §6.1: the table top to bottom, first match (row 1, no session, handled by the caller)
        if self.latched & LATCHING or self.state == S_FAULT:  # row 2
            return self._ack(FREEZE, R_FAULT_LATCHED, self.fault_flags())
        if self.freeze is not None:  # row 3
            return self._ack(FREEZE, R_BUSY)
        if (duration_ms == 0 or mode not in (MODE_TIMED, MODE_HALO)
                or trigger not in (TRIG_HOST, TRIG_TRIGGER_START, TRIG_DEAD_MAN)):  # row 4
            return self._ack(FREEZE, R_BAD_REQUEST)
        if duration_ms > self.max_freeze_ms:  # row 5
            return self._ack(FREEZE, R_OVER_CAP, 0, self.max_freeze_ms)
        caps = self.capabilities
        if ((mode == MODE_HALO and not caps & CAP_HALO_TIMING)
                or (trigger != TRIG_HOST and not caps & (CAP_HAND_TRIGGER | CAP_FOOT_SWITCH))
                or (trigger == TRIG_DEAD_MAN and not caps & CAP_DEAD_MAN)):  # row 6
            return self._ack(FREEZE, R_UNSUPPORTED)
        if self.hw.supply_empty():  # row 7
            return self._ack(FREEZE, R_CARTRIDGE_EMPTY)
        # Accepted: §7.3 the last-freeze record is written now.
        self.nv.last_freeze = LastFreeze(txn=txn, requested_ms=duration_ms, valve_open_ms=0,
                                         halo_to_off_ms=NA_U32, end_reason=END_NONE,
                                         boot_count=self.nv.boot_count)
        self.freeze = Freeze(txn=txn, mode=mode, trigger=trigger, duration_ms=duration_ms)
        if trigger == TRIG_HOST:
            self._open_valve(now)
        else:
            # The valve opens on a press that comes after the acceptance (a trigger already
            # held when the FREEZE arrives does not open it).
            self._set_state(S_WAIT_TRIGGER)
        return self._ack(FREEZE, R_OK, 0, duration_ms)

    def _end_in(self, remaining_ms: int, now: float) -> tuple[int, bytes]:
        # §6.3 / §4.5: valid only in a running HALO freeze
        f = self.freeze
        if self.state != S_FREEZING or f is None or f.start is None:
            return self._ack(END_IN, R_NOT_FREEZING)
        if f.mode != MODE_HALO:  # in a running TIMED freeze
            return self._ack(END_IN, R_BAD_REQUEST)
        if f.halo_at is not None:  # a second END_IN in the same freeze
            return self._ack(END_IN, R_BAD_REQUEST)
        cap_at = f.start + f.duration_ms
        target = now + remaining_ms
        # deadline = min(now + remaining_ms, start + cap)
        f.cut_to_cap = target > cap_at
        f.deadline = cap_at if f.cut_to_cap else target
        f.halo_at = now
        left = _ms(f.deadline - now)
        self._raise(E_HALO_MARKED, now)
        return self._ack(END_IN, R_OK, 0, left)

    def _counters_payload(self, now: float) -> bytes:
        # §7.3; while a freeze runs the record reads end_reason NONE, halo N/A (set at acceptance)
        rec = self.nv.last_freeze
        f = self.freeze
        running = _ms(now - f.start) if f is not None and f.start is not None else 0
        return COUNTERS_S.pack(
            self.nv.boot_count, int(now) & 0xFFFFFFFF,
            self.total_valve_open_ms + running,  # since boot, the open valve's time included
            self.freezes_started, self.watchdog_trips,
            rec.txn, rec.requested_ms, self._record_valve_open_ms(now), rec.halo_to_off_ms,
            rec.end_reason, rec.boot_count, self.fault_flags())

    def _cal_write(self, fields: tuple[int, ...]) -> tuple[int, bytes]:
        # §7.5: BUSY while a freeze runs or waits; BAD_REQUEST for a gain outside 1..1 999 999 ppm
        # or |timer_ppm| > 10 000; otherwise every field is stored.
        if self.state in (S_WAIT_TRIGGER, S_FREEZING):
            return self._ack(CAL_WRITE, R_BUSY)
        cal = Calibration(*fields)
        gains_ok = all(1 <= g <= 1_999_999 for g in (cal.tip_gain_ppm, cal.tissue_gain_ppm))
        if not gains_ok or abs(cal.timer_ppm) > 10_000:
            return self._ack(CAL_WRITE, R_BAD_REQUEST)
        self.nv.calibration = cal
        self.clock.set_ppm(cal.timer_ppm)  # §7.5: the rate changes from now on, no jump
        # Valve latencies and flow are stored only: nothing here uses them (§6.2, §7.5).
        return self._ack(CAL_WRITE, R_OK)

    def _cause_gone(self, bit: int) -> bool:
        """§7.2: has the cause of a latched fault gone?"""
        if bit == F_WATCHDOG_TRIP:
            return True  # the host is talking
        if bit in (F_VALVE_STUCK_OPEN, F_VALVE_STUCK_CLOSED):
            return self.hw.sensed_open() == self.hw.commanded
        if bit == F_NO_FLOW:
            return not self.hw.nozzle_blocked
        return True  # SENSOR_*: no thermocouples on this device

    def _clear_fault(self, now: float) -> tuple[int, bytes]:
        if self.state in (S_WAIT_TRIGGER, S_FREEZING):  # §4.5
            return self._ack(CLEAR_FAULT, R_BUSY)
        cleared = 0
        for bit in (F_WATCHDOG_TRIP, F_NO_FLOW, F_SENSOR_OPEN, F_SENSOR_SHORT,
                    F_VALVE_STUCK_OPEN, F_VALVE_STUCK_CLOSED):
            if self.latched & bit and self._cause_gone(bit):
                cleared |= bit
        self.latched &= ~cleared
        if cleared & F_WATCHDOG_TRIP:  # §7.2 / §5.7: re-arms the watchdog
            self.watchdog_armed = True
            self.last_feed = now
        if cleared:
            self._raise(E_FAULT_CLEARED, now, fault_flags=cleared)
        if self.state == S_FAULT and not self.latched:
            self._set_state(S_READY)
        result = R_FAULT_LATCHED if self.latched else R_OK
        return self._ack(CLEAR_FAULT, result, self.fault_flags())

    # -- the trigger (§6.1) ------------------------------------------------------------------

    def set_trigger(self, held: bool) -> None:
        if held == self.hw.trigger_held:
            return
        self.hw.trigger_held = held
        now = self.clock.now()
        f = self.freeze
        if held and f is not None and self.state == S_WAIT_TRIGGER:
            self._open_valve(now)  # the valve opens when the trigger is pressed
        elif (not held and f is not None and self.state == S_FREEZING
              and f.trigger == TRIG_DEAD_MAN):
            # dead-man: closed the instant the trigger is released, whatever the host says
            self._end_freeze(now, END_TRIGGER_RELEASED)
        # TRIGGER_START: a later release is ignored
        self._telemetry_now = True
        self._emit(now)

    # -- time-driven behaviour ----------------------------------------------------------------

    def _run_freeze_timer(self, now: float) -> None:
        f = self.freeze
        if f is None or f.start is None or now < f.deadline:
            return
        # §6.2 timer reached (COMPLETED); §6.3 HALO: CAP if END_IN never came or was cut.
        if f.mode == MODE_HALO and (f.halo_at is None or f.cut_to_cap):
            self._end_freeze(now, END_CAP)
        else:
            self._end_freeze(now, END_COMPLETED)

    def _latch(self, bit: int, now: float) -> None:
        """§7.1: latched, FAULT_RAISED in every state; in a session FAULT; ends a freeze."""
        if self.latched & bit:
            return
        self.latched |= bit
        self._raise(E_FAULT_RAISED, now, fault_flags=bit)
        if self.freeze is not None:
            self._end_freeze(now, END_FAULT, next_state=S_FAULT)
        if self.session_open:
            self._set_state(S_FAULT)

    def _detect_faults(self, now: float) -> None:
        """§7.1 with the hardware model (a healthy device never raises these)."""
        sensed, commanded = self.hw.sensed_open(), self.hw.commanded
        if sensed != commanded:
            if self._disagree_since is None:
                self._disagree_since = now
            elif now - self._disagree_since >= VALVE_DISAGREE_MS:
                self._latch(F_VALVE_STUCK_OPEN if sensed else F_VALVE_STUCK_CLOSED, now)
        else:
            self._disagree_since = None
        if sensed:
            if self._sensed_open_since is None:
                self._sensed_open_since, self._flow_seen = now, False
            if self.hw.pressure_kpa() < SprayHardware.SUPPLY_KPA * 0.9:  # the pressure fell
                self._flow_seen = True
            elif not self._flow_seen and now - self._sensed_open_since >= NO_FLOW_MS:
                self._latch(F_NO_FLOW, now)
        else:
            self._sensed_open_since = None

    def _trip(self, now: float) -> None:
        """§5.7: close the valve (FREEZE_DONE WATCHDOG), count, latch, FAULT, WATCHDOG_TRIP."""
        self.last_trip_silence_ms = now - self.last_feed
        if self.freeze is not None:
            self._end_freeze(now, END_WATCHDOG, next_state=S_FAULT)
        self.watchdog_trips += 1
        self.latched |= F_WATCHDOG_TRIP
        self.watchdog_armed = False  # §5.7: one silence, one trip
        self._set_state(S_FAULT)
        self._telemetry_now = True
        self._raise(E_WATCHDOG_TRIP, now, fault_flags=F_WATCHDOG_TRIP)

    def poll(self) -> None:
        """Run the timers, then send what is due. Called after every wake-up."""
        now = self.clock.now()
        self._run_freeze_timer(now)
        self._detect_faults(now)
        # §5.7: trip when silent for longer than watchdog_ms (checked after reading the input)
        if self.session_open and self.watchdog_armed and now - self.last_feed > self.watchdog_ms:
            self._trip(now)
        self._emit(self.clock.now())

    def _telemetry_period(self) -> float:
        fast = self.state in (S_WAIT_TRIGGER, S_FREEZING) or self.hw.sensed_open()
        return TELEMETRY_FAST_MS if fast else TELEMETRY_SLOW_MS

    def _emit(self, now: float) -> None:
        # §5.5: events only while a session exists; new ones at once, repeats every 100 ms, as
        # BOUND_EVENT in a session of negotiated minor >= 1, EVENT in a minor-0 session.
        if self.session_open:
            bound = self.minor >= 1
            for ev in self.events:
                if ev.last_sent is None or now - ev.last_sent >= EVENT_REPEAT_MS:
                    self._send(BOUND_EVENT if bound else EVENT, ev.payload(bound))
                    ev.last_sent = now
        # §6.5: telemetry with or without a session: at once on a change, then periodically.
        period = self._telemetry_period()
        if self._telemetry_now or now >= self._next_telemetry:
            periodic = not self._telemetry_now
            self._send(TELEMETRY, self._telemetry_payload(now))
            self._telemetry_now = False
            # keep a fixed grid for periodic reports, restart it after an immediate one
            nxt = self._next_telemetry + period if periodic else now + period
            self._next_telemetry = nxt if nxt > now else now + period

    def _telemetry_payload(self, now: float) -> bytes:
        f = self.freeze
        elapsed = remaining = 0  # §6.5: 0 when the valve is not open
        if f is not None and f.start is not None:
            elapsed = _ms(now - f.start)
            remaining = _ms(f.deadline - now)
        valve = (1 if self.hw.commanded else 0) | (2 if self.hw.sensed_open() else 0)
        trigger = 1 if self.hw.trigger_held else 0
        return TELEMETRY_S.pack(
            int(now) & 0xFFFFFFFF, self.nv.boot_count, self.state, valve, trigger,
            self.nv.last_freeze.txn, elapsed, remaining, self.hw.pressure_kpa(),
            NA_TEMP, NA_TEMP, self.fault_flags())

    def next_wake_s(self) -> float:
        """Seconds until the next timer needs the thread (capped, so a wake-up is never far)."""
        times = [self._next_telemetry]
        if self._telemetry_now:
            return 0.0
        f = self.freeze
        if f is not None and f.start is not None:
            times.append(f.deadline)
        if self.session_open and self.watchdog_armed:
            times.append(self.last_feed + self.watchdog_ms + 0.2)
        if self.session_open:
            times.extend((ev.last_sent or 0.0) + EVENT_REPEAT_MS for ev in self.events)
        if self._disagree_since is not None:
            times.append(self._disagree_since + VALVE_DISAGREE_MS)
        if self._sensed_open_since is not None and not self._flow_seen:
            times.append(self._sensed_open_since + NO_FLOW_MS)
        return min(0.05, self.clock.seconds_until(min(times)))


# ---------------------------------------------------------------------------------------------
# The device on a pseudo-terminal
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceStatus:
    """A snapshot for tests (what a bench probe on the board would show)."""

    state: int
    valve_commanded: bool
    valve_sensed_open: bool
    boot_count: int
    fault_flags: int
    watchdog_trips: int
    freezes_started: int
    session_id: int
    last_freeze: LastFreeze
    last_trip_silence_ms: float | None
    pending_events: int


class PaperDevice:
    """The paper firmware served on a pty. ``path`` is the slave a host opens."""

    def __init__(self, *, nv: NonVolatile | None = None, identity: Identity | None = None,
                 hardware: SprayHardware | None = None) -> None:
        self.nv = nv if nv is not None else NonVolatile()
        self._identity = identity
        self._hardware = hardware
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self.path = ""
        self.dropped_frames = 0
        self.firmware: PaperFirmware | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        # The device keeps the slave open, like a USB device that stays plugged in while hosts
        # come and go; its writes never block (a line nobody reads drops frames, §2.1).
        fl = fcntl.fcntl(self._master, fcntl.F_GETFL)
        fcntl.fcntl(self._master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.firmware = PaperFirmware(self.nv, self._transmit, identity=self._identity, hardware=self._hardware)
        self._thread = threading.Thread(target=self._run, name="paper-device", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1

    @property
    def closed(self) -> bool:
        """True once close() has stopped the thread and closed the pty and the wake-up pipe."""
        return self._thread is None and self._master < 0 and self._slave < 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- board inputs ---------------------------------------------------------------------------

    def press_trigger(self) -> None:
        with self._lock:
            assert self.firmware is not None
            self.firmware.set_trigger(True)
        self._wake()

    def release_trigger(self) -> None:
        with self._lock:
            assert self.firmware is not None
            self.firmware.set_trigger(False)
        self._wake()

    def reboot(self) -> None:
        """§7.4: a reset (power cycle, MCU watchdog, DTR)."""
        with self._lock:
            assert self.firmware is not None
            self.firmware.reset()
        self._wake()

    @property
    def hardware(self) -> SprayHardware:
        assert self.firmware is not None
        return self.firmware.hw

    def status(self) -> DeviceStatus:
        with self._lock:
            fw = self.firmware
            assert fw is not None
            rec = fw.nv.last_freeze
            return DeviceStatus(
                state=fw.state, valve_commanded=fw.hw.commanded,
                valve_sensed_open=fw.hw.sensed_open(), boot_count=fw.nv.boot_count,
                fault_flags=fw.fault_flags(), watchdog_trips=fw.watchdog_trips,
                freezes_started=fw.freezes_started, session_id=fw.session_id,
                last_freeze=LastFreeze(**vars(rec)),
                last_trip_silence_ms=fw.last_trip_silence_ms, pending_events=len(fw.events))

    # -- the device thread ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def _transmit(self, frame: bytes) -> None:
        try:
            os.write(self._master, frame)
        except OSError:  # buffer full (nobody reading) or gone: the frame is lost on the line
            self.dropped_frames += 1

    def _run(self) -> None:
        fw = self.firmware
        assert fw is not None
        while not self._stop.is_set():
            with self._lock:
                timeout = fw.next_wake_s()
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            with self._lock:
                if self._stop.is_set():
                    return
                if self._wake_r in ready:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 512)
                if self._master in ready:
                    while True:
                        try:
                            data = os.read(self._master, 4096)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # no host has the port open: wait for one
                            time.sleep(0.005)
                            break
                        if not data:
                            break
                        fw.receive(data)
                fw.poll()
