"""One lesion's freeze-thaw protocol as an explicit state machine, run by the controller's loop.

The device times every freeze; this loop heartbeats it, watches its telemetry, times the thaws,
and records each step durably before anything reports it. Intents (arm, fire, mark the halo,
confirm the thaw, stop) may come from any thread; STOP goes straight to the device from
the caller's thread, the fastest path there is, and the loop records what the device answers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from controller.config import Config
from controller.errors import GivreError
from controller.procedure.alarms import AlarmManager, Priority
from controller.procedure.dose import BelowMinimumOverride, DoseDecision
from controller.procedure.gates import STALE_AFTER_S, Readiness, StartRequest, alarms_for_faults, device_readiness, start_gate
from controller.procedure.plausibility import (
    Channel,
    DurationVerdict,
    FreezeAsked,
    FreezeReported,
    Reading,
    Verdict,
    check_freeze_duration,
    check_target_reached,
    check_temperature,
    check_tip_cooling,
)
from controller.procedure.reconcile import Finding, FreezeFacts, Outcome, read_and_reconcile
from controller.procedure.recovery import device_event_record, file_device_event
from controller.procedure.states import END_TRIGGERS, TERMINAL, TRANSITIONS, State
from controller.records.certainty import Certainty
from controller.records.ledger import CartridgeLedger, CartridgeStatus, LedgerError
from controller.records.lesion import Lesion
from controller.records.store import RecordNotSaved, RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.errors import BridgeError, CommandRejected, CommandTimeout
from firmware_bridge.link import DeviceIdentity, Link, LinkDown
from firmware_bridge.messages import (
    CalData,
    Counters,
    DeviceKind,
    DeviceState,
    EndReason,
    EventCode,
    FreezeMode,
    TriggerMode,
)
from firmware_bridge.session import DeviceEventReceived, RebootDetected
from firmware_bridge.units import available_u32, celsius
from profiles.library import LoadedProfile
from profiles.schema import TimingStart

MANUAL_TICK_S = 0.05
AUTO_FIRE_PATIENCE_S = 5.0
VALVE_CLOSED_CONFIRM_S = 0.5
RECONCILE_RETRY_S = 0.5
EVENTS_PER_TICK = 32  # device events handled per loop turn: the heartbeat and STOP never wait behind a flood
FLOOD_EVENTS_PER_S = 20  # a device raises a handful of events per freeze; more than this in one second is a flood
DONE_OVERDUE_S = 1.0  # the device says it stopped freezing this long ago and its FREEZE_DONE has not come: ask it


class ProcedureError(GivreError):
    """Base of the procedure's errors: an intent that cannot be honoured now, with the reason."""


class StartRefused(ProcedureError):
    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


@dataclass
class CycleRecord:
    cycle: int
    dose: DoseDecision
    txn: int | None = None
    valve_open_ms: int | None = None
    halo_to_off_ms: int | None = None
    end_reason: str | None = None
    certainty: Certainty = Certainty.DEVICE_REPORTED
    measured_by: str = "device"
    thaw_ms: int | None = None
    min_tip_c: float | None = None
    min_tissue_c: float | None = None
    accepted: bool = False  # the device answered the FREEZE with ACK OK
    started_seen: bool = False  # the device reported FREEZE_STARTED for it
    implausible: str | None = None  # why the device's figure is not believed (plausibility.check_freeze_duration)

    def summary(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "freeze_ms_requested": self.dose.requested_ms,
            "freeze_ms_effective": self.dose.effective_ms,
            "freeze_ms_device": self.valve_open_ms,
            "halo_to_off_ms": self.halo_to_off_ms,
            "thaw_ms": self.thaw_ms,
            "limited_by": self.dose.limited_by,
            "end_reason": self.end_reason,
            "certainty": self.certainty,
            "measured_by": self.measured_by,
            "min_tissue_c": self.min_tissue_c,
            **({"implausible": self.implausible} if self.implausible else {}),
        }


@dataclass
class Plan:
    cycles: int
    dose: DoseDecision
    mode: FreezeMode
    trigger: TriggerMode
    spray_cap_ms: int  # what one spray may last on the device (halo / target modes: the whole spray)


@dataclass(frozen=True, slots=True)
class Recording:
    """Where the procedure records each step: the store, under its session and lesion."""

    store: RecordStore
    session_id: str
    lesion_id: str


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """The device as the procedure reaches it; no link is a manual treatment (the host only times it)."""

    link: Link | None
    calibration: CalData | None
    reconnect: Callable[[], Link] | None  # a new link, tried while a freeze's outcome is unknown and the link is lost
    reconnect_window_s: float  # how long an unknown outcome is retried before the cycle is left open


