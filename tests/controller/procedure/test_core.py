"""The procedure's pure core with plain numbers: no device, no pty, no store, no clock.

A Harness feeds the core as the driver does and plays a scripted device: each command the core
emits is answered at once (depth first) with the answer the test chose, and every state change
the core records is checked against states.TRANSITIONS.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from controller.config import Config
from controller.procedure.core import (
    AUTO_FIRE_PATIENCE_S,
    DONE_OVERDUE_S,
    FLOOD_EVENTS_PER_S,
    RECONCILE_RETRY_S,
    Acknowledge,
    Arm,
    CartridgeChecked,
    CartridgeReserved,
    CheckCartridge,
    Commit,
    ConfirmThaw,
    ConfirmValveClosed,
    CoreSetup,
    CountersRead,
    DeviceEvent,
    Effect,
    Fire,
    FreezeAccepted,
    FreezeNotSent,
    FreezeRejected,
    FreezeUnanswered,
    HaloAcked,
    Input,
    LinkLost,
    LinkUp,
    MarkHalo,
    Output,
    ProcedureCore,
    ReadAndReconcile,
    ReadCounters,
    Reconciled,
    Reconnected,
    ReconnectIfLost,
    Record,
    RecordFailed,
    Release,
    Reserve,
    SendEndIn,
    SendFreeze,
    StartRefused,
    Stop,
    StopPressed,
    TelemetrySeen,
    Tick,
    ValveChecked,
)
from controller.procedure.reconcile import Finding, Outcome, reconcile
from controller.procedure.states import TERMINAL, TRANSITIONS, State, state_table
from controller.procedure.view import ProcedureView
from controller.records.certainty import Certainty
from controller.records.ledger import CartridgeStatus
from firmware_bridge.link import DeviceIdentity
from firmware_bridge.messages import (
    NOT_AVAILABLE_TEMP,
    NOT_AVAILABLE_U16,
    NOT_AVAILABLE_U32,
    CalData,
    Capability,
    Counters,
    Cryogen,
    DeviceKind,
    DeviceState,
    EndReason,
    Event,
    EventCode,
    Telemetry,
)
from firmware_bridge.session import DeviceEventReceived, TelemetryReceived
from firmware_bridge.units import day_number
from profiles.library import load_builtins

T0 = 1000.0
TXN = 7
BOOT = 3
LIBRARY = load_builtins()


def identity(kind: DeviceKind) -> DeviceIdentity:
    caps = Capability.TIP_THERMOCOUPLE | Capability.PRESSURE_SENSOR
    if kind is DeviceKind.PROBE:
        caps |= Capability.TISSUE_THERMOCOUPLE | Capability.HALO_TIMING
    return DeviceIdentity("sim", kind, Cryogen.LN2 if kind is DeviceKind.PROBE else Cryogen.N2O, "1.0", "SIM-1", "1.1", BOOT,
                          60_000, 2000, caps, 0, 0x1234, 1)


CALIBRATED = CalData(0, 1000, 0, 0, 0, 0, 15, 10, day_number(date.today()), day_number(date.today()) + 300)
CARTRIDGE = CartridgeStatus("C1", "23g", "2026-11-01", 1, 7, False, 350.0, "nominal", 0.0, 0.0, 350.0, 0, 35, 0.5, 18.0, "")


def counters(freezes: int = 4, last_txn: int = 3, end: EndReason = EndReason.COMPLETED, valve_ms: int = 5000,
             boot: int = BOOT) -> Counters:
    return Counters(boot, 0, 0, freezes, 0, last_txn, valve_ms, valve_ms, NOT_AVAILABLE_U32, end, boot, 0)


class Harness:
    """The core, fed as the driver feeds it, with a scripted device that answers each command at once."""

    def __init__(self, profile_id: str = "common-wart", kind: DeviceKind | None = DeviceKind.SPRAY, config: Config | None = None,
                 **choice: Any) -> None:
        ident = identity(kind) if kind is not None else None
        self.core = ProcedureCore(CoreSetup(LIBRARY.get(profile_id).profile, config or Config(), ident, CALIBRATED if ident else None,
                                            date.today(), **choice))
        self.now = T0
        self.effects: list[Effect] = []
        self.last: Output = Output()
        self.counters_after = counters(5, TXN)
        self.answers: dict[type, Callable[[Any], Input | None]] = {
            ReadCounters: lambda _: CountersRead(counters()),
            SendFreeze: lambda _: FreezeAccepted(TXN),
            SendEndIn: lambda c: HaloAcked(c.ms),
            ReadAndReconcile: lambda c: Reconciled(reconcile(c.facts, "SIM-1", self.counters_after)),
            ReconnectIfLost: lambda _: LinkUp(),
            ConfirmValveClosed: lambda _: ValveChecked(True),
            CheckCartridge: lambda _: CartridgeChecked(CARTRIDGE),
            Reserve: lambda _: CartridgeReserved(CARTRIDGE),
        }

    def feed(self, inp: Input, at: float | None = None) -> Output:
        if at is not None:
            self.now = at
        out = self.last = self.core.handle(inp, self.now)
        for effect in out.effects:
            self.effects.append(effect)
            if isinstance(effect, Record) and effect.kind == "state_changed":
                p = effect.payload
                assert p["trigger"] == "stop" or TRANSITIONS[(State(p["from"]), p["trigger"])] is State(p["to"]), p
            answer = self.answers.get(type(effect))
            if answer is not None:
                reply = answer(effect)
                if reply is not None:
                    self.feed(reply)
        self.last = out
        return out

    def state(self) -> State:
        """A method, not a property: each call reads the core anew (mypy narrows a property after an assert)."""
        return self.core.state

    def kinds(self) -> list[str]:
        return [e.kind for e in self.effects if isinstance(e, Record)]

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.effects if isinstance(e, Record) and e.kind == kind]

    def commands(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def telemetry(self, state: DeviceState = DeviceState.READY, *, tissue_c: float | None = None, at: float | None = None,
                  valve: int = 0, faults: int = 0) -> TelemetryReceived:
        when = self.now if at is None else at
        tissue = NOT_AVAILABLE_TEMP if tissue_c is None else round(tissue_c * 100)
        return TelemetryReceived(Telemetry(round(when * 1000), BOOT, state, valve, 0, TXN, 0, 0, NOT_AVAILABLE_U16,
                                           NOT_AVAILABLE_TEMP, tissue, faults), when)

    def event(self, code: EventCode, *, end: EndReason = EndReason.NONE, valve_ms: int = 0, halo_ms: int = NOT_AVAILABLE_U32,
              event_id: int = 1) -> DeviceEvent:
        return DeviceEvent(DeviceEventReceived(Event(event_id, code, end, TXN, 0, 0, valve_ms, halo_ms, round(self.now * 1000)),
                                               self.now, earlier_session=False))

    def arm(self) -> Output:
        return self.feed(Arm(self.telemetry()))

    def fire(self) -> Output:
        return self.feed(Fire(self.telemetry()))

    def done(self, valve_ms: int, end: EndReason = EndReason.COMPLETED, halo_ms: int = NOT_AVAILABLE_U32,
             after_s: float | None = None) -> Output:
        """The device's FREEZE_DONE, ``after_s`` after the freeze was fired (default: just after the valve closed)."""
        self.now += valve_ms / 1000 + 0.05 if after_s is None else after_s
        return self.feed(self.event(EventCode.FREEZE_DONE, end=end, valve_ms=valve_ms, halo_ms=halo_ms, event_id=99))


