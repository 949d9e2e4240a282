"""Recovery at every connection: close what an earlier host left open, with the device's own figures.

Run by the UI, `givre run`, `info`, `selftest` and `calibrate` right after the handshake. A session
left unfinished (host killed, or a cycle the device could not be read for) is settled from the
device by controller/procedure/reconcile.py's rule when the device that ran it is the one connected, and
stays open otherwise. A watchdog trip that no open session owns (a 1.0 device, which has no BYE,
trips after every exit) is recorded with the device's counters and cleared.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from controller.config import Config
from controller.procedure.reconcile import DeviceReport, FreezeFacts, Outcome, read_and_reconcile
from controller.records.certainty import Certainty
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordNotSaved, RecordStore, StoredEvent
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.errors import BridgeError, NotAGivreDevice
from firmware_bridge.link import DeviceIdentity, Link
from firmware_bridge.messages import LATCHING_FAULTS, Fault
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.units import available_u32, fault_names, scaled_watchdog_ms

EARLY_EVENTS_S = 0.25  # events a device kept from an earlier session come within 100 ms of HELLO_ACK (§5.5)


@dataclass(frozen=True, slots=True)
class Recovered:
    session_id: str | None
    finding: str  # what the device said, in words
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
    watchdog_ms = scaled_watchdog_ms(clock.scale)
    link = Link.open(url, clock=clock, watchdog_ms=watchdog_ms)
    try:
        link.wait_for_telemetry()
        if link.needs_handshake:  # it reset just after the handshake (e.g. the port's DTR): once more
            link.handshake(watchdog_ms=watchdog_ms)
            link.wait_for_telemetry()
        if link.latest_telemetry() is None:
            raise NotAGivreDevice(url, "the device answered the handshake but sends no telemetry",
                                  "Check the device's firmware against docs/protocol.md §6.5 (givre conformance)")
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


def unfinished_sessions(store: RecordStore) -> tuple[dict[str, list[StoredEvent]], dict[int, str]]:
    """Sessions never ended, with their events; and every record session by its device session id."""
    sessions: dict[str, list[StoredEvent]] = {}
    by_device_session: dict[int, str] = {}
    for event in store.events():
        if event.session_id is None:
            continue
        if event.kind == "session_started":
            sessions[event.session_id] = [event]
            device_session = (event.payload.get("device") or {}).get("device_session")
            if device_session:
                by_device_session[device_session] = event.session_id
        elif event.session_id in sessions:
            sessions[event.session_id].append(event)
            if event.kind == "session_ended":
                del sessions[event.session_id]
    return sessions, by_device_session


def recover(store: RecordStore, link: Link | None, early_events_s: float = EARLY_EVENTS_S) -> list[Recovered]:
    """File what the device kept from earlier sessions; settle every unfinished session the
    connected device (or none) can settle; then account for a watchdog trip nobody owns.

    ``early_events_s``: how long to collect the events that come with the handshake. The UI passes
    0 (its controller loop files later ones as they come) so that it opens at once."""
    early = _early_events(link, early_events_s)
    open_sessions, by_device_session = unfinished_sessions(store)
    for item in early:  # under its session while that session is open; a closed record is never appended to
        owner = by_device_session.get(item.device_session or 0)
        file_device_event(store, item, link.identity if link else None, owner if owner in open_sessions else None)
    reports: list[Recovered] = []
    awaiting: set[str] = set()
    settled_here: str | None = None  # the last session of the connected device closed now: its host went silent
    serial = link.identity.serial if link is not None and link.identity is not None else None
    for session_id, events in unfinished_sessions(store)[0].items():
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


def _early_events(link: Link | None, seconds: float) -> list[DeviceEventReceived]:
    """The device's events that come just after the handshake: kept from an earlier session, or raised since."""
    if link is None:
        return []
    items = link.heartbeat_for(seconds) if seconds > 0 else list(iter(lambda: link.next_event(0), None))
    return [item for item in items if isinstance(item, DeviceEventReceived)]


def device_event_record(item: DeviceEventReceived, identity: DeviceIdentity | None) -> dict[str, Any]:
    """A device event as the record keeps it, with the device, boot and device session it belongs to,
    so a txn drawn again by a later link can never match another freeze's event."""
    event = item.event
    own_session = identity.device_session if identity is not None and not item.earlier_session else None
    record: dict[str, Any] = {
        "code": event.code.name, "end_reason": event.end_reason.name, "txn": event.freeze_txn, "fault_flags": event.fault_flags,
        "valve_open_ms": event.valve_open_ms, "halo_to_off_ms": available_u32(event.halo_to_off_ms),
        "device_uptime_ms": event.uptime_ms, "device_session": item.device_session if item.device_session is not None else own_session,
        "serial": identity.serial if identity else None, "boot_count": identity.boot_count if identity else None,
    }
    if item.earlier_session:
        record["earlier_session"] = True
    return record


def file_device_event(store: RecordStore, item: DeviceEventReceived, identity: DeviceIdentity | None, session_id: str | None) -> None:
    """Record an event outside the current session: under the session it was raised in when the
    record knows it, else on its own. Best effort: a store that fails raises its own alarm elsewhere."""
    with contextlib.suppress(RecordNotSaved):
        store.append("device_event", device_event_record(item, identity), session_id)