@dataclass(frozen=True, slots=True)
class ClinicalChoice:
    """What the clinician chose for this lesion."""

    lesion: Lesion
    profile: LoadedProfile
    requested_freeze_s: float | None = None  # None: the profile's default
    cycles: int | None = None  # None: the profile's number of cycles
    trigger: TriggerMode = TriggerMode.HOST
    auto: bool = False  # headless: fire each cycle and confirm each thaw by itself
    below_minimum: BelowMinimumOverride | None = None  # the clinician accepts a dose below the profile's minimum


class _FloodWindow:
    """Device events counted per one-second window. Past FLOOD_EVENTS_PER_S in a window the device is
    flooding: its events are counted, not each recorded, and the counts are recorded once the window closes."""

    def __init__(self) -> None:
        self._started = -1.0
        self._counts: dict[str, int] = {}
        self._unrecorded: dict[str, int] = {}

    def count(self, code: str, now: float) -> tuple[bool, dict[str, int] | None]:
        """(flooding now, the counts of a closed window's unrecorded events to record, if any)."""
        closed = None
        if now - self._started >= 1.0:
            closed, self._unrecorded = (self._unrecorded or None), {}
            self._started, self._counts = now, {}
        self._counts[code] = self._counts.get(code, 0) + 1
        return sum(self._counts.values()) > FLOOD_EVENTS_PER_S, closed

    def not_recorded(self, code: str) -> None:
        self._unrecorded[code] = self._unrecorded.get(code, 0) + 1

    def flush(self) -> dict[str, int] | None:
        """The counts not yet recorded (at the lesion's end)."""
        unrecorded, self._unrecorded = self._unrecorded, {}
        return unrecorded or None


