"""Supervise one device-timed freeze from the controller's own loop.

The device times the freeze and closes the valve; this loop only heartbeats (so a hung
controller lets the device's watchdog act), watches telemetry, and waits for the device's
FREEZE_DONE report, whose measured valve-open time is the only duration it returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge.errors import BridgeError, CommandTimeout
from firmware_bridge.link import Link, LinkDown
from firmware_bridge.messages import NOT_AVAILABLE_U32, EndReason, Event, EventCode, FreezeMode, TriggerMode
from firmware_bridge.session import DeviceEventReceived, RebootDetected, TelemetryReceived


class Certainty(enum.Enum):
    DEVICE_REPORTED = "device_reported"  # FREEZE_DONE from the device: the figures are the device's
    RECONCILED = "reconciled"  # the report was lost; the figures come from the device's counters
    UNKNOWN = "unknown"  # the device could not be asked; nothing is assumed


@dataclass(frozen=True, slots=True)
class FreezeOutcome:
    txn: int | None
    requested_ms: int
    valve_open_ms: int | None  # device-measured; None when unknown
    halo_to_off_ms: int | None
    end_reason: EndReason | None
    certainty: Certainty
    host_elapsed_ms: float  # host monotonic cross-check only, never recorded as the dose
    events: tuple[Event, ...]  # other device events seen during the freeze (faults, cartridge)


def supervise_freeze(
    link: Link,
    duration_ms: int,
    *,
    mode: FreezeMode = FreezeMode.TIMED,
    trigger: TriggerMode = TriggerMode.HOST,
    host_state: int = 3,
    on_telemetry: Callable[[TelemetryReceived], None] | None = None,
    on_tick: Callable[[Link], None] | None = None,
) -> FreezeOutcome:
    """Run one freeze to its end as reported by the device. Never resends a FREEZE."""
    clock = link.clock
    started = clock.monotonic()
    seen: list[Event] = []

    def outcome(event: Event | None, certainty: Certainty, txn: int | None) -> FreezeOutcome:
        elapsed = (clock.monotonic() - started) * 1000
        if event is None:
            return FreezeOutcome(txn, duration_ms, None, None, None, certainty, elapsed, tuple(seen))
        halo = None if event.halo_to_off_ms == NOT_AVAILABLE_U32 else event.halo_to_off_ms
        return FreezeOutcome(txn, duration_ms, event.valve_open_ms, halo, event.end_reason, certainty, elapsed, tuple(seen))

    try:
        txn = link.freeze(duration_ms, mode, trigger)
    except CommandTimeout as exc:  # the device may or may not be freezing
        return reconcile(link, exc.txn, duration_ms, started, seen)
    last_telemetry = None
    while True:
        link.heartbeat(host_state)
        if on_tick is not None:
            on_tick(link)
        latest = link.latest_telemetry()
        if latest is not None and latest is not last_telemetry:
            last_telemetry = latest
            if on_telemetry is not None:
                on_telemetry(latest)
        item = link.next_event(link.heartbeat_period_s)
        if isinstance(item, DeviceEventReceived):
            event = item.event
            if event.code is EventCode.FREEZE_DONE and event.freeze_txn == txn:
                return outcome(event, Certainty.DEVICE_REPORTED, txn)
            seen.append(event)
        elif isinstance(item, (RebootDetected, LinkDown)):
            return reconcile(link, txn, duration_ms, started, seen)


def reconcile(link: Link, txn: int | None, duration_ms: int, started: float, seen: list[Event]) -> FreezeOutcome:
    """The freeze's report never came: ask the device what it did, and assume nothing.

    A freeze still running when its report should have come is stopped first: the host has lost
    track of it, and stopping is the safe side.
    """
    elapsed = (link.clock.monotonic() - started) * 1000
    unknown = FreezeOutcome(txn, duration_ms, None, None, None, Certainty.UNKNOWN, elapsed, tuple(seen))
    try:
        if link.needs_handshake:  # the device rebooted: it answers nothing else until HELLO
            link.handshake()
        counters = link.counters()
        if counters.last_end_reason is EndReason.NONE and counters.last_txn:
            link.stop()
            counters = link.counters()
    except BridgeError:
        return unknown
    if txn is None or counters.last_txn != txn:
        return unknown
    halo = None if counters.last_halo_to_off_ms == NOT_AVAILABLE_U32 else counters.last_halo_to_off_ms
    return FreezeOutcome(
        txn, duration_ms, counters.last_valve_open_ms, halo, counters.last_end_reason, Certainty.RECONCILED, elapsed, tuple(seen)
    )
