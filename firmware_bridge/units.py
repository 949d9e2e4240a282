"""The wire's units and sentinels turned into the host's values, in one place: a figure the device
says is not available becomes None, centi-degrees become degrees, a day number becomes a date,
fault flags become names, and the host-silence watchdog scales with virtual time."""

from __future__ import annotations

from datetime import date, timedelta

from firmware_bridge.messages import NOT_AVAILABLE_TEMP, NOT_AVAILABLE_U16, NOT_AVAILABLE_U32, Fault

DAY_ZERO = date(1970, 1, 1)  # calibrated_on_day / due_on_day count days from here (docs/protocol.md)
DEFAULT_WATCHDOG_MS = 250  # the protocol's default host-silence timeout
HEARTBEATS_PER_WATCHDOG = 5  # a host beats this often per watchdog period: a lost beat or two never trips it
MAX_SCALED_WATCHDOG_MS = 60_000  # the longest a virtual-time run asks for (fits HELLO's u16)


def available_u32(value: int) -> int | None:
    """A u32 figure, or None where the device says "not available" (e.g. halo_to_off_ms of a timed freeze)."""
    return None if value == NOT_AVAILABLE_U32 else value


def available_u16(value: int) -> int | None:
    """A u16 figure (e.g. pressure_kpa), or None on a device without that sensor."""
    return None if value == NOT_AVAILABLE_U16 else value


def celsius(cdeg: int) -> float | None:
    """A centi-degree Celsius reading in degrees, or None where that thermocouple is not fitted."""
    return None if cdeg == NOT_AVAILABLE_TEMP else cdeg / 100


def day_number(day: date) -> int:
    """The protocol's day number of a date (days since 1970-01-01)."""
    return (day - DAY_ZERO).days


def date_of_day(number: int) -> date | None:
    """The date of a protocol day number; 0 means never set."""
    return DAY_ZERO + timedelta(days=number) if number else None


def fault_names(flags: Fault | int) -> str:
    """Fault flags as their names ("CARTRIDGE_EMPTY, WATCHDOG_TRIP"), or the raw value if none is known."""
    flags = Fault(flags)
    return ", ".join(f.name for f in Fault if f & flags and f.name) or f"0x{int(flags):04X}"


def scaled_watchdog_ms(scale: float, base_ms: int = DEFAULT_WATCHDOG_MS) -> int:
    """The watchdog to ask for when time runs `scale` times faster than the wall, so it stays
    base_ms of device time; never shorter than base_ms, never longer than MAX_SCALED_WATCHDOG_MS."""
    return min(MAX_SCALED_WATCHDOG_MS, round(base_ms * max(1.0, scale)))