def probe() -> Harness:
    """Controlled cryosurgery: two cycles counted from the tissue target (HALO mode), thaw until the tissue reads above 0 C."""
    return Harness("superficial-bcc", DeviceKind.PROBE)


def probe_cycle(h: Harness) -> None:
    h.fire()
    h.feed(MarkHalo())
    h.done(35_000, halo_ms=30_000)


def drive_to(state: State) -> Harness:
    h = probe()
    if state is State.IDLE:
        return h
    if state is State.ABORTED:
        h.feed(Stop())
        return h
    h.arm()
    if state is State.FAULTED:
        h.answers[SendFreeze] = lambda _: FreezeRejected("busy", 2, "the device refused: busy")
        h.fire()
    elif state is State.UNCERTAIN:
        h.answers[SendFreeze] = lambda _: FreezeUnanswered(TXN, "no answer")
        h.answers[ReadAndReconcile] = lambda _: Reconciled(Outcome(Finding.UNRESOLVED, "cannot be read now"))
        h.fire()
    elif state is State.FREEZING:
        h.fire()
    elif state in (State.THAWING, State.COMPLETED):
        probe_cycle(h)
        if state is State.COMPLETED:
            h.feed(TelemetrySeen(h.telemetry(tissue_c=5.0)))
            h.feed(ConfirmThaw())
            h.feed(Tick())
            probe_cycle(h)
    assert h.state() is state, (h.state(), h.core.status_text)
    return h