def _settle(store: RecordStore, link: Link | None, session_id: str, events: list[StoredEvent]) -> Recovered:
    """Give every freeze of the session that has no result the device's figures; close the session
    once none is left open (its cartridge reservation released, the gas the device measured charged)."""
    device = events[0].payload.get("device")
    open_freezes = _open_freezes(events)
    findings: list[str] = []
    still_open: list[str] = []
    ledger = CartridgeLedger(store, Config())
    cartridge_id = _cartridge_reserved(events)
    for pending in open_freezes:
        where = f"{pending['lesion_id']} cycle {pending['cycle']}"
        if device is None:
            figures: dict[str, Any] = {"freeze_ms_device": None, "end_reason": None, "certainty": Certainty.UNKNOWN,
                                       "measured_by": "host"}
            finding = f"{where}: the freeze was host-timed (manual); its duration is unknown"
        else:
            outcome = read_and_reconcile(link, _facts(device, pending))
            if not outcome.settled:
                still_open.append(f"{where}: {outcome.why}")
                continue
            figures = _figures(outcome)
            finding = f"{where} ({pending['effective_ms']} ms planned): {outcome.why}"
        seconds = figures.get("cartridge_seconds", 0.0)
        store.append("freeze_result", {**figures, "lesion_id": pending["lesion_id"], "cycle": pending["cycle"], "why": finding,
                                       "freeze_ms_requested": pending["requested_ms"], "freeze_ms_effective": pending["effective_ms"],
                                       "limited_by": pending["limited_by"], "txn": pending.get("txn"), "cartridge_id": cartridge_id,
                                       "recovered": True}, session_id)
        if cartridge_id is not None and seconds:
            ledger.commit(session_id, cartridge_id, seconds, lesion_done=False)
        findings.append(finding)
    if still_open:
        return Recovered(session_id, "; ".join(still_open + findings), closed=False)
    if cartridge_id is not None and _reservation_open(events, cartridge_id):
        ledger.release(session_id, cartridge_id)
    finding = "; ".join(findings) or "no freeze was in progress"
    store.append("session_ended", {"status": "interrupted", "recovered": True, "finding": finding}, session_id)
    return Recovered(session_id, finding)


def _figures(outcome: Outcome) -> dict[str, Any]:
    return {"freeze_ms_device": outcome.valve_open_ms, "halo_to_off_ms": outcome.halo_to_off_ms, "end_reason": outcome.end_reason,
            "certainty": outcome.certainty, "measured_by": "device", "cartridge_seconds": (outcome.valve_open_ms or 0) / 1000}


def _open_freezes(events: list[StoredEvent]) -> list[dict[str, Any]]:
    """Every freeze asked for that has no result yet, per lesion and cycle, with what the record knows."""
    asked: dict[tuple[object, object], dict[str, Any]] = {}
    started: set[tuple[object, object]] = set()  # (device session, txn) of each FREEZE_STARTED
    reported: dict[tuple[object, object], dict[str, Any]] = {}  # FREEZE_DONE the device reported, maybe filed at a later connection
    for event in events:
        p = event.payload
        key = (p.get("lesion_id"), p.get("cycle"))
        if event.kind == "freeze_requested":
            asked[key] = dict(p)
        elif event.kind == "device_event" and p.get("code") == "FREEZE_STARTED":
            started.add((p.get("device_session"), p.get("txn")))
        elif event.kind == "device_event" and p.get("code") == "FREEZE_DONE":
            reported[(p.get("device_session"), p.get("txn"))] = p
        elif key in asked and event.kind == "freeze_accepted":
            asked[key] |= {"txn": p["txn"], "accepted": True}
        elif key in asked and event.kind == "freeze_unanswered":
            asked[key]["txn"] = p["txn"]
        elif key in asked and event.kind == "freeze_result":
            del asked[key]
    for pending in asked.values():
        key = (pending.get("device_session"), pending.get("txn"))
        pending["started_seen"] = key in started
        pending["reported"] = reported.get(key)
    return list(asked.values())


def _cartridge_reserved(events: list[StoredEvent]) -> str | None:
    reserved = [e.payload["cartridge_id"] for e in events if e.kind == "cartridge_reserved"]
    return reserved[-1] if reserved else None


def _reservation_open(events: list[StoredEvent], cartridge_id: str) -> bool:
    balance = 0
    for event in events:
        if event.payload.get("cartridge_id") == cartridge_id:
            balance += {"cartridge_reserved": 1, "cartridge_released": -1}.get(event.kind, 0)
    return balance > 0


def _facts(device: dict[str, Any], pending: dict[str, Any]) -> FreezeFacts:
    return FreezeFacts(
        serial=pending.get("serial") or device["serial"], boot_count=pending.get("boot_count", device.get("boot_count", -1)),
        txn=pending.get("txn"), accepted=bool(pending.get("accepted")), started_seen=bool(pending.get("started_seen")),
        freezes_started_before=pending.get("freezes_started_before"), last_txn_before=pending.get("last_txn_before"),
        reported=_reported(pending.get("reported")),
    )


def _reported(done: dict[str, Any] | None) -> DeviceReport | None:
    if done is None:
        return None
    return DeviceReport(done["valve_open_ms"], done.get("halo_to_off_ms"), done["end_reason"])


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
        return [Recovered(None, summary + f"; not cleared: {fault_names(others)} also latched")]
    try:
        link.clear_fault()
        link.wait_for_telemetry()
    except BridgeError as exc:
        return [Recovered(None, summary + f"; clearing it failed ({exc.problem})")]
    return [Recovered(None, summary + " and cleared")]
