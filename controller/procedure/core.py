"""One lesion's procedure as pure logic: ``ProcedureCore.handle(input, now) -> Output``.

No I/O, no threads, no clock of its own, in the manner of firmware_bridge/session.py. The driver
(procedure/driver.py) feeds it typed inputs with the current time on its clock and executes what
it returns, in order: records to append, cartridge-ledger operations, and commands for the device.
A command's answer (the FREEZE's ACK, the COUNTERS, a reconcile Outcome...) comes back as the next
input, handled before anything else (depth first), so the core sees exactly the sequence a
blocking call would have given it. The core keeps the procedure's state, its cycles, its alarms
(latched here, touched only by the thread that feeds the core) and its timers; docs/procedure.md
lists every input and output and draws the state table.

Decisions stay table lookups where they are (states.TRANSITIONS, states.END_TRIGGERS) and pure
functions where they were (gates, plausibility, reconcile, dose).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from controller.procedure.reconcile import Finding, FreezeFacts, Outcome
from controller.procedure.recovery import device_event_record
from controller.procedure.states import END_TRIGGERS, FREEZE_MAY_RUN, TERMINAL, TRANSITIONS, State
from controller.procedure.view import CycleLine, ProcedureView
from controller.records.certainty import Certainty
from controller.records.ledger import CartridgeStatus
from firmware_bridge.link import DeviceIdentity
from firmware_bridge.messages import CalData, Counters, Cryogen, DeviceKind, DeviceState, EndReason, EventCode, FreezeMode, TriggerMode
from firmware_bridge.session import DeviceEventReceived, TelemetryReceived
from firmware_bridge.units import available_u16, available_u32, celsius
from profiles.schema import Profile, TimingStart

AUTO_FIRE_PATIENCE_S = 5.0
RECONCILE_RETRY_S = 0.5
FLOOD_EVENTS_PER_S = 20  # a device raises a handful of events per freeze; more than this in one second is a flood
DONE_OVERDUE_S = 1.0  # the device says it stopped freezing this long ago and its FREEZE_DONE has not come: ask it
VALVE_SENSED_OPEN = 0b10  # TELEMETRY valve bit 1: the valve's position sensor reads open


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
class CoreSetup:
    """What the core is built with: the clinician's choice, the device as the handshake described it, the config."""

    profile: Profile
    config: Config
    identity: DeviceIdentity | None  # None: a manual treatment (the host only times it)
    calibration: CalData | None
    today: date
    time_scale: float = 1.0  # the clock's scale: limits against the host's own scheduling keep their wall-time value
    reconnect_window_s: float = 10.0  # how long an unknown outcome is retried before the cycle is left open
    requested_freeze_s: float | None = None
    cycles: int | None = None
    trigger: TriggerMode = TriggerMode.HOST
    auto: bool = False
    below_minimum: BelowMinimumOverride | None = None


# ---- inputs ---------------------------------------------------------------------------------------
# Intents (the clinician's, queued by the driver and fed on the loop)


@dataclass(frozen=True, slots=True)
class Arm:
    latest: TelemetryReceived | None  # the device's latest telemetry when the gate runs (readiness)


@dataclass(frozen=True, slots=True)
class Fire:
    latest: TelemetryReceived | None


@dataclass(frozen=True, slots=True)
class MarkHalo:
    pass


@dataclass(frozen=True, slots=True)
class ConfirmThaw:
    pass


@dataclass(frozen=True, slots=True)
class StopPressed:
    """STOP was pressed (the driver already sent it to the device): no FIRE is honoured from now on."""


@dataclass(frozen=True, slots=True)
class Stop:
    """STOP, as the loop records it: ends the lesion (aborted) unless a freeze is running, whose
    FREEZE_DONE (STOPPED) ends it with the device's figure."""


@dataclass(frozen=True, slots=True)
class Acknowledge:
    pass


# Device facts


@dataclass(frozen=True, slots=True)
class TelemetrySeen:
    latest: TelemetryReceived | None  # the link's latest telemetry (None: none yet)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    received: DeviceEventReceived


@dataclass(frozen=True, slots=True)
class Rebooted:
    old_boot_count: int
    new_boot_count: int


@dataclass(frozen=True, slots=True)
class LinkLost:
    problem: str


@dataclass(frozen=True, slots=True)
class CountersRead:
    counters: Counters


@dataclass(frozen=True, slots=True)
class CountersUnread:
    text: str  # the link's error, in words


@dataclass(frozen=True, slots=True)
class FreezeAccepted:
    txn: int


@dataclass(frozen=True, slots=True)
class FreezeRejected:
    problem: str
    result: int
    text: str


@dataclass(frozen=True, slots=True)
class FreezeUnanswered:
    txn: int | None
    problem: str


@dataclass(frozen=True, slots=True)
class FreezeFailed:
    text: str  # another link error: the FREEZE may or may not have reached the device


@dataclass(frozen=True, slots=True)
class FreezeNotSent:
    why: str  # the driver did not send it (its request could not be recorded)


@dataclass(frozen=True, slots=True)
class HaloAcked:
    remaining_ms: int


@dataclass(frozen=True, slots=True)
class HaloNotTaken:
    text: str


@dataclass(frozen=True, slots=True)
class Reconciled:
    outcome: Outcome
    fault_flags: int | None = None  # the device's faults, read once the outcome is settled (None: not read)


@dataclass(frozen=True, slots=True)
class Reconnected:
    identity: DeviceIdentity | None