# ---- every (state, intent) pair: allowed or refused ------------------------------------------------

ALLOWED = {("arm", State.IDLE), ("fire", State.ARMED), ("mark_halo", State.FREEZING), ("confirm_thaw", State.THAWING)}
INTENTS: dict[str, Callable[[Harness], Input]] = {
    "arm": lambda h: Arm(h.telemetry()),
    "fire": lambda h: Fire(h.telemetry()),
    "mark_halo": lambda _: MarkHalo(),
    "confirm_thaw": lambda _: ConfirmThaw(),
    "acknowledge": lambda _: Acknowledge(),
}


@pytest.mark.parametrize("intent", list(INTENTS))
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_every_intent_in_every_state_is_allowed_or_refused_with_the_reason(state: State, intent: str) -> None:
    h = drive_to(state)
    before = len(h.effects)
    out = h.feed(INTENTS[intent](h))
    if (intent, state) in ALLOWED or intent == "acknowledge":
        assert out.refused is None, out.refused
    else:
        assert out.refused is not None and h.state() is state
        assert h.core.status_text == out.refused
        assert not [e for e in h.effects[before:] if isinstance(e, Record) and e.kind != "alarm_raised"]  # nothing happened


def test_the_matrix_covers_every_state_and_only_the_table_moves_the_core() -> None:
    assert {state for _, state in ALLOWED} | TERMINAL | {State.UNCERTAIN} == set(State)
    assert all(trigger != "stop" for _, trigger in TRANSITIONS)  # STOP is handled before the table


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_lost_link_in_every_state_follows_the_table(state: State) -> None:
    h = drive_to(state)
    h.answers[ReadAndReconcile] = lambda c: Reconciled(reconcile(c.facts, None, None, "port closed"))
    h.feed(LinkLost("port closed"))
    assert "link_lost" in h.core.alarms.latched
    if state is State.FREEZING:
        assert h.state() is State.UNCERTAIN  # the freeze's outcome is unknown: read the device, never assume
    elif (state, "faulted") in TRANSITIONS:
        assert h.state() is State.FAULTED
    else:
        assert h.state() is state


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_another_freezes_done_and_a_tick_move_no_state(state: State) -> None:
    h = drive_to(state)
    before = [dataclasses.replace(c) for c in h.core.cycles]
    event = h.event(EventCode.FREEZE_DONE, end=EndReason.COMPLETED, valve_ms=5000, event_id=77)
    h.feed(DeviceEvent(dataclasses.replace(event.received, event=dataclasses.replace(event.received.event, freeze_txn=TXN + 1))))
    h.feed(Tick())
    assert h.state() is state and h.core.cycles == before
    assert h.records("device_event")[-1]["txn"] == TXN + 1  # recorded, never charged to this freeze


def test_every_input_type_has_its_handler() -> None:
    assert set(typing.get_args(Input)) == set(ProcedureCore(Harness().core.setup)._handlers)


# ---- STOP from every state -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_stop_from_every_state(state: State) -> None:
    h = drive_to(state)
    before = len(h.effects)
    h.feed(StopPressed())
    h.feed(Stop())
    new = [e.kind for e in h.effects[before:] if isinstance(e, Record)]
    if state in TERMINAL:
        assert h.state() is state and new == []
    elif state in (State.FREEZING, State.UNCERTAIN):
        assert h.state() is state and new == []  # the device's FREEZE_DONE (STOPPED) carries the measured time
        if state is State.FREEZING:
            h.done(1200, EndReason.STOPPED, after_s=1.3)
            assert h.state() is State.ABORTED and h.core.cycles[-1].end_reason == "STOPPED"
    else:
        assert h.state() is State.ABORTED and new[:2] == ["stopped", "state_changed"] and new[-1] == "lesion_ended"
    assert h.feed(Fire(h.telemetry())).refused is not None


