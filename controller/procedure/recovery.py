"""Recovery at every connection: close what an earlier host left open, with the device's own figures.

Run by the UI, `givre run`, `info`, `selftest` and `calibrate` right after the handshake; on
virtual time, connect() first measures that the device really runs on that time (below). A session
left unfinished (host killed, or a cycle the device could not be read for) is settled from the
device by controller/procedure/reconcile.py's rule when the device that ran it is the one connected, and
stays open otherwise. A watchdog trip that no open session owns (a 1.0 device, which has no BYE,
trips after every exit) is recorded with the device's counters and cleared.

Virtual time (a host clock with scale != 1, `--scale`) is a tool for simulators: a real device
keeps real time, and a host on virtual time would count its thaws, timeouts and host-timed figures
`scale` times too fast (issue 13 item 6: a 0.6 s thaw recorded as 30 113 ms). The rule, in
connect(), is one measurement, the same for every port: the device's own uptime (GET_COUNTERS) must
advance at the host's virtual rate, within TIME_SCALE_TOLERANCE, or the connection is refused
(TimeScaleMismatch) before anything is recorded. The embedded simulator passes because it runs on the
host's clock; a separate `givre sim --pty --scale N` passes at the same N; a real-time device never
does. Why a measurement and not "the in-process simulator only": `givre run` reaches a simulator by
its port path like any device, and the device's clock is the fact that matters. Why it can never
pass a real-time device: each uptime sample is bracketed by host readings taken before the request
and after the reply, so the measured interval always contains the true rate ratio, and a ratio is
accepted only when that whole interval lies within 1 ± 25 %; a real-time device's ratio is
1/scale <= 0.5 because scales between 1 and MIN_VIRTUAL_SCALE (2) are refused outright. Host
jitter only widens the interval (then the window grows, up to TIME_SCALE_WINDOW_MAX_S), it cannot
move the truth into it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from controller.config import Config
from controller.procedure.reconcile import DeviceReport, FreezeFacts, Outcome, read_and_reconcile
from controller.records import events as schema
from controller.records.certainty import Certainty
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordNotSaved, RecordStore
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.errors import BridgeError, HandshakeError, NotAGivreDevice
from firmware_bridge.link import DeviceIdentity, Link
from firmware_bridge.messages import LATCHING_FAULTS, Counters, Fault
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.units import available_u32, fault_names, scaled_watchdog_ms

EARLY_EVENTS_S = 0.25  # events a device kept from an earlier session come within 100 ms of HELLO_ACK (§5.5)
MIN_VIRTUAL_SCALE = 2.0  # virtual time runs at least 2x: with the tolerance below, a real-time device's ratio (<= 0.5) is never inside
TIME_SCALE_TOLERANCE = 0.25  # device seconds per host virtual second: 1 ± 25 %; wide for clock drift (ppm) and
#                             timer calibration, far narrower than the factor 2 that separates real from virtual time
TIME_SCALE_WINDOW_S = 0.2  # wall seconds between the first two uptime samples (pty round trips are ~0.2 ms: ~0.2 % wide)
TIME_SCALE_WINDOW_MAX_S = 2.0  # a loaded host's jitter widens the interval: sample on until it is conclusive, or refuse
UPTIME_WRAP_MS = 1 << 32  # the wire's uptime is a u32 of ms


class TimeScaleMismatch(HandshakeError):
    """The host runs on virtual time and the device at this port does not run on that same time
    (a real-time device, or a simulator at another scale): it may not be driven on this clock."""


@dataclass(frozen=True, slots=True)
class UptimeSample:
    """The device's uptime, read between two readings of the host's clock."""

    before: float  # host clock, just before the request
    after: float  # host clock, just after the answer
    uptime_ms: int
    boot_count: int


def _uptime_sample(link: Link, clock: Clock) -> UptimeSample:
    before = clock.monotonic()
    counters: Counters = link.counters()
    return UptimeSample(before, clock.monotonic(), counters.uptime_ms, counters.boot_count)


def _feed(link: Link, clock: Clock, wall_s: float) -> None:
    """Heartbeat the device for `wall_s` of wall time without taking its events (recovery files them)."""
    until = clock.monotonic() + clock.wall(wall_s)
    while (left := until - clock.monotonic()) > 0 and not link.lost:
        link.heartbeat()
        clock.sleep(min(link.heartbeat_period_s, left))


def time_ratio_bounds(first: UptimeSample, last: UptimeSample) -> tuple[float, float]:
    """Device seconds per host clock second, as an interval that contains the truth: the device read
    its uptime somewhere between each request and its answer (plus 1 ms of uptime resolution)."""
    device_s = ((last.uptime_ms - first.uptime_ms) % UPTIME_WRAP_MS) / 1000
    longest, shortest = last.after - first.before, max(last.before - first.after, 1e-9)  # a window is >= 0.2 s
    return max(0.0, device_s - 0.001) / longest, (device_s + 0.001) / shortest


def check_scale_allowed(url: str, scale: float) -> None:
    """Real time (1), or virtual time at least MIN_VIRTUAL_SCALE times faster: between the two, a
    real-time device's clock would fall inside the tolerance."""
    if scale != 1 and scale < MIN_VIRTUAL_SCALE:
        raise TimeScaleMismatch(url, f"--scale {scale:g} refused: virtual time must run at least {MIN_VIRTUAL_SCALE:g} times "
                                     "faster than the wall", "Use 1 (real time) with a device, or e.g. 20 with a simulator")