class Procedure:
    """One lesion's procedure, built by Treatment.lesion; the record, the device and the clinician's choice come grouped."""

    def __init__(self, recording: Recording, device: DeviceAccess, choice: ClinicalChoice, *, config: Config, clock: Clock) -> None:
        self.store, self.session_id, self.lesion_id = recording.store, recording.session_id, recording.lesion_id
        self.link, self.calibration = device.link, device.calibration  # link: replaced by a reconnection
        self.reconnect, self.reconnect_window_s = device.reconnect, device.reconnect_window_s
        self.lesion, self.loaded, self.profile = choice.lesion, choice.profile, choice.profile.profile
        self.requested_freeze_s, self.requested_cycles = choice.requested_freeze_s, choice.cycles
        self.trigger, self.auto, self.below_minimum = choice.trigger, choice.auto, choice.below_minimum
        self.config = config
        self.clock = clock
        self.today = date.today()
        self._armed_waiting_since: float | None = None
        self._last_reconcile_try = 0.0
        self.state = State.IDLE
        self.alarms = AlarmManager(self._record_alarm)
        self.ledger = CartridgeLedger(self.store, config)
        self.cartridge: CartridgeStatus | None = None
        self.plan: Plan | None = None
        self.cycles: list[CycleRecord] = []
        self.warnings: list[str] = []
        self.status_text = ""
        self.cartridge_seconds_used = 0.0
        self._intents: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop_requested = threading.Event()
        self._freeze_started_at: float | None = None
        self._halo_marked = False
        self._thaw_started_at: float | None = None
        self._thaw_confirmed = False
        self._uncertain_since: float | None = None
        self._manual_deadline: float | None = None
        self._counters_before: Counters | None = None
        self._lesion_recorded = threading.Event()
        self._serial_at_fire = ""
        self._flood = _FloodWindow()
        self._last_reading: dict[Channel, Reading] = {}  # each temperature channel's last believed reading (device clock)
        self._tissue_before_fire: Reading | None = None  # the last believed tissue reading before the valve opened
        self._target_refused: str | None = None
        self._tissue_now: float | None = None  # the latest tissue reading if believed, else None
        self._accepted_at = 0.0  # host time the device accepted the current FREEZE
        self._not_freezing_since: float | None = None  # since when the device says it is not freezing, FREEZE_DONE not yet in

    # ---- intents (any thread) ------------------------------------------------------------------

    def stop(self) -> str:
        """Emergency stop: straight to the device from the caller's thread, then recorded by the loop.
        Returns what the device said, in words, for the screen."""
        self._stop_requested.set()
        said = "stopped"
        if self.link is not None and self.state in (State.FREEZING, State.UNCERTAIN):
            try:
                ack = self.link.stop(reason=1)
                said = f"the device closed its valve after {ack.detail32} ms of freeze"
            except BridgeError as exc:
                said = f"no answer from the device ({exc.problem}): its watchdog closes the valve by itself"
        self._intents.put("stop")
        return said

    def fire(self) -> None:
        self._intents.put("fire")

    def mark_halo(self) -> None:
        self._intents.put("mark_halo")

    def confirm_thaw(self) -> None:
        self._intents.put("confirm_thaw")

    def acknowledge_alarms(self) -> None:
        self._intents.put("ack")

    # ---- state ---------------------------------------------------------------------------------

    @property
    def halo_marked(self) -> bool:
        return self._halo_marked

    def freeze_elapsed_s(self) -> float | None:
        """Seconds since the current freeze was fired (host clock: for the clinician's cues only)."""
        if self.state is not State.FREEZING or self._freeze_started_at is None:
            return None
        return self.clock.monotonic() - self._freeze_started_at

    @property
    def finished(self) -> bool:
        """True once the lesion's end is recorded, not merely once its state is terminal: a screen that
        reads the record (summary, billing) must never see the lesion half-closed."""
        return self.state in TERMINAL and self._lesion_recorded.is_set()

    def _go(self, trigger: str) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise ProcedureError(f"cannot {trigger.replace('_', ' ')} while {self.state.value}")
        self._enter(target, trigger)

    def _enter(self, target: State, trigger: str) -> None:
        previous, self.state = self.state, target
        try:
            self._record("state_changed", {"from": previous.value, "to": target.value, "trigger": trigger})
        finally:
            if target in TERMINAL:
                self._finish()  # even when the store failed: the lesion is over and must read as finished

    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        """Every step is committed before it is reported. A failed write raises the 'record not
        saved' alarm in memory (it cannot be written) and never blocks STOP."""
        try:
            self.store.append(kind, {"lesion_id": self.lesion_id, **payload}, self.session_id)
        except RecordNotSaved as exc:
            self.status_text = str(exc)
            if "record_not_saved" not in self.alarms.latched:
                self.alarms.raise_("record_not_saved", str(exc))
            raise

    def _record_alarm(self, kind: str, payload: dict[str, object]) -> None:
        with contextlib.suppress(RecordNotSaved):  # the alarm is still shown; the store's failure is itself the 'record not saved' alarm
            self.store.append(kind, {"lesion_id": self.lesion_id, **payload}, self.session_id)

    # ---- arming: the start gate ------------------------------------------------------------------

    def arm(self) -> Plan:
        """Check everything that must hold before a first freeze (gates.start_gate); refuse with every reason at once."""
        identity = self._identity()
        cycles = self.requested_cycles or self.profile.cycles
        verdict = start_gate(StartRequest(
            self.profile, cycles, identity, self._readiness(), self.calibration, self.trigger, self.requested_freeze_s,
            self.below_minimum, any(a.priority is Priority.HIGH and not a.acknowledged for a in self.alarms.latched.values()),
            self.config, self.today))
        for code, detail in verdict.alarms:
            self.alarms.raise_(code, detail)
        self.warnings += verdict.warnings
        if not verdict.allowed or verdict.dose is None:
            self._record("start_refused", {"reasons": verdict.reasons})
            raise StartRefused(verdict.reasons)
        plan = self._plan(cycles, verdict.dose, identity.max_freeze_ms if identity is not None else None)
        if identity is not None and identity.kind is DeviceKind.SPRAY:
            self._reserve_cartridge(plan)
        self.plan = plan
        self._record("armed", {"cycles": cycles, "dose": verdict.dose.as_record(), "mode": plan.mode.name, "trigger": self.trigger.name,
                               "spray_cap_ms": plan.spray_cap_ms, "warnings": self.warnings,
                               "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None})
        self._go("arm")
        return plan

    def _identity(self) -> DeviceIdentity | None:
        """The connected device's identity; None in manual mode (Link.open handshakes, so a link has one)."""
        if self.link is None:
            return None
        assert self.link.identity is not None
        return self.link.identity

    def _readiness(self) -> Readiness:
        """gates.device_readiness of the latest telemetry (manual mode: nothing to be ready)."""
        if self.link is None:
            return Readiness(())
        latest = self.link.latest_telemetry()
        if latest is None:
            return device_readiness(None, None)
        return device_readiness(latest.telemetry, self.clock.real_seconds(self.clock.monotonic() - latest.received_at))

    def _plan(self, cycles: int, dose: DoseDecision, device_cap: int | None) -> Plan:
        """A freeze counted from the spray's start is the dose itself; one counted from the halo or the
        tissue target is a spray capped by the whole-spray limit, which must leave room for the dose."""
        if self.profile.timing_start is TimingStart.SPRAY_START:
            return Plan(cycles, dose, FreezeMode.TIMED, self.trigger, dose.effective_ms)
        spray_cap = min(round(self.config.halo_spray_cap_s * 1000), device_cap or 10**9)
        if spray_cap < dose.effective_ms:
            raise StartRefused([f"the whole-spray cap ({spray_cap} ms) is shorter than the dose ({dose.effective_ms} ms)"])
        return Plan(cycles, dose, FreezeMode.HALO, self.trigger, spray_cap)

    def _reserve_cartridge(self, plan: Plan) -> None:
        """A spray needs a registered cartridge within its keeping time with gas for every planned spray: reserve it."""
        flow = self.calibration.flow_mg_per_s if self.calibration else 0
        try:
            status = self.ledger.status(flow, self.today)
            if status is not None and status.past_keeping_time:
                raise LedgerError(
                    f"the opened cartridge is {status.age_days} days old, past its keeping time of "
                    f"{status.keeping_days} days; load a new one"
                )
            self.cartridge = self.ledger.reserve(self.session_id, plan.cycles * plan.spray_cap_ms / 1000, flow)
        except LedgerError as exc:
            self._record("start_refused", {"reasons": [str(exc)]})
            raise StartRefused([str(exc)]) from None

    # ---- the controller loop --------------------------------------------------------------------

    def run(self) -> None:
        """Headless: drive the protocol to its end from this thread."""
        while not self.finished:
            self.tick()

    def tick(self) -> None:
        """One loop iteration: heartbeat, intents, device events, telemetry, timers."""
        if self.link is not None:
            with contextlib.suppress(BridgeError):  # the link's loss arrives as an event
                self.link.heartbeat(list(State).index(self.state))
        self._drain_intents()
        if self.link is not None:
            item = self.link.next_event(self.link.heartbeat_period_s)
            handled = 0
            while item is not None:
                self._on_link_event(item)
                handled += 1
                item = self.link.next_event(0) if handled < EVENTS_PER_TICK else None
            self._watch_telemetry()
        else:
            self.clock.sleep(MANUAL_TICK_S)
        self._advance()

    def _drain_intents(self) -> None:
        while True:
            try:
                intent = self._intents.get_nowait()
            except queue.Empty:
                return
            try:
                self._on_intent(intent)
            except ProcedureError as exc:
                self.status_text = str(exc)

    def _on_intent(self, intent: str) -> None:
        if intent == "stop":
            self._on_stop()
        elif intent == "fire":
            self._fire()
        elif intent == "mark_halo":
            self._mark_halo()
        elif intent == "confirm_thaw":
            self._thaw_confirmed = True
        elif intent == "ack":
            self.alarms.acknowledge_all()

    def _on_stop(self) -> None:
        if self.state in TERMINAL:
            return
        if self.state in (State.FREEZING, State.UNCERTAIN):
            if self.link is None:  # manual: the clinician stops; the host timer is all there is
                self._finish_cycle(valve_open_ms=None, halo_ms=None, reason=EndReason.STOPPED, certainty=Certainty.HOST_MEASURED)
            return  # the device's FREEZE_DONE (STOPPED) carries the measured time
        self._record("stopped", {"state": self.state.value})
        self._enter(State.ABORTED, "stop")

    # ---- freezing ------------------------------------------------------------------------------

    def _fire(self) -> None:
        if self.state is not State.ARMED:
            raise ProcedureError(f"cannot fire while {self.state.value}")
        if self._stop_requested.is_set():
            raise ProcedureError("STOP was pressed")
        assert self.plan is not None
        cycle = CycleRecord(len(self.cycles) + 1, self.plan.dose)
        readiness = self._readiness()
        for code in readiness.alarms:
            self.alarms.raise_(code)
        if readiness.reasons:
            raise ProcedureError("; ".join(readiness.reasons))
        self.cycles.append(cycle)
        self._halo_marked = False
        self._freeze_started_at = self.clock.monotonic()
        if self.link is None:
            cycle.measured_by, cycle.certainty = "host", Certainty.HOST_MEASURED
            self._record("freeze_requested", {"cycle": cycle.cycle, **self.plan.dose.as_record(), "measured_by": "host"})
            self._manual_deadline = self._freeze_started_at + self.plan.dose.effective_ms / 1000
            self._go("fire")
            return
        try:
            self._counters_before = self.link.counters()
        except BridgeError as exc:
            raise ProcedureError(f"cannot read the device before freezing: {exc}") from exc
        self._serial_at_fire = self.link.identity.serial if self.link.identity else ""
        self._record(
            "freeze_requested",
            {"cycle": cycle.cycle, **self.plan.dose.as_record(), "mode": self.plan.mode.name, "spray_cap_ms": self.plan.spray_cap_ms,
             "serial": self._serial_at_fire, "boot_count": self._counters_before.boot_count,
             "device_session": self.link.identity.device_session if self.link.identity else None,
             "freezes_started_before": self._counters_before.freezes_started, "last_txn_before": self._counters_before.last_txn},
        )
        device_ms = self.plan.spray_cap_ms if self.plan.mode is FreezeMode.HALO else self.plan.dose.effective_ms
        self._go("fire")
        try:
            cycle.txn = self.link.freeze(device_ms, self.plan.mode, self.plan.trigger)
        except CommandTimeout as exc:
            cycle.txn = exc.txn
            self._record("freeze_unanswered", {"cycle": cycle.cycle, "txn": exc.txn})
            self._become_uncertain(f"no answer to FREEZE ({exc.problem})")
            return
        except CommandRejected as exc:
            self._record("freeze_refused", {"cycle": cycle.cycle, "reason": exc.problem, "result": exc.result})
            self.status_text = str(exc)
            self._go("faulted")
            return
        except BridgeError as exc:
            self._become_uncertain(str(exc))
            return
        cycle.accepted = True
        self._accepted_at = self.clock.monotonic()
        self._not_freezing_since = None
        self._record("freeze_accepted", {"cycle": cycle.cycle, "txn": cycle.txn, "device_ms": device_ms})

    def _mark_halo(self) -> None:
        if self.state is not State.FREEZING or self.plan is None or self.plan.mode is not FreezeMode.HALO or self._halo_marked:
            raise ProcedureError("nothing to mark: no halo-timed freeze is running")
        assert self.link is not None
        self._halo_marked = True
        try:
            ack = self.link.end_in(self.plan.dose.effective_ms)
        except BridgeError as exc:
            self.status_text = f"halo mark not taken: {exc}"
            return
        self._record("halo_marked", {"cycle": len(self.cycles), "remaining_ms": ack.detail32})

    def _on_link_event(self, item: object) -> None:
        if isinstance(item, DeviceEventReceived):
            if item.earlier_session:  # filed outside this session, never charged to it
                file_device_event(self.store, item, self.link.identity if self.link else None, None)
                return
            self._on_device_event(item)
        elif isinstance(item, (RebootDetected, LinkDown)):
            if isinstance(item, RebootDetected):
                self.alarms.raise_("device_rebooted", f"boot {item.old_boot_count} -> {item.new_boot_count}")
            else:
                self.alarms.raise_("link_lost", item.error.problem)
            if self.state is State.FREEZING:
                lost = "the device rebooted" if isinstance(item, RebootDetected) else "the link was lost"
                self._become_uncertain(f"{lost} during the freeze")
            elif (self.state, "faulted") in TRANSITIONS:
                self._go("faulted")

    def _on_device_event(self, item: DeviceEventReceived) -> None:
        event = item.event
        current = self.cycles[-1] if self.cycles else None
        ours = current is not None and current.txn == event.freeze_txn and (  # the current freeze's first start and end
            (event.code is EventCode.FREEZE_STARTED and not current.started_seen)
            or (event.code is EventCode.FREEZE_DONE and current.end_reason is None))
        flooding, coalesced = self._flood.count(event.code.name, self.clock.monotonic())
        if coalesced:
            self._record("device_events_coalesced", {"per_code": coalesced, "window_s": 1.0})
        if flooding and not ours:
            self._flood.not_recorded(event.code.name)
            if "device_flooding" not in self.alarms.latched:
                self.alarms.raise_("device_flooding", f"more than {FLOOD_EVENTS_PER_S} events in one second: counted, not each recorded")
        else:
            self._record("device_event", device_event_record(item, self.link.identity if self.link else None))
        if event.code is EventCode.FREEZE_STARTED and current is not None and current.txn == event.freeze_txn:
            current.started_seen = True
        if event.code is EventCode.FAULT_RAISED or event.code is EventCode.WATCHDOG_TRIP:
            self._alarm_for_faults(event.fault_flags)
        elif event.code is EventCode.CARTRIDGE_EMPTY:
            self.alarms.raise_("cartridge_empty")
        elif event.code is EventCode.CARTRIDGE_LOW:
            self.alarms.raise_("cartridge_low")
        elif event.code is EventCode.FREEZE_DONE and current is not None and current.txn == event.freeze_txn \
                and current.end_reason is None:
            halo = available_u32(event.halo_to_off_ms)
            self._finish_cycle(event.valve_open_ms, halo, event.end_reason, Certainty.DEVICE_REPORTED)

    def _alarm_for_faults(self, flags: int) -> None:
        for code in alarms_for_faults(flags):
            self.alarms.raise_(code)

    def _watch_telemetry(self) -> None:
        assert self.link is not None
        latest = self.link.latest_telemetry()
        now = self.clock.monotonic()
        stale = latest is None or now - latest.received_at > self.clock.wall(STALE_AFTER_S)
        if stale:
            self.alarms.raise_("telemetry_stale")
            if self.state is State.FREEZING:
                self._become_uncertain("no device data for more than 1 s during the freeze")
            return
        self.alarms.condition_gone("telemetry_stale")
        assert latest is not None
        t = latest.telemetry
        self._watch_for_a_lost_done(latest.received_at, DeviceState(t.state), now)
        at_s = t.uptime_ms / 1000  # the device's clock: the link's latency and bunching do not touch it
        tip_c = self._believed(Channel.TIP, celsius(t.tip_cdeg), at_s)
        tissue_c = self._tissue_now = self._believed(Channel.TISSUE, celsius(t.tissue_cdeg), at_s)
        if self.state is State.FREEZING and self.cycles:
            cycle = self.cycles[-1]
            if tip_c is not None:
                self._alarm_if_implausible(check_tip_cooling(tip_c, t.elapsed_ms))
                cycle.min_tip_c = min(cycle.min_tip_c if cycle.min_tip_c is not None else 99.0, tip_c)
            if tissue_c is not None:
                cycle.min_tissue_c = min(cycle.min_tissue_c if cycle.min_tissue_c is not None else 99.0, tissue_c)
            target = self.profile.target
            if target is not None and not self._halo_marked and tissue_c is not None and tissue_c <= target.tissue_c:
                self._on_tissue_target(cycle, tissue_c, at_s, target.tissue_c)
        elif tissue_c is not None and self.state in (State.ARMED, State.IDLE):
            self._tissue_before_fire = Reading(tissue_c, at_s)

    def _watch_for_a_lost_done(self, received_at: float, device_state: DeviceState, now: float) -> None:
        """The device says it is no longer freezing but its FREEZE_DONE has not come (lost, or dropped in a
        flood): after DONE_OVERDUE_S the outcome is unknown, and the one reconcile rule reads the device."""
        cycle = self.cycles[-1] if self.cycles else None
        if self.state is not State.FREEZING or cycle is None or not cycle.accepted or cycle.end_reason is not None:
            self._not_freezing_since = None
            return
        if received_at <= self._accepted_at or device_state in (DeviceState.WAIT_TRIGGER, DeviceState.FREEZING):
            self._not_freezing_since = None
            return
        if self._not_freezing_since is None:
            self._not_freezing_since = received_at
        elif now - self._not_freezing_since > self.clock.wall(DONE_OVERDUE_S):
            self._become_uncertain(f"the device stopped freezing ({device_state.name}) but its FREEZE_DONE never came")

    def _believed(self, channel: Channel, value_c: float | None, at_s: float) -> float | None:
        """A temperature reading, or None where there is none or it is not believed (out of physics,
        or changed faster than that channel can: plausibility.check_temperature, then the alarm)."""
        if value_c is None:
            return None
        cryogen = self.link.identity.cryogen if self.link is not None and self.link.identity is not None else None
        verdict = check_temperature(channel, value_c, at_s, self._last_reading.get(channel), cryogen)
        if not verdict.plausible:
            self._alarm_if_implausible(verdict)
            return None
        self._last_reading[channel] = Reading(value_c, at_s)
        return value_c

    def _alarm_if_implausible(self, verdict: Verdict) -> None:
        if not verdict.plausible:
            self.alarms.raise_("temperature_implausible", verdict.reason)

    def _on_tissue_target(self, cycle: CycleRecord, tissue_c: float, at_s: float, target_c: float) -> None:
        """The tissue reached its target: the hold starts, unless the fall since the freeze started is one
        no tissue can make (then it is an alarm, not a start of the hold)."""
        start = self._tissue_before_fire
        if start is not None:
            cryogen = self.link.identity.cryogen if self.link is not None and self.link.identity is not None else None
            verdict = check_target_reached(tissue_c, at_s, start, target_c, cryogen)
            if not verdict.plausible:
                if self._target_refused is None:
                    self._record("tissue_target_not_believed", {"cycle": cycle.cycle, "tissue_c": tissue_c, "why": verdict.reason})
                self._target_refused = verdict.reason
                self._alarm_if_implausible(verdict)
                return
        self._record("tissue_target_reached", {"cycle": cycle.cycle, "tissue_c": tissue_c, "target_c": target_c})
        self._mark_halo()

    def _become_uncertain(self, why: str) -> None:
        if self.state is State.UNCERTAIN:
            return
        self.alarms.raise_("outcome_uncertain", why)
        self._record("outcome_uncertain", {"cycle": len(self.cycles), "why": why})
        self._uncertain_since = self._last_reconcile_try = self.clock.monotonic()
        self._go("outcome_unknown")
        self._reconcile()

    def _facts(self, cycle: CycleRecord) -> FreezeFacts:
        before = self._counters_before
        return FreezeFacts(self._serial_at_fire, before.boot_count if before else -1, cycle.txn, cycle.accepted, cycle.started_seen,
                           before.freezes_started if before else None, before.last_txn if before else None)

    def _reconcile(self) -> None:
        """Ask the device what really happened (controller/procedure/reconcile.py's one rule); assume nothing."""
        assert self.cycles
        cycle = self.cycles[-1]
        outcome = read_and_reconcile(self.link, self._facts(cycle))
        self.status_text = f"outcome: {outcome.why}"
        if not outcome.settled:
            return  # stay UNCERTAIN and retry; past the window the cycle stays open for the next connection
        if self.link is not None and self.link.identity is not None:
            with contextlib.suppress(BridgeError):  # best effort: a latched fault also blocks the next arming
                self._alarm_for_faults(self.link.counters().fault_flags)
        if outcome.finding is Finding.RECONCILED:
            assert outcome.end_reason is not None
            self._finish_cycle(outcome.valve_open_ms, outcome.halo_to_off_ms, EndReason[outcome.end_reason], Certainty.RECONCILED,
                               outcome.why)
            return
        self._record("freeze_reconciled", {"cycle": cycle.cycle, "found": outcome.finding.value, "why": outcome.why})
        self._close_cycle_without_device_figures(cycle, outcome)

    def _close_cycle_without_device_figures(self, cycle: CycleRecord, outcome: Outcome) -> None:
        """NOT_STARTED (0 ms, proven) or UNKNOWN (no figure): recorded as such, never resumed."""
        cycle.valve_open_ms, cycle.end_reason, cycle.certainty = outcome.valve_open_ms, outcome.end_reason, outcome.certainty
        self._record("freeze_result", {**cycle.summary(), "txn": cycle.txn, "why": outcome.why,
                                       "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None,
                                       "cartridge_seconds": (outcome.valve_open_ms or 0) / 1000})
        self._go("reconciled")

    def _finish_cycle(self, valve_open_ms: int | None, halo_ms: int | None, reason: EndReason, certainty: Certainty,
                      why: str = "") -> None:
        cycle = self.cycles[-1]
        host_elapsed_ms = (self.clock.monotonic() - (self._freeze_started_at or 0)) * 1000
        if certainty is Certainty.HOST_MEASURED:
            valve_open_ms = round(host_elapsed_ms)
        cycle.valve_open_ms, cycle.halo_to_off_ms, cycle.end_reason, cycle.certainty = valve_open_ms, halo_ms, reason.name, certainty
        if reason is EndReason.CAP and halo_ms is not None and halo_ms < cycle.dose.effective_ms:
            self.warnings.append(
                f"cycle {cycle.cycle}: the whole-spray cap cut the timed freeze to {halo_ms} ms of {cycle.dose.effective_ms} ms")
        charged_ms = valve_open_ms or 0
        if certainty is not Certainty.HOST_MEASURED and valve_open_ms is not None:
            verdict = self._check_duration(valve_open_ms, halo_ms, reason, host_elapsed_ms)
            if not verdict.plausible:
                cycle.implausible = verdict.reason
                self.alarms.raise_("figure_implausible", f"cycle {cycle.cycle}: {verdict.reason}")
            charged_ms = verdict.ledger_ms
        seconds = charged_ms / 1000
        self._record("freeze_result", {
            **cycle.summary(), "txn": cycle.txn, **({"why": why} if why else {}),
            "host_elapsed_ms": round(host_elapsed_ms),
            "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None, "cartridge_seconds": seconds,
        })
        last = cycle.cycle >= (self.plan.cycles if self.plan else 1)
        if self.cartridge is not None:
            self.cartridge_seconds_used += seconds
            lesion_done = last and reason in (EndReason.COMPLETED, EndReason.CAP)
            self.ledger.commit(self.session_id, self.cartridge.cartridge_id, seconds, lesion_done=lesion_done)
        if self.state is State.UNCERTAIN and certainty is Certainty.RECONCILED:
            self._go("reconciled")
            return
        if cycle.implausible is not None:  # not complete, not billed: the record keeps the device's figure and why
            self._go("faulted")
            return
        if self.plan is not None and self.plan.mode is FreezeMode.HALO and halo_ms is None and reason is EndReason.CAP:
            self.status_text = (f"cycle {cycle.cycle}: the spray reached its cap with no believable "
                                f"{self.profile.timing_start.value.replace('_', ' ')}: the counted hold was not delivered")
            self.warnings.append(self.status_text)
            self._go("faulted")
            return
        outcome = END_TRIGGERS[reason]
        if outcome == "done":
            self._go("last_cycle_done" if last else "cycle_done")
            if not last:
                self._thaw_started_at = self.clock.monotonic()
                self._thaw_confirmed = False
        else:
            self._go(outcome)

    def _check_duration(self, valve_open_ms: int, halo_ms: int | None, reason: EndReason, host_elapsed_ms: float) -> DurationVerdict:
        """plausibility.check_freeze_duration against what this cycle asked, the device's cap and the host's clock."""
        assert self.plan is not None
        halo_mode = self.plan.mode is FreezeMode.HALO
        asked = FreezeAsked(self.plan.mode, self.plan.spray_cap_ms if halo_mode else self.plan.dose.effective_ms,
                            self.plan.dose.effective_ms if halo_mode and self._halo_marked else None)
        identity = self.link.identity if self.link is not None else None
        return check_freeze_duration(asked, FreezeReported(valve_open_ms, reason, halo_ms),
                                     identity.max_freeze_ms if identity is not None else None, host_elapsed_ms)

    # ---- timers --------------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self.clock.monotonic()
        if self.state is State.FREEZING and self.link is None and self._manual_deadline is not None and now >= self._manual_deadline:
            self._finish_cycle(None, None, EndReason.COMPLETED, Certainty.HOST_MEASURED)
        elif self.state is State.THAWING:
            self._advance_thaw(now)
        elif self.state is State.ARMED and self.auto:
            self._auto_fire(now)
        elif self.state is State.UNCERTAIN:
            self._retry_reconcile(now)

    def _auto_fire(self, now: float) -> None:
        """Headless: fire as soon as the device is ready; give up (FAULTED) if it never is."""
        if self._stop_requested.is_set():
            self._on_stop()
            return
        try:
            self._fire()
            self._armed_waiting_since = None
        except ProcedureError as exc:
            self.status_text = str(exc)
            if self._armed_waiting_since is None:
                self._armed_waiting_since = now
            elif now - self._armed_waiting_since > AUTO_FIRE_PATIENCE_S:
                self._record("fire_refused", {"reason": str(exc)})
                self._go("refused")

    def _retry_reconcile(self, now: float) -> None:
        """While the outcome is unknown, keep trying to read the device; reconnect if the link died."""
        assert self._uncertain_since is not None
        if now - self._uncertain_since > self.reconnect_window_s:
            cycle = self.cycles[-1]
            cycle.certainty = Certainty.UNRESOLVED
            self._record("freeze_unresolved", {
                "cycle": cycle.cycle, "txn": cycle.txn, "serial": self._serial_at_fire, "why": self.status_text,
                "note": f"the cycle stays open: read at the next connection to device {self._serial_at_fire}",
            })
            self._go("give_up")
            return
        if now - self._last_reconcile_try < RECONCILE_RETRY_S:
            return
        self._last_reconcile_try = now
        if self.link is not None and self.link.lost and self.reconnect is not None:
            try:
                self.link = self.reconnect()
            except BridgeError as exc:
                self.status_text = f"reconnecting: {exc.problem}"
                return
            self._record("reconnected", {"boot_count": self.link.identity.boot_count if self.link.identity else None})
        self._reconcile()

    def thaw_remaining(self) -> tuple[float, str]:
        """(seconds left on the thaw's minimum, what else it waits for)."""
        assert self._thaw_started_at is not None
        thaw = self.profile.thaw
        elapsed = self.clock.monotonic() - self._thaw_started_at
        left = max(0.0, (thaw.min_s if thaw else 0.0) - elapsed)
        waiting = ""
        if thaw is not None and thaw.until_above_c is not None:
            tissue = self._tissue_c()
            if tissue is None or tissue <= thaw.until_above_c:
                waiting = f"tissue to read above {thaw.until_above_c:g} C (now {tissue if tissue is not None else '?'} C)"
        return left, waiting

    def _tissue_c(self) -> float | None:
        """The latest tissue reading, if it was believed (a lying thermocouple never ends a thaw)."""
        return self._tissue_now

    def _advance_thaw(self, now: float) -> None:
        left, waiting = self.thaw_remaining()
        if left > 0 or waiting:
            return
        if not (self._thaw_confirmed or self.auto):
            return
        assert self._thaw_started_at is not None
        cycle = self.cycles[-1]
        cycle.thaw_ms = round((now - self._thaw_started_at) * 1000)
        self._record("thaw_done", {"cycle": cycle.cycle, "thaw_ms": cycle.thaw_ms, "tissue_c": self._tissue_c(),
                                   "confirmed_by": "auto" if self.auto and not self._thaw_confirmed else "clinician"})
        self._go("thaw_done")

    def _confirm_valve_closed(self) -> None:
        """After the last freeze, see the device's valve sensor say 'closed'; if it does not, the
        valve is stuck open and only the clinician's hand on the cartridge can stop the gas."""
        if self.link is None or self.link.lost or not self.cycles:
            return
        deadline = self.clock.monotonic() + self.clock.wall(VALVE_CLOSED_CONFIRM_S)
        while self.clock.monotonic() < deadline:
            latest = self.link.wait_for_telemetry(VALVE_CLOSED_CONFIRM_S)
            if latest is not None and not latest.telemetry.valve & 0b10:
                return
        self.alarms.raise_("valve_stuck_open", "the valve sensor still reads open after the freeze ended")

    def _finish(self) -> None:
        try:
            self._confirm_valve_closed()
            coalesced = self._flood.flush()
            if coalesced:
                with contextlib.suppress(RecordNotSaved):
                    self._record("device_events_coalesced", {"per_code": coalesced, "window_s": 1.0})
            if self.cartridge is not None:
                with contextlib.suppress(RecordNotSaved):  # lesion_ended below still tries; a store that fails it raises the alarm
                    self.ledger.release(self.session_id, self.cartridge.cartridge_id)
            self._record("lesion_ended", {"status": self.state.value, "cycles": [c.summary() for c in self.cycles],
                                          "cartridge_seconds_used": round(self.cartridge_seconds_used, 3)})
        finally:
            self._lesion_recorded.set()  # even unsaved or with the link gone (their alarms are raised): the lesion is over