def test_stop_pressed_refuses_any_later_fire() -> None:
    h = Harness()
    h.arm()
    h.feed(StopPressed())
    assert h.feed(Fire(h.telemetry())).refused == "STOP was pressed" and h.state() is State.ARMED


def test_stop_in_a_manual_freeze_is_host_measured() -> None:
    h = Harness(kind=None)
    h.arm()
    h.fire()
    h.feed(Stop(), at=T0 + 3.0)
    cycle = h.core.cycles[0]
    assert h.state() is State.ABORTED and cycle.end_reason == "STOPPED" and cycle.valve_open_ms == 3000
    assert cycle.certainty is Certainty.HOST_MEASURED and not h.commands(ConfirmValveClosed)


# ---- arming -----------------------------------------------------------------------------------------------


def test_a_spray_arms_only_with_a_reserved_cartridge_covering_every_spray() -> None:
    h = Harness("plantar-wart")
    h.arm()
    assert h.state() is State.ARMED and h.core.cartridge == CARTRIDGE
    (reserve,) = h.commands(Reserve)
    assert reserve.seconds == 2 * 20.0
    assert h.kinds()[-2:] == ["armed", "state_changed"]


def test_a_cartridge_past_its_keeping_time_warns_and_refuses_only_when_the_config_blocks() -> None:
    """The keeping time is Givre's own figure (the sheet says "plusieurs jours"): a warning unless the clinic blocks."""
    stale = dataclasses.replace(CARTRIDGE, age_days=10, past_keeping_time=True)
    h = Harness()
    h.answers[CheckCartridge] = lambda _: CartridgeChecked(stale)
    h.arm()
    assert h.state() is State.ARMED and not h.records("start_refused")
    assert any("10 days old" in w for w in h.records("armed")[0]["warnings"])
    h = Harness(config=Config(cartridge_past_keeping="block"))
    h.answers[CheckCartridge] = lambda _: CartridgeChecked(stale)
    h.arm()  # the refusal comes with CartridgeChecked's output, which the driver executes first
    assert h.state() is State.IDLE and "10 days old" in h.core.refused[0] and isinstance(h.core.arm_result, StartRefused)
    assert h.records("start_refused") and not h.commands(Reserve)


def test_stale_device_data_refuses_arming_with_every_reason() -> None:
    h = Harness()
    out = h.feed(Arm(h.telemetry(at=T0 - 5)))
    assert h.state() is State.IDLE and out.refused is not None and "STALE" in out.refused
    assert h.records("start_refused")[0]["reasons"] == list(h.core.refused)


# ---- timers -----------------------------------------------------------------------------------------------


def test_manual_mode_ends_the_freeze_at_the_host_deadline() -> None:
    h = Harness(kind=None)
    h.arm()
    out = h.fire()
    assert out.next_timer == T0 + 10.0 and h.state() is State.FREEZING
    h.feed(Tick(), at=T0 + 9.9)
    assert h.state() is State.FREEZING
    h.feed(Tick(), at=T0 + 10.0)
    cycle = h.core.cycles[0]
    assert h.state() is State.COMPLETED and cycle.valve_open_ms == 10_000 and cycle.measured_by == "host"
    assert h.core.lesion_closed and h.last.closes_lesion and h.kinds()[-1] == "lesion_ended"


def test_the_thaw_waits_for_its_minimum_and_the_clinician() -> None:
    h = Harness("plantar-wart")
    h.arm()
    h.fire()
    h.done(20_000)
    assert h.state() is State.THAWING
    started = h.now
    assert h.last.next_timer == started + 30.0
    h.feed(Tick(), at=started + 31)
    assert h.state() is State.THAWING  # the minimum is over; the clinician has not confirmed
    h.feed(ConfirmThaw())
    h.feed(Tick(), at=started + 31.5)
    assert h.state() is State.ARMED and h.core.cycles[0].thaw_ms == 31_500
    assert h.records("thaw_done")[0]["confirmed_by"] == "clinician"