def check_time_scale(url: str, link: Link, clock: Clock) -> float:
    """On virtual time, measure that the device's clock runs at the host's scale (module docstring);
    returns the device's seconds per wall second. Raises TimeScaleMismatch otherwise."""
    scale = clock.scale
    check_scale_allowed(url, scale)
    first = _uptime_sample(link, clock)
    started = time.monotonic()
    while True:
        _feed(link, clock, TIME_SCALE_WINDOW_S)  # the window grows from `first` until the interval is conclusive
        last = _uptime_sample(link, clock)
        if last.boot_count != first.boot_count:  # it rebooted meanwhile: its uptime started over
            first = last
            continue
        low, high = time_ratio_bounds(first, last)
        if low >= 1 - TIME_SCALE_TOLERANCE and high <= 1 + TIME_SCALE_TOLERANCE:
            return (low + high) / 2 * scale
        conclusive = high < 1 - TIME_SCALE_TOLERANCE or low > 1 + TIME_SCALE_TOLERANCE
        if conclusive or time.monotonic() - started >= TIME_SCALE_WINDOW_MAX_S:
            raise _mismatch(url, scale, (low + high) / 2 * scale, conclusive)


def _mismatch(url: str, scale: float, rate: float, conclusive: bool) -> TimeScaleMismatch:
    """The one line: which flag and value, what the device does, what is allowed, what to do."""
    if not conclusive:
        found = "could not be measured steadily (the host is too busy)"
    else:
        found = "keeps real time" if abs(rate - 1) <= TIME_SCALE_TOLERANCE else "does not run on that virtual time"
    return TimeScaleMismatch(
        url, f"--scale {scale:g} refused: this device {found} (its clock ran {rate:.2f} s per wall second; "
             f"{scale:g} ± {TIME_SCALE_TOLERANCE:.0%} is needed)",
        f"Virtual time is only for a simulator running at that scale (`givre demo`, or `givre sim --pty --scale {scale:g}`); "
        "leave --scale out to drive this device on real time")


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
    wall time), then wait for its first telemetry so nothing is judged on no data. On virtual time
    (clock.scale != 1) the device's clock is measured to run at that scale first (check_time_scale):
    TimeScaleMismatch otherwise, with the link closed and nothing recorded."""
    check_scale_allowed(url, clock.scale)
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
        if clock.scale != 1:
            check_time_scale(url, link, clock)
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


def unfinished_sessions(store: RecordStore) -> dict[str, list[schema.EventModel]]:
    """Sessions never ended, with their events typed: found by the store's index, never by reading the log."""
    return {sid: [schema.parse(e) for e in store.events(sid)] for sid in store.unfinished_session_ids()}


def _device(events: list[schema.EventModel]) -> schema.Device | None:
    """The device a session started on (None: a manual session)."""
    started = events[0] if events else None
    return started.device if isinstance(started, schema.SessionStarted) else None


def open_owner(store: RecordStore, device_session: int | None) -> str | None:
    """The unfinished record session a device event of this device session belongs to, if any."""
    return store.open_session_of_device_session(device_session) if device_session else None


def recover(store: RecordStore, link: Link | None, early_events_s: float = EARLY_EVENTS_S) -> list[Recovered]:
    """File what the device kept from earlier sessions; settle every unfinished session the
    connected device (or none) can settle; then account for a watchdog trip nobody owns.

    ``early_events_s``: how long to collect the events that come with the handshake. The UI passes
    0 (its controller loop files later ones as they come) so that it opens at once."""
    early = _early_events(link, early_events_s)
    for item in early:  # under its session while that session is open; a closed record is never appended to
        file_device_event(store, item, link.identity if link else None, open_owner(store, item.device_session))
    reports: list[Recovered] = []
    awaiting: set[str | None] = set()
    settled_here: str | None = None  # the last session of the connected device closed now: its host went silent
    serial = link.identity.serial if link is not None and link.identity is not None else None
    for session_id, events in unfinished_sessions(store).items():
        report = _settle(store, link, session_id, events)
        reports.append(report)
        device = _device(events)
        session_serial = device.serial if device is not None else None
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


