"""Typed wire messages: one frozen dataclass and one little-endian struct layout per message type.

The layouts here ARE the protocol (docs/protocol.md §4 is generated from the same table by
hand and checked against it in tests). Each message names the minor version that added it;
``schema_hash(minor)`` covers every layout of that version, so two ends built from different
tables refuse each other at the handshake instead of mis-decoding.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import typing
from dataclasses import dataclass
from typing import ClassVar

from firmware_bridge.codec import crc32

PROTO_MAJOR = 1
PROTO_MINOR = 1  # 1.1 added BYE and the session-bound EVENT (docs/protocol.md §11)
SERIAL_LEN = 16
NOT_AVAILABLE_U32 = 0xFFFFFFFF
NOT_AVAILABLE_U16 = 0xFFFF
NOT_AVAILABLE_TEMP = 0x7FFF  # in a centi-degree Celsius i16 field


class DecodeError(ValueError):
    """A frame passed its CRC but its payload does not match the message layout."""


class DeviceKind(enum.IntEnum):
    SPRAY = 1
    PROBE = 2


class Cryogen(enum.IntEnum):
    N2O = 1
    LN2 = 2


class Capability(enum.IntFlag):
    PRESSURE_SENSOR = 0x0001
    TIP_THERMOCOUPLE = 0x0002
    TISSUE_THERMOCOUPLE = 0x0004
    HAND_TRIGGER = 0x0008
    FOOT_SWITCH = 0x0010
    HALO_TIMING = 0x0020
    DEAD_MAN = 0x0040


class DeviceState(enum.IntEnum):
    NO_SESSION = 0  # booted, valve closed, waiting for HELLO
    READY = 1  # session open, valve closed
    WAIT_TRIGGER = 2  # a FREEZE is accepted and waits for the clinician's trigger
    FREEZING = 3  # valve commanded open, device timer running
    FAULT = 4  # a latched fault holds the valve closed until CLEAR_FAULT


class FreezeMode(enum.IntEnum):
    TIMED = 0  # duration_ms is the freeze time
    HALO = 1  # duration_ms is only the cap; END_IN sets the real end once the halo is marked


class TriggerMode(enum.IntEnum):
    HOST = 0  # the valve opens when the FREEZE is accepted
    TRIGGER_START = 1  # the valve opens on the trigger press; release is ignored
    DEAD_MAN = 2  # the valve opens on press and closes the instant the trigger is released


class Result(enum.IntEnum):
    OK = 0
    BUSY = 1
    OVER_CAP = 2
    FAULT_LATCHED = 3
    BAD_REQUEST = 4
    UNSUPPORTED = 5
    NOT_FREEZING = 6
    NO_SESSION = 7
    CARTRIDGE_EMPTY = 8
    VERSION_MISMATCH = 9


class EndReason(enum.IntEnum):
    NONE = 0  # no freeze has ended yet
    COMPLETED = 1  # the device timer ran out (or END_IN's deadline)
    STOPPED = 2  # host STOP
    WATCHDOG = 3  # host silent longer than the watchdog
    CAP = 4  # halo freeze reached its cap without END_IN
    TRIGGER_RELEASED = 5  # dead-man trigger released
    CARTRIDGE_EMPTY = 6
    FAULT = 7  # stuck valve, no flow, sensor fault
    RESET = 8  # the device rebooted while the valve was open (from non-volatile memory)
    NEW_SESSION = 9  # a HELLO arrived while freezing: a new host means the old one is gone


class Fault(enum.IntFlag):
    WATCHDOG_TRIP = 0x0001
    CARTRIDGE_LOW = 0x0002
    CARTRIDGE_EMPTY = 0x0004
    NO_FLOW = 0x0008
    SENSOR_OPEN = 0x0010
    SENSOR_SHORT = 0x0020
    VALVE_STUCK_OPEN = 0x0040
    VALVE_STUCK_CLOSED = 0x0080


LATCHING_FAULTS = (
    Fault.WATCHDOG_TRIP | Fault.NO_FLOW | Fault.SENSOR_OPEN | Fault.SENSOR_SHORT
    | Fault.VALVE_STUCK_OPEN | Fault.VALVE_STUCK_CLOSED
)


class EventCode(enum.IntEnum):
    FREEZE_STARTED = 1
    FREEZE_DONE = 2
    FAULT_RAISED = 3
    FAULT_CLEARED = 4
    WATCHDOG_TRIP = 5
    CARTRIDGE_LOW = 6
    CARTRIDGE_EMPTY = 7
    HALO_MARKED = 8


class Message:
    """Base of every wire message; ``MSG_TYPE`` and ``LAYOUT`` are set by ``@message``."""

    __slots__ = ()
    MSG_TYPE: ClassVar[int]
    LAYOUT: ClassVar[struct.Struct]
    FROM_DEVICE: ClassVar[bool]
    SINCE_MINOR: ClassVar[int]  # the protocol minor version that added this message
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[typing.Any]]]  # every message is a dataclass
    _converters: ClassVar[tuple[typing.Callable[[typing.Any], typing.Any], ...]]

    def pack(self) -> bytes:
        values = []
        for item in dataclasses.astuple(self):
            values.append(item.encode("ascii") if isinstance(item, str) else int(item))
        try:
            return self.LAYOUT.pack(*values)
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: a field is out of range: {exc}") from exc

    @classmethod
    def unpack(cls, payload: bytes) -> typing.Self:
        if len(payload) != cls.LAYOUT.size:
            raise DecodeError(f"{cls.__name__}: payload is {len(payload)} bytes, layout needs {cls.LAYOUT.size}")
        try:
            return cls(*(convert(raw) for convert, raw in zip(cls._converters, cls.LAYOUT.unpack(payload), strict=True)))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"{cls.__name__}: {exc}") from exc


REGISTRY: dict[int, type[Message]] = {}


def _converter(hint: typing.Any) -> typing.Callable[[typing.Any], typing.Any]:
    if hint is str:
        return lambda raw: raw.rstrip(b"\x00").decode("ascii")
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum | enum.IntFlag):
        return hint  # an IntFlag keeps unknown bits: a newer device may report more
    return int


_M = typing.TypeVar("_M", bound="type[Message]")


@typing.dataclass_transform(frozen_default=True)
def message(msg_type: int, layout: str, since_minor: int = 0) -> typing.Callable[[_M], _M]:
    """Register a wire message: a frozen dataclass with its type byte, struct layout and version.
    ``dataclass_transform`` lets type checkers see each message's constructor."""

    def register(declared: _M) -> _M:
        cls = typing.cast(_M, dataclass(frozen=True, slots=True)(declared))
        hints = typing.get_type_hints(cls)
        cls.MSG_TYPE = msg_type
        cls.LAYOUT = struct.Struct(layout)
        cls.FROM_DEVICE = bool(msg_type & 0x80)
        cls.SINCE_MINOR = since_minor
        cls._converters = tuple(_converter(hints[f.name]) for f in dataclasses.fields(cls))
        if len(cls._converters) != len(cls.LAYOUT.unpack(bytes(cls.LAYOUT.size))):
            raise TypeError(f"{cls.__name__}: layout {layout!r} does not match its fields")
        if msg_type in REGISTRY:
            raise TypeError(f"message type 0x{msg_type:02X} registered twice")
        REGISTRY[msg_type] = cls
        return cls

    return register