def test_a_headless_thaw_ends_at_its_minimum_by_itself() -> None:
    h = Harness("plantar-wart", auto=True)
    h.arm()
    h.fire()
    h.done(20_000)
    started = h.now
    h.feed(Tick(), at=started + 29.9)
    assert h.state() is State.THAWING
    h.feed(TelemetrySeen(h.telemetry()), at=started + 30)
    h.feed(Tick())
    assert h.state() is State.ARMED
    h.feed(Tick())
    assert h.state() is State.FREEZING and len(h.core.cycles) == 2  # fired at the next turn (auto)
    assert h.records("thaw_done")[0]["confirmed_by"] == "auto"


def test_a_thaw_waits_for_the_tissue_to_read_above_its_threshold() -> None:
    h = probe()
    h.arm()
    probe_cycle(h)
    h.feed(ConfirmThaw())
    h.feed(TelemetrySeen(h.telemetry(tissue_c=-3.0)))
    h.feed(Tick())
    assert h.state() is State.THAWING and "tissue to read above 0 C" in h.core.thaw_remaining(h.now)[1]
    h.feed(TelemetrySeen(h.telemetry(tissue_c=2.0, at=h.now + 1)), at=h.now + 1)
    h.feed(Tick())
    assert h.state() is State.ARMED and h.records("thaw_done")[0]["tissue_c"] == 2.0


def test_auto_fire_waits_for_a_ready_device_then_gives_up() -> None:
    h = Harness(auto=True)
    h.arm()
    h.feed(TelemetrySeen(h.telemetry(at=T0 - 5)))  # stale: not ready
    out = h.feed(Tick())
    assert h.state() is State.ARMED and out.refused is not None and "STALE" in out.refused
    h.feed(Tick(), at=T0 + AUTO_FIRE_PATIENCE_S)
    assert h.state() is State.ARMED
    h.feed(Tick(), at=T0 + AUTO_FIRE_PATIENCE_S + 0.1)
    assert h.state() is State.FAULTED and h.records("fire_refused")


def test_an_unknown_outcome_is_retried_then_given_up_and_left_open() -> None:
    h = drive_to(State.UNCERTAIN)
    start = h.now
    assert len(h.commands(ReadAndReconcile)) == 1 and "outcome_uncertain" in h.core.alarms.latched
    h.feed(Tick(), at=start + RECONCILE_RETRY_S - 0.1)
    assert len(h.commands(ReadAndReconcile)) == 1
    h.feed(Tick(), at=start + RECONCILE_RETRY_S + 0.1)
    assert len(h.commands(ReconnectIfLost)) == 1 and len(h.commands(ReadAndReconcile)) == 2
    h.feed(Tick(), at=start + 10.1)
    cycle = h.core.cycles[0]
    assert h.state() is State.FAULTED and cycle.certainty is Certainty.UNRESOLVED and h.records("freeze_unresolved")
    assert "freeze_result" not in h.kinds()


def test_an_unanswered_freeze_reconciled_from_the_counters_is_never_resumed() -> None:
    h = Harness()
    h.arm()
    h.answers[SendFreeze] = lambda _: FreezeUnanswered(TXN, "no answer")
    readings = iter([None, counters(5, TXN, EndReason.WATCHDOG, 2100)])
    h.answers[ReadAndReconcile] = lambda c: Reconciled(reconcile(c.facts, "SIM-1", next(readings), "no answer"), 0)
    h.fire()
    cycle = h.core.cycles[0]
    assert h.state() is State.UNCERTAIN and "cannot be read now" in h.core.status_text
    h.feed(Tick(), at=T0 + 2.5)
    assert h.state() is State.FAULTED and cycle.certainty is Certainty.RECONCILED and cycle.end_reason == "WATCHDOG"
    assert cycle.valve_open_ms == 2100 and cycle.implausible is None
    assert h.records("freeze_result")[0]["certainty"] == Certainty.RECONCILED