def _settle(store: RecordStore, link: Link | None, session_id: str, events: list[schema.EventModel]) -> Recovered:
    """Give every freeze of the session that has no result the device's figures; close the session
    once none is left open (its cartridge reservation released, the gas the device measured charged)."""
    device = _device(events)
    findings: list[str] = []
    still_open: list[str] = []
    ledger = CartridgeLedger(store, Config())
    cartridge_id = _cartridge_reserved(events)
    for pending in _open_freezes(events):
        asked = pending.asked
        where = f"{asked.lesion_id} cycle {asked.cycle}"
        if device is None:
            figures: dict[str, Any] = {"freeze_ms_device": None, "halo_to_off_ms": None, "end_reason": None, "certainty": Certainty.UNKNOWN,
                                       "measured_by": "host", "cartridge_seconds": 0.0}
            finding = f"{where}: the freeze was host-timed (manual); its duration is unknown"
        else:
            outcome = read_and_reconcile(link, _facts(device, pending))
            if not outcome.settled:
                still_open.append(f"{where}: {outcome.why}")
                continue
            figures = _figures(outcome)
            finding = f"{where} ({asked.effective_ms} ms planned): {outcome.why}"
        store.append("freeze_result", {  # the procedure's keys (records/events.py: FreezeResult), what this host never saw as None
            **figures, "lesion_id": asked.lesion_id, "cycle": asked.cycle, "freeze_ms_requested": asked.requested_ms,
            "freeze_ms_effective": asked.effective_ms, "thaw_ms": None, "limited_by": asked.limited_by, "min_tissue_c": None,
            "txn": pending.txn, "host_elapsed_ms": None, "cartridge_id": cartridge_id, "why": finding, "recovered": True}, session_id)
        if cartridge_id is not None and figures["cartridge_seconds"]:
            ledger.commit(session_id, cartridge_id, figures["cartridge_seconds"], lesion_done=False)
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


@dataclass
class _Pending:
    """A freeze asked for with no result yet, and what the record says of it since."""

    asked: schema.FreezeRequested
    txn: int | None = None
    accepted: bool = False
    started_seen: bool = False  # the device reported its FREEZE_STARTED
    reported: schema.DeviceEvent | None = None  # its FREEZE_DONE, maybe filed at a later connection


def _open_freezes(events: list[schema.EventModel]) -> list[_Pending]:
    """Every freeze asked for that has no result yet, per lesion and cycle, with what the record knows."""
    asked: dict[tuple[str, int], _Pending] = {}
    started: set[tuple[int | None, int]] = set()  # (device session, txn) of each FREEZE_STARTED
    reported: dict[tuple[int | None, int], schema.DeviceEvent] = {}
    for event in events:
        if isinstance(event, schema.FreezeRequested):
            asked[(event.lesion_id, event.cycle)] = _Pending(event)
        elif isinstance(event, schema.DeviceEvent) and event.code == "FREEZE_STARTED":
            started.add((event.device_session, event.txn))
        elif isinstance(event, schema.DeviceEvent) and event.code == "FREEZE_DONE":
            reported[(event.device_session, event.txn)] = event
        elif isinstance(event, schema.FreezeAccepted | schema.FreezeUnanswered | schema.FreezeResult):
            pending = asked.get((event.lesion_id, event.cycle))
            if pending is None:
                continue
            if isinstance(event, schema.FreezeResult):
                del asked[(event.lesion_id, event.cycle)]
            else:
                pending.txn, pending.accepted = event.txn, pending.accepted or isinstance(event, schema.FreezeAccepted)
    for pending in asked.values():
        if pending.txn is not None:
            key = (pending.asked.device_session, pending.txn)
            pending.started_seen, pending.reported = key in started, reported.get(key)
    return list(asked.values())


def _cartridge_reserved(events: list[schema.EventModel]) -> str | None:
    reserved = [e.cartridge_id for e in events if isinstance(e, schema.CartridgeReserved)]
    return reserved[-1] if reserved else None


def _reservation_open(events: list[schema.EventModel], cartridge_id: str) -> bool:
    balance = 0
    for event in events:
        if isinstance(event, schema.CartridgeReserved | schema.CartridgeReleased) and event.cartridge_id == cartridge_id:
            balance += 1 if isinstance(event, schema.CartridgeReserved) else -1
    return balance > 0


def _facts(device: schema.Device, pending: _Pending) -> FreezeFacts:
    asked = pending.asked
    return FreezeFacts(
        serial=asked.serial or device.serial, boot_count=asked.boot_count if asked.boot_count is not None else device.boot_count,
        txn=pending.txn, accepted=pending.accepted, started_seen=pending.started_seen,
        freezes_started_before=asked.freezes_started_before, last_txn_before=asked.last_txn_before,
        reported=_reported(pending.reported),
    )


def _reported(done: schema.DeviceEvent | None) -> DeviceReport | None:
    if done is None:
        return None
    return DeviceReport(done.valve_open_ms, done.halo_to_off_ms, done.end_reason)


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