# ---- host -> device -------------------------------------------------------------------------


@message(0x01, "<BBHI")
class Hello(Message):
    proto_major: int
    proto_minor: int
    watchdog_ms: int  # requested host-silence timeout; 0 = device default (250 ms)
    host_nonce: int


@message(0x02, "<B")
class Heartbeat(Message):
    host_state: int  # the controller's state code, for the device log; any value feeds the watchdog


@message(0x03, "<BBI")
class Freeze(Message):
    mode: FreezeMode
    trigger: TriggerMode
    duration_ms: int  # TIMED: freeze time; HALO: cap for the whole spray


@message(0x04, "<I")
class EndIn(Message):
    remaining_ms: int  # halo marked: end this many ms from now (never later than the cap)


@message(0x05, "<B")
class Stop(Message):
    reason: int  # host's reason code, logged by the device; STOP is obeyed whatever it says


@message(0x06, "<")
class GetCounters(Message):
    pass


@message(0x07, "<")
class CalRead(Message):
    pass


@message(0x08, "<iIhihiHHII")
class CalWrite(Message):
    timer_ppm: int  # correction applied to the device clock, parts per million
    flow_mg_per_s: int  # measured cryogen flow; 0 = not calibrated
    tip_offset_cdeg: int  # centi-degrees Celsius added after the gain
    tip_gain_ppm: int  # 1_000_000 = unity gain
    tissue_offset_cdeg: int
    tissue_gain_ppm: int
    valve_open_latency_ms: int
    valve_close_latency_ms: int
    calibrated_on_day: int  # days since 1970-01-01 (UTC); 0 = never
    due_on_day: int


@message(0x09, "<")
class ClearFault(Message):
    pass


@message(0x0A, "<H")
class EventAck(Message):
    event_id: int


@message(0x0B, "<B", since_minor=1)
class Bye(Message):
    """The host ends its session: the device closes the valve, answers, and runs no watchdog after."""

    reason: int  # informative, like STOP's


# ---- device -> host -------------------------------------------------------------------------