@dataclass(frozen=True, slots=True)
class ReconnectFailed:
    problem: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The answer to ReconnectIfLost when the link is not lost (or cannot be replaced)."""


@dataclass(frozen=True, slots=True)
class ValveChecked:
    closed: bool | None  # None: not checked (the link is gone)


@dataclass(frozen=True, slots=True)
class CartridgeChecked:
    status: CartridgeStatus | None


@dataclass(frozen=True, slots=True)
class CartridgeReserved:
    status: CartridgeStatus


@dataclass(frozen=True, slots=True)
class CartridgeRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class RecordFailed:
    problem: str


# Timers


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the timers (manual deadline, thaw, auto-fire, reconcile retry and give-up)."""


Intent = Arm | Fire | MarkHalo | ConfirmThaw | StopPressed | Stop | Acknowledge
DeviceFact = (TelemetrySeen | DeviceEvent | Rebooted | LinkLost | CountersRead | CountersUnread | FreezeAccepted | FreezeRejected
              | FreezeUnanswered | FreezeFailed | FreezeNotSent | HaloAcked | HaloNotTaken | Reconciled | Reconnected
              | ReconnectFailed | LinkUp | ValveChecked | CartridgeChecked | CartridgeReserved | CartridgeRefused | RecordFailed)
Input = Intent | DeviceFact | Tick

# ---- outputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One step for the store. ``lesion``: under this lesion and session (else on its own, no session)."""

    kind: str
    payload: dict[str, Any]
    lesion: bool = True
    best_effort: bool = False  # a failed write is not the step's failure (alarms, coalesced counts, filed events)


# Device commands: each one's answer is the input named beside it.


@dataclass(frozen=True, slots=True)
class ReadCounters:
    """-> CountersRead | CountersUnread"""


@dataclass(frozen=True, slots=True)
class SendFreeze:
    """-> FreezeAccepted | FreezeRejected | FreezeUnanswered | FreezeFailed (FreezeNotSent if not sent)"""

    ms: int
    mode: FreezeMode
    trigger: TriggerMode


@dataclass(frozen=True, slots=True)
class SendEndIn:
    """-> HaloAcked | HaloNotTaken"""

    ms: int


@dataclass(frozen=True, slots=True)
class ReadAndReconcile:
    """-> Reconciled (reconcile.read_and_reconcile, then the device's fault flags once settled)"""

    facts: FreezeFacts


@dataclass(frozen=True, slots=True)
class ReconnectIfLost:
    """-> Reconnected | ReconnectFailed | LinkUp"""


@dataclass(frozen=True, slots=True)
class ConfirmValveClosed:
    """-> ValveChecked (watch the telemetry's valve sensor for up to ``within_s`` wall seconds)"""

    within_s: float


Command = ReadCounters | SendFreeze | SendEndIn | ReadAndReconcile | ReconnectIfLost | ConfirmValveClosed


# Cartridge ledger


@dataclass(frozen=True, slots=True)
class CheckCartridge:
    """-> CartridgeChecked"""

    flow_mg_per_s: int
    today: date


@dataclass(frozen=True, slots=True)
class Reserve:
    """-> CartridgeReserved | CartridgeRefused"""

    seconds: float
    flow_mg_per_s: int


@dataclass(frozen=True, slots=True)
class Commit:
    cartridge_id: str
    seconds: float
    lesion_done: bool


@dataclass(frozen=True, slots=True)
class Release:
    cartridge_id: str


LedgerOp = CheckCartridge | Reserve | Commit | Release
Effect = Record | Command | LedgerOp

VALVE_CLOSED_CONFIRM_S = 0.5


@dataclass(slots=True)
class Output:
    """What one input asks of the driver, in the order it must happen (records before what they
    announce: a FREEZE is sent only once its request is recorded)."""

    effects: list[Effect] = field(default_factory=list)
    alarms: list[tuple[str, str]] = field(default_factory=list)  # ("raised" | "cleared" | "acknowledged", code)
    refused: str | None = None  # the intent could not be honoured now (also the status line)
    next_timer: float | None = None  # feed Tick by then (the core's time)
    closes_lesion: bool = False  # lesion_ended is among the records: the lesion is finished once they are executed

    @property
    def records(self) -> list[Record]:
        return [e for e in self.effects if isinstance(e, Record)]

    @property
    def commands(self) -> list[Command]:
        return [e for e in self.effects if isinstance(e, Command)]

    @property
    def ledger(self) -> list[LedgerOp]:
        return [e for e in self.effects if isinstance(e, LedgerOp)]


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


