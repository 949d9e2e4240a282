"""Recovery at every connection: close what an earlier host left open, with the device's own figures.

Run by the UI, `givre run`, `info`, `selftest` and `calibrate` right after the handshake. A session
left unfinished (host killed, or a cycle the device could not be read for) is settled from the
device by controller/reconcile.py's rule when the device that ran it is the one connected, and
stays open otherwise. A watchdog trip that no open session owns (a 1.0 device, which has no BYE,
trips after every exit) is recorded with the device's counters and cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.reconcile import FreezeFacts, Outcome, read_and_reconcile
from controller.records import Event, RecordStore
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import Link
from firmware_bridge.messages import LATCHING_FAULTS, Fault


@dataclass(frozen=True, slots=True)
class Recovered:
    session_id: str | None
    cycle: int | None
    finding: str  # what the device said, in words
    valve_open_ms: int | None
    end_reason: str | None
    closed: bool = True  # False: the session stays open until its device can be read

    def line(self) -> str:
        if self.session_id is None:
            return self.finding
        if not self.closed:
            return f"session {self.session_id} stays open: {self.finding}"
        return f"recovered session {self.session_id}: closed as INTERRUPTED; {self.finding}"


def connect(url: str, clock: Clock = SYSTEM_CLOCK) -> Link:
    """Open the device and handshake (the watchdog scaled with virtual time, so it stays 250 ms of
    wall time), then wait for its first telemetry so nothing is judged on no data."""
    link = Link.open(url, clock=clock, watchdog_ms=min(60_000, round(250 * max(1.0, clock.scale))))
    try:
        link.wait_for_telemetry()
    except BaseException:
        link.close()
        raise
    return link


def connect_and_recover(url: str, store: RecordStore, clock: Clock = SYSTEM_CLOCK) -> tuple[Link, list[Recovered]]:
    """Every command that talks to a device starts here: what an earlier host left open is settled first."""
    link = connect(url, clock)
    try:
        return link, recover(store, link)
    except BaseException:
        link.close()
        raise


def unfinished_sessions(store: RecordStore) -> dict[str, list[Event]]:
    sessions: dict[str, list[Event]] = {}
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
    """Settle every unfinished session the connected device (or none) can settle; then account for
    a watchdog trip nobody owns."""
    reports: list[Recovered] = []
    awaiting: set[str] = set()
    settled_here: str | None = None  # the last session of the connected device closed now: its host went silent
    serial = link.identity.serial if link is not None and link.identity is not None else None
    for session_id, events in unfinished_sessions(store).items():
        report = _settle(store, link, session_id, events)
        reports.append(report)
        session_serial = str((events[0].payload.get("device") or {}).get("serial"))
        if not report.closed:
            awaiting.add(session_serial)
        elif session_serial == serial:
            settled_here = session_id
    if link is not None and serial not in awaiting:
        reports += _account_for_trip(store, link, settled_here)
    return reports


def _settle(store: RecordStore, link: Link | None, session_id: str, events: list[Event]) -> Recovered:
    device = events[0].payload.get("device")
    pending = _pending_freeze(events)
    if pending is None:
        store.append("session_ended", {"status": "interrupted", "recovered": True, "finding": "no freeze was in progress"}, session_id)
        return Recovered(session_id, None, "no freeze was in progress", None, None)
    cycle = pending["cycle"]
    if device is None:
        figures: dict[str, Any] = {"freeze_ms_device": None, "end_reason": None, "certainty": "unknown", "measured_by": "host"}
        finding = "the freeze was host-timed (manual); its duration is unknown"
    else:
        outcome = read_and_reconcile(link, _facts(device, pending))
        if not outcome.settled:
            return Recovered(session_id, cycle, f"cycle {cycle}: {outcome.why}", None, None, closed=False)
        figures = _figures(outcome)
        finding = f"cycle {cycle} ({pending['effective_ms']} ms planned): {outcome.why}"
    store.append("freeze_result", {**figures, "lesion_id": pending["lesion_id"], "cycle": cycle, "why": finding,
                                   "freeze_ms_requested": pending["requested_ms"], "freeze_ms_effective": pending["effective_ms"],
                                   "limited_by": pending["limited_by"], "txn": pending.get("txn"), "recovered": True}, session_id)
    store.append("session_ended", {"status": "interrupted", "recovered": True, "finding": finding}, session_id)
    return Recovered(session_id, cycle, finding, figures.get("freeze_ms_device"), figures.get("end_reason"))


def _figures(outcome: Outcome) -> dict[str, Any]:
    return {"freeze_ms_device": outcome.valve_open_ms, "halo_to_off_ms": outcome.halo_to_off_ms, "end_reason": outcome.end_reason,
            "certainty": outcome.certainty, "measured_by": "device", "cartridge_seconds": (outcome.valve_open_ms or 0) / 1000}


def _pending_freeze(events: list[Event]) -> dict[str, Any] | None:
    """The last freeze asked for and never given a result, with what the record knows of it."""
    pending: dict[str, Any] | None = None
    started_txns: set[int] = set()
    for event in events:
        p = event.payload
        if event.kind == "freeze_requested":
            pending = dict(p)
        elif event.kind == "device_event" and p.get("code") == "FREEZE_STARTED" and not p.get("earlier_session"):
            started_txns.add(p.get("txn", -1))
        elif pending is None or p.get("cycle") != pending["cycle"]:
            continue
        elif event.kind == "freeze_accepted":
            pending |= {"txn": p["txn"], "accepted": True}
        elif event.kind == "freeze_unanswered":
            pending["txn"] = p["txn"]
        elif event.kind == "freeze_result":
            pending = None
    if pending is not None:
        pending["started_seen"] = pending.get("txn") in started_txns
    return pending


def _facts(device: dict[str, Any], pending: dict[str, Any]) -> FreezeFacts:
    return FreezeFacts(
        serial=pending.get("serial") or device["serial"], boot_count=pending.get("boot_count", device.get("boot_count", -1)),
        txn=pending.get("txn"), accepted=bool(pending.get("accepted")), started_seen=bool(pending.get("started_seen")),
        freezes_started_before=pending.get("freezes_started_before"), last_txn_before=pending.get("last_txn_before"),
    )


def _account_for_trip(store: RecordStore, link: Link, owner: str | None) -> list[Recovered]:
    """A latched watchdog trip that no open session owns: an earlier host left without ending its
    session (a 1.0 device has no BYE) or went silent between freezes. Record the device's figures,
    then clear it, unless another latched fault needs the clinician's eyes first."""
    assert link.identity is not None
    try:
        counters = link.counters()
    except BridgeError:
        return []
    if not counters.fault_flags & Fault.WATCHDOG_TRIP:
        return []
    others = Fault(counters.fault_flags) & LATCHING_FAULTS & ~Fault.WATCHDOG_TRIP
    if owner is not None:
        why = f"the host of session {owner} went silent (it was stopped or killed)"
    elif link.identity.session_minor < 1:
        why = "this device speaks protocol 1.0, which has no way to end a session: it trips after every exit"
    else:
        why = "an earlier host went silent without ending its session"
    store.append("watchdog_trip_accounted", {
        "serial": link.identity.serial, "protocol": link.identity.protocol, "boot_count": counters.boot_count,
        "watchdog_trips": counters.watchdog_trips, "last_txn": counters.last_txn, "last_end_reason": counters.last_end_reason.name,
        "last_valve_open_ms": counters.last_valve_open_ms, "last_boot_count": counters.last_boot_count, "why": why,
        "cleared": not others, "session": owner,
    })
    summary = (f"device {link.identity.serial}: a watchdog trip no open session owns ({why}; boot {counters.boot_count}, "
               f"last freeze ended {counters.last_end_reason.name}) was recorded")
    if others:
        return [Recovered(None, None, summary + f"; not cleared: {', '.join(f.name for f in Fault if f & others and f.name)} also latched",
                          None, None)]
    try:
        link.clear_fault()
        link.wait_for_telemetry()
    except BridgeError as exc:
        return [Recovered(None, None, summary + f"; clearing it failed ({exc.problem})", None, None)]
    return [Recovered(None, None, summary + " and cleared", None, None)]