@message(0x81, "<BBBBBBB16sIIHHHII")
class HelloAck(Message):
    proto_major: int
    proto_minor: int
    kind: DeviceKind
    cryogen: Cryogen
    fw_major: int
    fw_minor: int
    fw_patch: int
    serial: str
    boot_count: int
    max_freeze_ms: int
    watchdog_ms: int  # the timeout the device will enforce for this session
    capabilities: Capability
    fault_flags: int
    schema_hash: int
    host_nonce: int


@message(0x82, "<BBHI")
class Ack(Message):
    request_type: int
    result: Result
    detail16: int
    detail32: int  # FREEZE: accepted duration; STOP: valve-open ms of the stopped freeze


@message(0x83, "<IIBBBHIIHhhH")
class Telemetry(Message):
    uptime_ms: int
    boot_count: int
    state: DeviceState
    valve: int  # bit0 commanded open, bit1 sensed open
    trigger: int  # bit0 hand trigger held, bit1 foot switch held
    freeze_txn: int  # txn of the current or last freeze
    elapsed_ms: int  # valve-open time of the current freeze, device clock
    remaining_ms: int  # until the device's own deadline; 0 when not freezing
    pressure_kpa: int  # NOT_AVAILABLE_U16 without a pressure sensor
    tip_cdeg: int  # centi-degrees Celsius; NOT_AVAILABLE_TEMP without that thermocouple
    tissue_cdeg: int
    fault_flags: int


@message(0x84, "<HBBHHIIII")
class Event(Message):
    event_id: int  # per boot, from 1; the device repeats it until EVENT_ACK
    code: EventCode
    end_reason: EndReason
    freeze_txn: int
    fault_flags: int
    requested_ms: int
    valve_open_ms: int  # device-measured
    halo_to_off_ms: int  # NOT_AVAILABLE_U32 unless a halo was marked
    uptime_ms: int


@message(0x85, "<IIQIIHIIIBIH")
class Counters(Message):
    boot_count: int
    uptime_ms: int
    total_valve_open_ms: int  # since boot
    freezes_started: int  # since boot
    watchdog_trips: int  # since boot
    last_txn: int
    last_requested_ms: int
    last_valve_open_ms: int
    last_halo_to_off_ms: int
    last_end_reason: EndReason  # NONE while that freeze still runs, RESET if a reboot cut it
    last_boot_count: int  # boot in which the last freeze ran
    fault_flags: int


@message(0x86, "<iIhihiHHII")
class CalData(Message):
    timer_ppm: int
    flow_mg_per_s: int
    tip_offset_cdeg: int
    tip_gain_ppm: int
    tissue_offset_cdeg: int
    tissue_gain_ppm: int
    valve_open_latency_ms: int
    valve_close_latency_ms: int
    calibrated_on_day: int
    due_on_day: int


@message(0x87, "<HBBHHIIIIII", since_minor=1)
class BoundEvent(Message):
    """1.1's EVENT: the 1.0 fields plus the boot and the session it was raised in, so an event from
    another boot or an earlier host's session can never be taken for this session's."""

    event_id: int
    code: EventCode
    end_reason: EndReason
    freeze_txn: int
    fault_flags: int
    requested_ms: int
    valve_open_ms: int
    halo_to_off_ms: int
    uptime_ms: int
    boot_count: int  # the device boot the event was raised in
    session_id: int  # host_nonce of the session it was raised in; 0 when raised with no session open

    def unbound(self) -> Event:
        """The 1.0 fields alone: what the rest of the host reads."""
        return Event(self.event_id, self.code, self.end_reason, self.freeze_txn, self.fault_flags, self.requested_ms,
                     self.valve_open_ms, self.halo_to_off_ms, self.uptime_ms)


def schema_text(minor: int = PROTO_MINOR) -> str:
    """The text whose CRC-32 is the schema hash: every message of that version, sorted by type."""
    return ";".join(
        f"{msg_type:02X}:{cls.__name__}:{cls.LAYOUT.format}:{','.join(f.name for f in dataclasses.fields(cls))}"
        for msg_type, cls in sorted(REGISTRY.items())
        if minor >= cls.SINCE_MINOR
    )


def schema_hash(minor: int = PROTO_MINOR) -> int:
    return crc32(schema_text(minor).encode("ascii"))


SCHEMA_HASH = schema_hash()
SCHEMA_HASHES = {minor: schema_hash(minor) for minor in range(PROTO_MINOR + 1)}  # every version this host speaks


def decode_message(msg_type: int, payload: bytes) -> Message:
    cls = REGISTRY.get(msg_type)
    if cls is None:
        raise DecodeError(f"unknown message type 0x{msg_type:02X}")
    return cls.unpack(payload)