class ProcedureCore:
    """One lesion's freeze-thaw cycles. Feed ``handle`` one input at a time on one thread."""

    def __init__(self, setup: CoreSetup) -> None:
        self.setup = setup
        self.profile = setup.profile
        self.identity = setup.identity  # replaced by a reconnection's
        self.manual = setup.identity is None
        self.state = State.IDLE
        self.plan: Plan | None = None
        self.cycles: list[CycleRecord] = []
        self.warnings: list[str] = []
        self.status_text = ""
        self.refused: tuple[str, ...] = ()  # every reason the last ARM was refused
        self.arm_result: Plan | ProcedureError | None = None  # the last ARM's outcome, once settled
        self.cartridge: CartridgeStatus | None = None
        self.cartridge_seconds_used = 0.0
        self.halo_marked = False
        self.stop_pressed = False
        self.lesion_closed = False  # lesion_ended was emitted
        self.alarms = AlarmManager(self._alarm_record)
        self._out = Output()
        self._pending_plan: Plan | None = None
        self._fire_at = 0.0
        self._armed_waiting_since: float | None = None
        self._last_reconcile_try = 0.0
        self._freeze_started_at: float | None = None
        self._thaw_started_at: float | None = None
        self._thaw_confirmed = False
        self._uncertain_since: float | None = None
        self._manual_deadline: float | None = None
        self._counters_before: Counters | None = None
        self._serial_at_fire = ""
        self._flood = _FloodWindow()
        self._last_reading: dict[Channel, Reading] = {}  # each temperature channel's last believed reading (device clock)
        self._tissue_before_fire: Reading | None = None  # the last believed tissue reading before the valve opened
        self._target_refused: str | None = None
        self._tip_now: float | None = None  # the latest tip reading if believed, else None
        self._tissue_now: float | None = None  # the latest tissue reading if believed, else None
        self._latest: TelemetryReceived | None = None
        self._fresh = False
        self._now = 0.0  # the time of the input being handled
        self._handlers = self._handler_table()
        self._accepted_at = 0.0  # the time the device accepted the current FREEZE
        self._not_freezing_since: float | None = None  # since when the device says it is not freezing, FREEZE_DONE not yet in

    # ---- the one entry point ---------------------------------------------------------------------

    def handle(self, inp: Input, now: float) -> Output:
        self._out = out = Output()
        self._now = now
        try:
            handler = self._handlers.get(type(inp))
            if handler is not None:
                handler(inp)
        except ProcedureError as exc:
            self.status_text = out.refused = str(exc)
        out.next_timer = self.next_timer(now)
        return out

    def _handler_table(self) -> dict[type, Callable[[Any], None]]:
        """Each input type's handler (a table, like TRANSITIONS); each reads the input's time from self._now."""
        return {
            Arm: lambda i: self._arm(i.latest, self._now),
            Fire: lambda i: self._fire(i.latest, self._now),
            MarkHalo: lambda _: self._mark_halo(),
            ConfirmThaw: lambda _: self._confirm_thaw(),
            StopPressed: lambda _: setattr(self, "stop_pressed", True),
            Stop: lambda _: self._on_stop(self._now),
            Acknowledge: lambda _: self.alarms.acknowledge_all(),
            TelemetrySeen: lambda i: self._watch_telemetry(i.latest, self._now),
            DeviceEvent: lambda i: self._on_device_event(i.received, self._now),
            Rebooted: lambda i: self._on_link_gone(i, self._now),
            LinkLost: lambda i: self._on_link_gone(i, self._now),
            Tick: lambda _: self._advance(self._now),
            CountersRead: lambda i: self._on_counters(i, self._now),
            CountersUnread: lambda i: self._on_counters(i, self._now),
            **dict.fromkeys((FreezeAccepted, FreezeRejected, FreezeUnanswered, FreezeFailed, FreezeNotSent),
                            lambda i: self._on_freeze_answer(i, self._now)),
            HaloAcked: lambda i: self._record("halo_marked", {"cycle": len(self.cycles), "remaining_ms": i.remaining_ms}),
            HaloNotTaken: lambda i: setattr(self, "status_text", f"halo mark not taken: {i.text}"),
            Reconciled: self._on_reconciled,
            Reconnected: self._on_reconnected,
            ReconnectFailed: lambda i: setattr(self, "status_text", f"reconnecting: {i.problem}"),
            LinkUp: lambda _: self._reconcile(),
            ValveChecked: self._on_valve_checked,
            **dict.fromkeys((CartridgeChecked, CartridgeReserved, CartridgeRefused), self._on_cartridge),
            RecordFailed: self._on_record_failed,
        }

    def _confirm_thaw(self) -> None:
        if self.state is not State.THAWING:
            raise ProcedureError(f"nothing to confirm: no thaw is running ({self.state.value})")
        self._thaw_confirmed = True

    def _on_reconnected(self, inp: Reconnected) -> None:
        self.identity = inp.identity
        self._record("reconnected", {"boot_count": inp.identity.boot_count if inp.identity else None})
        self._reconcile()

    def _on_valve_checked(self, inp: ValveChecked) -> None:
        if inp.closed is False:
            self.alarms.raise_("valve_stuck_open", "the valve sensor still reads open after the freeze ended")
        self._close_lesion()

    def _on_record_failed(self, inp: RecordFailed) -> None:
        self.status_text = inp.problem
        if "record_not_saved" not in self.alarms.latched:
            self.alarms.raise_("record_not_saved", inp.problem)

    # ---- effects ---------------------------------------------------------------------------------

    def _emit(self, effect: Effect) -> None:
        self._out.effects.append(effect)

    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        self._emit(Record(kind, payload))

    def _alarm_record(self, kind: str, payload: dict[str, object]) -> None:
        """The alarm manager's record: best effort (the alarm is still shown; a failing store is itself an alarm)."""
        self._emit(Record(kind, dict(payload), best_effort=True))
        self._out.alarms.append((kind.removeprefix("alarm_"), str(payload.get("code", ""))))

    def _go(self, trigger: str) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise ProcedureError(f"cannot {trigger.replace('_', ' ')} while {self.state.value}")
        self._enter(target, trigger)

    def _enter(self, target: State, trigger: str) -> None:
        previous, self.state = self.state, target
        self._record("state_changed", {"from": previous.value, "to": target.value, "trigger": trigger})
        if target in TERMINAL:
            self._finish()

    def _finish(self) -> None:
        """After the last freeze, see the device's valve sensor say 'closed' (ConfirmValveClosed), then
        close the lesion in the record; a manual lesion, or one that never fired, is closed at once."""
        if not self.manual and self.cycles:
            self._emit(ConfirmValveClosed(VALVE_CLOSED_CONFIRM_S))
            return
        self._close_lesion()

    def _close_lesion(self) -> None:
        coalesced = self._flood.flush()
        if coalesced:
            self._emit(Record("device_events_coalesced", {"per_code": coalesced, "window_s": 1.0}, best_effort=True))
        if self.cartridge is not None:
            self._emit(Release(self.cartridge.cartridge_id))
        self._record("lesion_ended", {"status": self.state.value, "cycles": [c.summary() for c in self.cycles],
                                      "cartridge_seconds_used": round(self.cartridge_seconds_used, 3)})
        self._out.closes_lesion = self.lesion_closed = True

    # ---- arming: the start gate ------------------------------------------------------------------

    def _readiness(self, latest: TelemetryReceived | None, now: float) -> Readiness:
        """gates.device_readiness of the latest telemetry (manual mode: nothing to be ready)."""
        if self.manual:
            return Readiness(())
        if latest is None:
            return device_readiness(None, None)
        return device_readiness(latest.telemetry, max(0.0, (now - latest.received_at) / self.setup.time_scale))

    def _arm(self, latest: TelemetryReceived | None, now: float) -> None:
        """Check everything that must hold before a first freeze (gates.start_gate); refuse with every reason at once."""
        self.arm_result = None
        if (self.state, "arm") not in TRANSITIONS:
            self.arm_result = ProcedureError(f"cannot arm while {self.state.value}")
            raise self.arm_result
        s = self.setup
        cycles = s.cycles or self.profile.cycles
        verdict = start_gate(StartRequest(
            self.profile, cycles, self.identity, self._readiness(latest, now), s.calibration, s.trigger, s.requested_freeze_s,
            s.below_minimum, any(a.priority is Priority.HIGH and not a.acknowledged for a in self.alarms.latched.values()),
            s.config, s.today))
        for code, detail in verdict.alarms:
            self.alarms.raise_(code, detail)
        self.warnings += verdict.warnings
        if not verdict.allowed or verdict.dose is None:
            self._refuse_start(verdict.reasons)
            return
        plan = self._plan(cycles, verdict.dose, self.identity.max_freeze_ms if self.identity is not None else None)
        if plan is None:
            return
        if self.identity is not None and self.identity.kind is DeviceKind.SPRAY:
            self._pending_plan = plan
            self._emit(CheckCartridge(self._flow(), s.today))
            return
        self._armed(plan)

    def _flow(self) -> int:
        return self.setup.calibration.flow_mg_per_s if self.setup.calibration else 0

    def _refuse_start(self, reasons: list[str], record: bool = True) -> None:
        if record:
            self._record("start_refused", {"reasons": reasons})
        self.refused = tuple(reasons)
        self.arm_result = StartRefused(reasons)
        self.status_text = self._out.refused = str(self.arm_result)

    def _plan(self, cycles: int, dose: DoseDecision, device_cap: int | None) -> Plan | None:
        """A freeze counted from the spray's start is the dose itself; one counted from the halo or the
        tissue target is a spray capped by the whole-spray limit, which must leave room for the dose."""
        if self.profile.timing_start is TimingStart.SPRAY_START:
            return Plan(cycles, dose, FreezeMode.TIMED, self.setup.trigger, dose.effective_ms)
        spray_cap = min(round(self.setup.config.halo_spray_cap_s * 1000), device_cap or 10**9)
        if spray_cap < dose.effective_ms:
            self._refuse_start([f"the whole-spray cap ({spray_cap} ms) is shorter than the dose ({dose.effective_ms} ms)"], record=False)
            return None
        return Plan(cycles, dose, FreezeMode.HALO, self.setup.trigger, spray_cap)

    def _on_cartridge(self, inp: CartridgeChecked | CartridgeReserved | CartridgeRefused) -> None:
        """A spray needs a registered cartridge with gas for every planned spray: reserve it. Past its keeping
        time (Givre's own figure, config) it is a warning, or a refusal if the clinic's config says block."""
        plan = self._pending_plan
        if plan is None or self.state is not State.IDLE:
            return
        if isinstance(inp, CartridgeChecked):
            status = inp.status
            if status is not None and status.past_keeping_time:
                problem = (f"the opened cartridge is {status.age_days} days old, past its keeping time of "
                           f"{status.keeping_days} days; load a new one")
                if self.setup.config.cartridge_past_keeping == "block":
                    self._pending_plan = None
                    self._refuse_start([problem])
                    return
                self.warnings.append(problem)
            self._emit(Reserve(plan.cycles * plan.spray_cap_ms / 1000, self._flow()))
            return
        self._pending_plan = None
        if isinstance(inp, CartridgeRefused):
            self._refuse_start([inp.reason])
            return
        self.cartridge = inp.status
        self._armed(plan)

    def _armed(self, plan: Plan) -> None:
        self.plan = plan
        self.refused = ()
        self._record("armed", {"cycles": plan.cycles, "dose": plan.dose.as_record(), "mode": plan.mode.name,
                               "trigger": self.setup.trigger.name, "spray_cap_ms": plan.spray_cap_ms, "warnings": self.warnings,
                               "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None})
        self._go("arm")
        self.arm_result = plan

    # ---- STOP ----------------------------------------------------------------------------------------

    def _on_stop(self, now: float) -> None:
        self.stop_pressed = True
        if self.state in TERMINAL:
            return
        if self.state in FREEZE_MAY_RUN:
            if self.manual:  # the clinician stops; the host timer is all there is
                self._finish_cycle(None, None, EndReason.STOPPED, Certainty.HOST_MEASURED)
            return  # the device's FREEZE_DONE (STOPPED) carries the measured time
        self._record("stopped", {"state": self.state.value})
        self._enter(State.ABORTED, "stop")

    # ---- freezing ------------------------------------------------------------------------------------

    def _fire(self, latest: TelemetryReceived | None, now: float) -> None:
        if self.state is not State.ARMED:
            raise ProcedureError(f"cannot fire while {self.state.value}")
        if self.stop_pressed:
            raise ProcedureError("STOP was pressed")
        assert self.plan is not None
        readiness = self._readiness(latest, now)
        for code in readiness.alarms:
            self.alarms.raise_(code)
        if readiness.reasons:
            raise ProcedureError("; ".join(readiness.reasons))
        self._fire_at = now
        if not self.manual:
            self._emit(ReadCounters())  # the device's counters before the FREEZE: what reconciliation compares with
            return
        self._armed_waiting_since = None
        cycle = self._new_cycle(now)
        cycle.measured_by, cycle.certainty = "host", Certainty.HOST_MEASURED
        self._record("freeze_requested", {"cycle": cycle.cycle, **self.plan.dose.as_record(), "measured_by": "host"})
        self._manual_deadline = now + self.plan.dose.effective_ms / 1000
        self._go("fire")

    def _new_cycle(self, started_at: float) -> CycleRecord:
        assert self.plan is not None
        cycle = CycleRecord(len(self.cycles) + 1, self.plan.dose)
        self.cycles.append(cycle)
        self.halo_marked = False
        self._freeze_started_at = started_at
        return cycle

    def _on_counters(self, inp: CountersRead | CountersUnread, now: float) -> None:
        if self.state is not State.ARMED or self.plan is None:
            return
        if self.stop_pressed:  # STOP came while the counters were read: the FREEZE is never sent
            self._record("stopped", {"state": self.state.value})
            self._enter(State.ABORTED, "stop")
            return
        if isinstance(inp, CountersUnread):
            self._fire_failed(f"cannot read the device before freezing: {inp.text}", now)
            return
        self._armed_waiting_since = None
        plan, before = self.plan, inp.counters
        cycle = self._new_cycle(self._fire_at)
        self._counters_before = before
        self._serial_at_fire = self.identity.serial if self.identity else ""
        self._record(
            "freeze_requested",
            {"cycle": cycle.cycle, **plan.dose.as_record(), "mode": plan.mode.name, "spray_cap_ms": plan.spray_cap_ms,
             "serial": self._serial_at_fire, "boot_count": before.boot_count,
             "device_session": self.identity.device_session if self.identity else None,
             "freezes_started_before": before.freezes_started, "last_txn_before": before.last_txn},
        )
        self._go("fire")
        self._emit(SendFreeze(plan.spray_cap_ms if plan.mode is FreezeMode.HALO else plan.dose.effective_ms, plan.mode, plan.trigger))

    def _on_freeze_answer(self, inp: FreezeAccepted | FreezeRejected | FreezeUnanswered | FreezeFailed | FreezeNotSent,
                          now: float) -> None:
        if self.state is not State.FREEZING or not self.cycles or self.plan is None:
            return
        cycle = self.cycles[-1]
        if isinstance(inp, FreezeAccepted):
            cycle.txn, cycle.accepted = inp.txn, True
            self._accepted_at = now
            self._not_freezing_since = None
            device_ms = self.plan.spray_cap_ms if self.plan.mode is FreezeMode.HALO else self.plan.dose.effective_ms
            self._record("freeze_accepted", {"cycle": cycle.cycle, "txn": cycle.txn, "device_ms": device_ms})
        elif isinstance(inp, FreezeUnanswered):
            cycle.txn = inp.txn
            self._record("freeze_unanswered", {"cycle": cycle.cycle, "txn": inp.txn})
            self._become_uncertain(f"no answer to FREEZE ({inp.problem})", now)
        elif isinstance(inp, FreezeRejected):
            self._record("freeze_refused", {"cycle": cycle.cycle, "reason": inp.problem, "result": inp.result})
            self.status_text = inp.text
            self._go("faulted")
        elif isinstance(inp, FreezeNotSent):
            self.status_text = f"FREEZE not sent: {inp.why}"
            if self.stop_pressed:
                self._record("stopped", {"state": self.state.value, "freeze_sent": False})
            self._go("stopped" if self.stop_pressed else "faulted")
        else:
            self._become_uncertain(inp.text, now)

    def _mark_halo(self) -> None:
        if self.state is not State.FREEZING or self.plan is None or self.plan.mode is not FreezeMode.HALO or self.halo_marked:
            raise ProcedureError("nothing to mark: no halo-timed freeze is running")
        assert not self.manual
        self.halo_marked = True
        self._emit(SendEndIn(self.plan.dose.effective_ms))

    def _fire_failed(self, why: str, now: float) -> None:
        """A FIRE that could not start: said; headless, retried until AUTO_FIRE_PATIENCE_S, then FAULTED."""
        self.status_text = self._out.refused = why
        if not self.setup.auto or self.state is not State.ARMED:
            return
        if self._armed_waiting_since is None:
            self._armed_waiting_since = now
        elif now - self._armed_waiting_since > AUTO_FIRE_PATIENCE_S:
            self._record("fire_refused", {"reason": why})
            self._go("refused")

    # ---- the link's events ---------------------------------------------------------------------------

    def _on_link_gone(self, inp: Rebooted | LinkLost, now: float) -> None:
        if isinstance(inp, Rebooted):
            self.alarms.raise_("device_rebooted", f"boot {inp.old_boot_count} -> {inp.new_boot_count}")
        else:
            self.alarms.raise_("link_lost", inp.problem)
        if self.state is State.FREEZING:
            lost = "the device rebooted" if isinstance(inp, Rebooted) else "the link was lost"
            self._become_uncertain(f"{lost} during the freeze", now)
        elif (self.state, "faulted") in TRANSITIONS:
            self._go("faulted")

    def _on_device_event(self, item: DeviceEventReceived, now: float) -> None:
        if item.earlier_session:  # filed outside this session, never charged to it
            self._emit(Record("device_event", device_event_record(item, self.identity), lesion=False, best_effort=True))
            return
        event = item.event
        current = self.cycles[-1] if self.cycles else None
        ours = current is not None and current.txn == event.freeze_txn and (  # the current freeze's first start and end
            (event.code is EventCode.FREEZE_STARTED and not current.started_seen)
            or (event.code is EventCode.FREEZE_DONE and current.end_reason is None))
        flooding, coalesced = self._flood.count(event.code.name, now)
        if coalesced:
            self._record("device_events_coalesced", {"per_code": coalesced, "window_s": 1.0})
        if flooding and not ours:
            self._flood.not_recorded(event.code.name)
            if "device_flooding" not in self.alarms.latched:
                self.alarms.raise_("device_flooding", f"more than {FLOOD_EVENTS_PER_S} events in one second: counted, not each recorded")
        else:
            self._record("device_event", device_event_record(item, self.identity))
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
            self._finish_cycle(event.valve_open_ms, available_u32(event.halo_to_off_ms), event.end_reason, Certainty.DEVICE_REPORTED)

    def _alarm_for_faults(self, flags: int) -> None:
        for code in alarms_for_faults(flags):
            self.alarms.raise_(code)

    # ---- telemetry ------------------------------------------------------------------------------------

    def _watch_telemetry(self, latest: TelemetryReceived | None, now: float) -> None:
        self._latest = latest
        stale = latest is None or now - latest.received_at > STALE_AFTER_S * self.setup.time_scale
        self._fresh = not stale
        if latest is None or stale:
            self.alarms.raise_("telemetry_stale")
            if self.state is State.FREEZING:
                self._become_uncertain("no device data for more than 1 s during the freeze", now)
            return
        self.alarms.condition_gone("telemetry_stale")
        t = latest.telemetry
        self._watch_for_a_lost_done(latest.received_at, DeviceState(t.state), now)
        at_s = t.uptime_ms / 1000  # the device's clock: the link's latency and bunching do not touch it
        tip_c = self._tip_now = self._believed(Channel.TIP, celsius(t.tip_cdeg), at_s)
        tissue_c = self._tissue_now = self._believed(Channel.TISSUE, celsius(t.tissue_cdeg), at_s)
        if self.state is State.FREEZING and self.cycles:
            cycle = self.cycles[-1]
            if tip_c is not None:
                self._alarm_if_implausible(check_tip_cooling(tip_c, t.elapsed_ms))
                cycle.min_tip_c = min(cycle.min_tip_c if cycle.min_tip_c is not None else 99.0, tip_c)
            if tissue_c is not None:
                cycle.min_tissue_c = min(cycle.min_tissue_c if cycle.min_tissue_c is not None else 99.0, tissue_c)
            target = self.profile.target
            if target is not None and not self.halo_marked and tissue_c is not None and tissue_c <= target.tissue_c:
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
        elif now - self._not_freezing_since > DONE_OVERDUE_S * self.setup.time_scale:
            self._become_uncertain(f"the device stopped freezing ({device_state.name}) but its FREEZE_DONE never came", now)

    def _cryogen(self) -> Cryogen | None:
        return self.identity.cryogen if self.identity is not None else None

    def _believed(self, channel: Channel, value_c: float | None, at_s: float) -> float | None:
        """A temperature reading, or None where there is none or it is not believed (out of physics,
        or changed faster than that channel can: plausibility.check_temperature, then the alarm)."""
        if value_c is None:
            return None
        verdict = check_temperature(channel, value_c, at_s, self._last_reading.get(channel), self._cryogen())
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
            verdict = check_target_reached(tissue_c, at_s, start, target_c, self._cryogen())
            if not verdict.plausible:
                if self._target_refused is None:
                    self._record("tissue_target_not_believed", {"cycle": cycle.cycle, "tissue_c": tissue_c, "why": verdict.reason})
                self._target_refused = verdict.reason
                self._alarm_if_implausible(verdict)
                return
        self._record("tissue_target_reached", {"cycle": cycle.cycle, "tissue_c": tissue_c, "target_c": target_c})
        self._mark_halo()

    # ---- an unknown outcome ---------------------------------------------------------------------------

    def _become_uncertain(self, why: str, now: float) -> None:
        if self.state is State.UNCERTAIN:
            return
        self.alarms.raise_("outcome_uncertain", why)
        self._record("outcome_uncertain", {"cycle": len(self.cycles), "why": why})
        self._uncertain_since = self._last_reconcile_try = now
        self._go("outcome_unknown")
        self._reconcile()

    def _facts(self, cycle: CycleRecord) -> FreezeFacts:
        before = self._counters_before
        return FreezeFacts(self._serial_at_fire, before.boot_count if before else -1, cycle.txn, cycle.accepted, cycle.started_seen,
                           before.freezes_started if before else None, before.last_txn if before else None)

    def _reconcile(self) -> None:
        """Ask the device what really happened (controller/procedure/reconcile.py's one rule); assume nothing."""
        assert self.cycles
        self._emit(ReadAndReconcile(self._facts(self.cycles[-1])))

    def _on_reconciled(self, inp: Reconciled) -> None:
        if self.state is not State.UNCERTAIN or not self.cycles:
            return
        outcome, cycle = inp.outcome, self.cycles[-1]
        self.status_text = f"outcome: {outcome.why}"
        if not outcome.settled:
            return  # stay UNCERTAIN and retry; past the window the cycle stays open for the next connection
        if inp.fault_flags is not None:  # a latched fault also blocks the next arming
            self._alarm_for_faults(inp.fault_flags)
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
        self._record("freeze_result", {**cycle.summary(), "txn": cycle.txn, "why": outcome.why, "host_elapsed_ms": None,
                                       "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None,
                                       "cartridge_seconds": (outcome.valve_open_ms or 0) / 1000 if self.cartridge else 0.0})
        self._go("reconciled")

    # ---- a freeze's end -----------------------------------------------------------------------------

    def _finish_cycle(self, valve_open_ms: int | None, halo_ms: int | None, reason: EndReason, certainty: Certainty,
                      why: str = "") -> None:
        now = self._now
        cycle = self.cycles[-1]
        host_elapsed_ms = (now - (self._freeze_started_at or 0)) * 1000
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
            "cartridge_id": self.cartridge.cartridge_id if self.cartridge else None,
            "cartridge_seconds": seconds if self.cartridge else 0.0,  # no cartridge (cotton-tip, probe): no gas counted
        })
        last = cycle.cycle >= (self.plan.cycles if self.plan else 1)
        undelivered = self.plan is not None and self.plan.mode is FreezeMode.HALO and halo_ms is None and reason is EndReason.CAP
        if self.cartridge is not None:  # a lesion counts toward the cartridge's per-lesion figure only when its dose was delivered
            lesion_done = last and reason in (EndReason.COMPLETED, EndReason.CAP) and cycle.implausible is None and not undelivered
            self._emit(Commit(self.cartridge.cartridge_id, seconds, lesion_done))
            self.cartridge_seconds_used += seconds
        if self.state is State.UNCERTAIN and certainty is Certainty.RECONCILED:
            self._go("reconciled")
            return
        if cycle.implausible is not None:  # not complete, not billed: the record keeps the device's figure and why
            self._go("faulted")
            return
        if undelivered:
            self.status_text = (f"cycle {cycle.cycle}: the spray reached its cap with no believable "
                                f"{self.profile.timing_start.value.replace('_', ' ')}: the counted hold was not delivered")
            self.warnings.append(self.status_text)
            self._go("faulted")
            return
        outcome = END_TRIGGERS[reason]
        if outcome == "done":
            self._go("last_cycle_done" if last else "cycle_done")
            if not last:
                self._thaw_started_at = now
                self._thaw_confirmed = False
        else:
            self._go(outcome)

    def _check_duration(self, valve_open_ms: int, halo_ms: int | None, reason: EndReason, host_elapsed_ms: float) -> DurationVerdict:
        """plausibility.check_freeze_duration against what this cycle asked, the device's cap and the host's clock."""
        assert self.plan is not None
        halo_mode = self.plan.mode is FreezeMode.HALO
        asked = FreezeAsked(self.plan.mode, self.plan.spray_cap_ms if halo_mode else self.plan.dose.effective_ms,
                            self.plan.dose.effective_ms if halo_mode and self.halo_marked else None)
        return check_freeze_duration(asked, FreezeReported(valve_open_ms, reason, halo_ms),
                                     self.identity.max_freeze_ms if self.identity is not None else None, host_elapsed_ms)

    # ---- timers ------------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self.state is State.FREEZING and self.manual and self._manual_deadline is not None and now >= self._manual_deadline:
            self._finish_cycle(None, None, EndReason.COMPLETED, Certainty.HOST_MEASURED)
        elif self.state is State.THAWING:
            self._advance_thaw(now)
        elif self.state is State.ARMED and self.setup.auto:
            self._auto_fire(now)
        elif self.state is State.UNCERTAIN:
            self._retry_reconcile(now)

    def _auto_fire(self, now: float) -> None:
        """Headless: fire as soon as the device is ready; give up (FAULTED) if it never is."""
        if self.stop_pressed:
            self._on_stop(now)
            return
        try:
            self._fire(self._latest, now)
        except ProcedureError as exc:
            self._fire_failed(str(exc), now)

    def _retry_reconcile(self, now: float) -> None:
        """While the outcome is unknown, keep trying to read the device; reconnect if the link died."""
        assert self._uncertain_since is not None
        if now - self._uncertain_since > self.setup.reconnect_window_s:
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
        self._emit(ReconnectIfLost())

    def thaw_remaining(self, now: float) -> tuple[float, str]:
        """(seconds left on the thaw's minimum, what else it waits for)."""
        assert self._thaw_started_at is not None
        thaw = self.profile.thaw
        left = max(0.0, (thaw.min_s if thaw else 0.0) - (now - self._thaw_started_at))
        waiting = ""
        if thaw is not None and thaw.until_above_c is not None:
            tissue = self._tissue_now
            if tissue is None or tissue <= thaw.until_above_c:
                waiting = f"tissue to read above {thaw.until_above_c:g} C (now {tissue if tissue is not None else '?'} C)"
        return left, waiting

    def _advance_thaw(self, now: float) -> None:
        left, waiting = self.thaw_remaining(now)
        if left > 0 or waiting:
            return
        if not (self._thaw_confirmed or self.setup.auto):
            return
        assert self._thaw_started_at is not None
        cycle = self.cycles[-1]
        cycle.thaw_ms = round((now - self._thaw_started_at) * 1000)
        self._record("thaw_done", {"cycle": cycle.cycle, "thaw_ms": cycle.thaw_ms, "tissue_c": self._tissue_now,
                                   "confirmed_by": "auto" if self.setup.auto and not self._thaw_confirmed else "clinician"})
        self._go("thaw_done")

    def freeze_elapsed_s(self, now: float) -> float | None:
        """Seconds since the current freeze was fired (host clock: for the clinician's cues only)."""
        if self.state is not State.FREEZING or self._freeze_started_at is None:
            return None
        return now - self._freeze_started_at

    def next_timer(self, now: float) -> float | None:
        """When a Tick next has something to do (None: nothing is timed; the loop ticks anyway)."""
        deadlines = list(self._deadlines(now))
        return min(deadlines) if deadlines else None

    def _deadlines(self, now: float) -> Iterator[float]:
        if self.state is State.FREEZING and self.manual and self._manual_deadline is not None:
            yield self._manual_deadline
        if self.state is State.FREEZING and self._not_freezing_since is not None:
            yield self._not_freezing_since + DONE_OVERDUE_S * self.setup.time_scale
        if self.state is State.THAWING and self._thaw_started_at is not None:
            yield self._thaw_started_at + (self.profile.thaw.min_s if self.profile.thaw else 0.0)
        if self.state is State.ARMED and self.setup.auto:
            yield now if self._armed_waiting_since is None else min(now, self._armed_waiting_since + AUTO_FIRE_PATIENCE_S)
        if self.state is State.UNCERTAIN and self._uncertain_since is not None:
            yield min(self._last_reconcile_try + RECONCILE_RETRY_S, self._uncertain_since + self.setup.reconnect_window_s)

    # ---- the view ------------------------------------------------------------------------------------

    def view(self, now: float, finished: bool) -> ProcedureView:
        """The frozen value a screen, the CLI or the bench reads (built on the loop's thread)."""
        plan = self.plan
        total = plan.cycles if plan else (self.setup.cycles or self.profile.cycles)
        running = self.state in (State.FREEZING, State.UNCERTAIN, State.THAWING) or self.state in TERMINAL
        cycle = max(1, len(self.cycles)) if running or not self.cycles else min(total, len(self.cycles) + 1)
        t = self._latest.telemetry if self._latest is not None and self._fresh else None
        remaining_s = fraction = None
        if self.state is State.FREEZING and t is not None:
            total_ms = t.elapsed_ms + t.remaining_ms
            remaining_s, fraction = t.remaining_ms / 1000, (t.elapsed_ms / total_ms if total_ms else 0.0)
        thaw_left = None
        thaw_waiting = ""
        thaw_fraction = 0.0
        if self.state is State.THAWING and self._thaw_started_at is not None:
            thaw_left, thaw_waiting = self.thaw_remaining(now)
            thaw_total = self.profile.thaw.min_s if self.profile.thaw else 0.0
            thaw_fraction = (1 - thaw_left / thaw_total) if thaw_total else 1.0
        pressure_kpa = available_u16(t.pressure_kpa) if t is not None else None
        latched = sorted(self.alarms.latched.values(), key=lambda a: -a.priority)
        return ProcedureView(
            state=self.state, finished=finished, cycle=cycle, cycles_total=total, armed=plan is not None,
            dose_ms=plan.dose.effective_ms if plan else None, limited_by=plan.dose.limited_by if plan else None,
            freeze_remaining_s=remaining_s, freeze_fraction=1.0 if self.state is State.COMPLETED else (fraction or 0.0),
            thaw_left_s=thaw_left, thaw_waiting=thaw_waiting, thaw_fraction=thaw_fraction, halo_marked=self.halo_marked,
            tip_c=self._tip_now if t is not None else None, tissue_c=self._tissue_now if t is not None else None,
            pressure_bar=pressure_kpa / 100 if pressure_kpa is not None else None,
            valve_sensed_open=bool(t.valve & VALVE_SENSED_OPEN) if t is not None else None, device_data_fresh=t is not None,
            cartridge_left_s=(self.cartridge.remaining_s - self.cartridge_seconds_used) if self.cartridge else None,
            status=self.status_text, warnings=tuple(self.warnings), alarms=tuple(a.line() for a in latched), refused=self.refused,
            cycles=tuple(CycleLine(c.cycle, c.valve_open_ms, c.end_reason, str(c.certainty), c.measured_by, c.thaw_ms, c.implausible,
                                    c.halo_to_off_ms)
                         for c in self.cycles),
        )
