"""Crash recovery: close a session the host never finished, with the device's own figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.records import RecordStore
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import Link
from firmware_bridge.messages import NOT_AVAILABLE_U32, EndReason, Fault


@dataclass(frozen=True, slots=True)
class Recovered:
    session_id: str
    cycle: int | None
    finding: str  # what the device said, in words
    valve_open_ms: int | None
    end_reason: str | None

    def line(self) -> str:
        return f"recovered session {self.session_id}: closed as INTERRUPTED; {self.finding}"


def unfinished_sessions(store: RecordStore) -> dict[str, list[Any]]:
    sessions: dict[str, list[Any]] = {}
    for event in store.events():
        if event.session_id is None:
            continue
        if event.kind == "session_started":
            sessions[event.session_id] = [event]
        elif event.session_id in sessions:
            sessions[event.session_id].append(event)
            if event.kind == "session_ended":
                del sessions[event.session_id]
    return sessions


def recover(store: RecordStore, link: Link | None) -> list[Recovered]:
    """Close every unfinished session; read the device for a freeze whose result was never recorded."""
    reports = []
    for session_id, events in unfinished_sessions(store).items():
        started = events[0].payload
        pending = _pending_freeze(events)
        finding, figures = "no freeze was in progress", {}
        if pending is not None:
            finding, figures = _ask_device(link, started.get("device"), pending)
            store.append("freeze_result", {**figures, "lesion_id": pending["lesion_id"], "cycle": pending["cycle"],
                                           "freeze_ms_requested": pending["requested_ms"], "freeze_ms_effective": pending["effective_ms"],
                                           "limited_by": pending["limited_by"], "recovered": True}, session_id)
        store.append("session_ended", {"status": "interrupted", "recovered": True, "finding": finding}, session_id)
        reports.append(Recovered(session_id, pending["cycle"] if pending else None, finding,
                                 figures.get("freeze_ms_device"), figures.get("end_reason")))
    return reports


def _pending_freeze(events: list[Any]) -> dict[str, Any] | None:
    pending: dict[str, Any] | None = None
    for event in events:
        if event.kind == "freeze_requested":
            pending = dict(event.payload)
        elif event.kind == "freeze_accepted" and pending is not None:
            pending["txn"] = event.payload["txn"]
        elif event.kind == "freeze_result":
            pending = None
    return pending


def _ask_device(link: Link | None, device: dict[str, Any] | None, pending: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    unknown = {"freeze_ms_device": None, "end_reason": None, "certainty": "unknown"}
    if device is None:
        return "the freeze was host-timed (manual); its duration is unknown", {**unknown, "measured_by": "host"}
    if link is None or link.identity is None or link.identity.serial != device["serial"]:
        return (f"device {device['serial']} is not connected; the freeze's outcome is UNKNOWN", unknown)
    try:
        counters = link.counters()
    except BridgeError as exc:
        return f"the device could not be read ({exc.problem}); outcome UNKNOWN", unknown
    same_boot = counters.last_boot_count == pending.get("boot_count")
    if same_boot and "txn" in pending and counters.last_txn == pending["txn"]:
        halo = None if counters.last_halo_to_off_ms == NOT_AVAILABLE_U32 else counters.last_halo_to_off_ms
        cleared = ""
        if counters.last_end_reason is EndReason.WATCHDOG and counters.fault_flags & Fault.WATCHDOG_TRIP:
            cleared = "; the device's watchdog fault, caused by this host's silence, was cleared"
            try:
                link.clear_fault()  # recorded below: the trip was this host's silence, now accounted for
                link.wait_for_telemetry()
            except BridgeError:
                pass
        return (
            f"cycle {pending['cycle']}: the device measured {counters.last_valve_open_ms} ms of {pending['effective_ms']} ms "
            f"planned, ended {counters.last_end_reason.name}{cleared}",
            {"freeze_ms_device": counters.last_valve_open_ms, "halo_to_off_ms": halo, "end_reason": counters.last_end_reason.name,
             "certainty": "reconciled", "measured_by": "device", "txn": counters.last_txn},
        )
    if counters.boot_count == pending.get("boot_count") and counters.freezes_started == pending.get("freezes_started_before"):
        return (f"cycle {pending['cycle']}: the device never started that freeze",
                {"freeze_ms_device": 0, "end_reason": "NOT_STARTED", "certainty": "reconciled", "measured_by": "device"})
    return "the device's last freeze is not the one recorded (it was used or restarted since); outcome UNKNOWN", unknown