def test_a_reconnection_is_recorded_before_the_device_is_read_again() -> None:
    h = drive_to(State.UNCERTAIN)
    h.answers[ReconnectIfLost] = lambda _: Reconnected(identity(DeviceKind.PROBE))
    h.feed(Tick(), at=h.now + RECONCILE_RETRY_S + 0.1)
    kinds = [e.kind if isinstance(e, Record) else type(e).__name__ for e in h.effects]
    assert kinds[-2:] == ["reconnected", "ReadAndReconcile"]


# ---- the device's events ---------------------------------------------------------------------------------


def test_a_lost_freeze_done_is_asked_of_the_device() -> None:
    h = Harness()
    h.arm()
    h.fire()
    accepted = h.now
    h.feed(TelemetrySeen(h.telemetry(DeviceState.FREEZING, at=accepted + 5)), at=accepted + 5)
    h.feed(TelemetrySeen(h.telemetry(DeviceState.READY, at=accepted + 10.1)), at=accepted + 10.1)
    assert h.state() is State.FREEZING and h.last.next_timer == pytest.approx(accepted + 10.1 + DONE_OVERDUE_S)
    h.counters_after = counters(5, TXN, EndReason.COMPLETED, 10_000)
    h.feed(TelemetrySeen(h.telemetry(DeviceState.READY, at=accepted + 11.2)), at=accepted + 11.2)
    cycle = h.core.cycles[0]
    assert "FREEZE_DONE never came" in h.records("outcome_uncertain")[0]["why"]
    assert h.state() is State.FAULTED and cycle.certainty is Certainty.RECONCILED and cycle.valve_open_ms == 10_000


def test_a_flood_is_counted_not_recorded_and_the_current_freezes_done_still_ends_it() -> None:
    h = Harness()
    h.arm()
    h.fire()
    h.now += 10.05
    for i in range(200):
        h.feed(h.event(EventCode.FAULT_CLEARED, event_id=i + 1))
    assert "device_flooding" in h.core.alarms.latched
    assert len(h.records("device_event")) == FLOOD_EVENTS_PER_S
    h.feed(h.event(EventCode.FREEZE_DONE, end=EndReason.COMPLETED, valve_ms=10_000, event_id=500))
    assert h.state() is State.COMPLETED and h.core.cycles[0].valve_open_ms == 10_000
    assert len(h.records("device_event")) == FLOOD_EVENTS_PER_S + 1
    (coalesced,) = h.records("device_events_coalesced")
    assert coalesced["per_code"] == {"FAULT_CLEARED": 200 - FLOOD_EVENTS_PER_S}
    assert h.kinds()[-1] == "lesion_ended"


def test_an_earlier_sessions_event_is_filed_outside_the_lesion() -> None:
    h = Harness()
    event = h.event(EventCode.FREEZE_DONE, end=EndReason.WATCHDOG, valve_ms=150)
    h.feed(DeviceEvent(dataclasses.replace(event.received, earlier_session=True)))
    (record,) = [e for e in h.effects if isinstance(e, Record)]
    assert record.kind == "device_event" and not record.lesion and record.payload["earlier_session"] is True
    assert h.state() is State.IDLE


@pytest.mark.parametrize(("valve_ms", "why", "charged"), [
    (4_294_967_294, "more than the FREEZE asked", (0.0, 10.02)),
    (0, "COMPLETED at 0 ms", (9.9, 10.2)),
])
def test_an_implausible_duration_is_kept_marked_not_completed_and_charged_the_bound(
        valve_ms: int, why: str, charged: tuple[float, float]) -> None:
    h = Harness()
    h.arm()
    h.fire()
    h.done(valve_ms, after_s=10.1)
    cycle = h.core.cycles[0]
    assert h.state() is State.FAULTED and cycle.valve_open_ms == valve_ms and cycle.implausible and why in cycle.implausible
    assert "figure_implausible" in h.core.alarms.latched
    (commit,) = h.commands(Commit)
    assert charged[0] <= commit.seconds <= charged[1]
    (result,) = h.records("freeze_result")
    assert result["freeze_ms_device"] == valve_ms and result["cartridge_seconds"] == commit.seconds
    assert h.commands(Release) and h.kinds()[-1] == "lesion_ended"


def test_a_completed_spray_commits_what_the_device_measured_and_the_valve_is_seen_closed() -> None:
    h = Harness()
    h.arm()
    h.fire()
    h.done(10_004)
    (commit,) = h.commands(Commit)
    assert h.state() is State.COMPLETED and commit.seconds == 10.004 and commit.lesion_done
    assert h.core.cartridge_seconds_used == 10.004
    order = [type(e).__name__ for e in h.effects if not isinstance(e, Record)]
    assert order[-3:] == ["Commit", "ConfirmValveClosed", "Release"]


def test_a_valve_still_open_after_the_last_freeze_is_a_high_alarm() -> None:
    h = Harness()
    h.answers[ConfirmValveClosed] = lambda _: ValveChecked(False)
    h.arm()
    h.fire()
    h.done(10_000)
    assert "valve_stuck_open" in h.core.alarms.latched and h.kinds()[-1] == "lesion_ended"


def test_a_freeze_request_is_recorded_before_the_freeze_is_sent() -> None:
    h = Harness()
    h.arm()
    h.fire()
    kinds = [e.kind if isinstance(e, Record) else type(e).__name__ for e in h.effects]
    assert kinds.index("ReadCounters") < kinds.index("freeze_requested") < kinds.index("SendFreeze") < kinds.index("freeze_accepted")


def test_a_record_not_saved_is_a_high_alarm_once() -> None:
    h = Harness()
    h.feed(RecordFailed("disk full"))
    h.feed(RecordFailed("disk full"))
    assert h.core.alarms.latched["record_not_saved"].detail == "disk full" and len(h.records("alarm_raised")) == 1


def test_a_link_lost_mid_freeze_makes_the_outcome_unknown() -> None:
    h = Harness()
    h.arm()
    h.fire()
    h.feed(LinkLost("port closed"))
    assert {"link_lost", "outcome_uncertain"} <= set(h.core.alarms.latched)
    assert h.commands(ReadAndReconcile)


# ---- the view --------------------------------------------------------------------------------------------


def test_the_view_is_a_frozen_value_of_one_moment() -> None:
    h = Harness("plantar-wart")
    view = h.core.view(h.now, finished=False)
    assert isinstance(view, ProcedureView) and (view.state, view.cycle, view.cycles_total, view.armed) == (State.IDLE, 1, 2, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "x"  # type: ignore[misc]  # frozen: the point of the test
    h.arm()
    h.fire()
    h.feed(TelemetrySeen(h.telemetry(DeviceState.FREEZING, valve=0b11)), at=h.now + 1)
    view = h.core.view(h.now, finished=False)
    assert view.state is State.FREEZING and view.dose_ms == 20_000 and view.valve_sensed_open and view.device_data_fresh
    h.done(20_000)
    view = h.core.view(h.now + 10, finished=False)
    assert view.state is State.THAWING and view.cycle == 1 and view.thaw_left_s == pytest.approx(20.0)
    assert view.cycles[0].valve_open_ms == 20_000 and view.cartridge_left_s == pytest.approx(350.0 - 20.0)


# ---- docs ------------------------------------------------------------------------------------------------


def test_docs_procedure_md_shows_the_state_table_of_the_code() -> None:
    text = (Path(__file__).parents[3] / "docs" / "procedure.md").read_text(encoding="utf-8")
    assert state_table() in text, "docs/procedure.md: paste controller.procedure.states.state_table() between its markers"


def test_stop_pressed_while_the_counters_are_read_means_the_freeze_is_never_sent() -> None:
    h = Harness()
    h.arm()
    h.answers[ReadCounters] = lambda _: None  # the driver is still reading the device when STOP comes
    h.fire()
    h.feed(StopPressed())
    h.feed(CountersRead(counters()))
    assert h.commands(SendFreeze) == [] and h.state() is State.ABORTED and "stopped" in h.kinds()


def test_stop_pressed_before_the_freeze_went_out_ends_stopped_not_faulted() -> None:
    h = Harness()
    h.arm()
    h.answers[SendFreeze] = lambda _: None  # the driver saw STOP before writing the FREEZE
    h.fire()
    h.feed(StopPressed())
    h.feed(FreezeNotSent("STOP was pressed before it went out"))
    assert h.state() is State.ABORTED and h.records("stopped")[-1]["freeze_sent"] is False
