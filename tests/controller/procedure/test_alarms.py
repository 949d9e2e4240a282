"""Every alarm end to end: a simulator fault, the controller's alarm, the record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_mock import MockerFixture

from controller.procedure.alarms import AlarmManager, Mode, Priority
from controller.procedure.driver import Procedure
from controller.procedure.states import State
from controller.procedure.treatment import Treatment
from controller.records.store import RecordNotSaved, StoredEvent
from sim.device import SimulatedDevice
from tests.support.rig import Rig

pytestmark = pytest.mark.pty


def recorded_alarms(rig: Rig, session_id: str) -> list[str]:
    return [e.payload["code"] for e in rig.store.events(session_id) if e.kind == "alarm_raised"]


def start_freezing(rig: Rig, profile: str = "common-wart") -> tuple[Treatment, Procedure]:
    treatment, procedure = rig.procedure(profile)
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    return treatment, procedure


@pytest.mark.parametrize(
    ("kind", "inject", "code", "priority"),
    [
        ("spray", lambda d: d.stick_valve("closed"), "valve_stuck_closed", Priority.MEDIUM),
        ("spray", SimulatedDevice.block_nozzle, "no_flow", Priority.HIGH),
        ("spray", SimulatedDevice.empty_cartridge, "cartridge_empty", Priority.HIGH),
        ("spray", SimulatedDevice.reboot, "device_rebooted", Priority.HIGH),
        ("spray", lambda d: d.stall(3.0), "telemetry_stale", Priority.MEDIUM),
        ("probe", lambda d: d.sensor_fault("tissue", "open"), "sensor_fault", Priority.MEDIUM),
    ],
    ids=["valve-stuck-closed", "no-flow", "cartridge-empty", "reboot", "stale", "sensor-open"],
)
def test_a_device_fault_raises_its_alarm_and_the_record_keeps_it(
    make_rig: Callable[..., Rig], kind: str, inject: Callable[[SimulatedDevice], None], code: str, priority: Priority
) -> None:
    rig = make_rig(kind=kind)
    profile = "superficial-bcc" if kind == "probe" else "common-wart"
    if kind == "probe":
        rig.config = rig.config.model_copy(update={"calibration_overdue": "warn"})
    treatment, procedure = start_freezing(rig, profile)
    inject(rig.device)
    procedure.run()
    assert procedure.state in (State.FAULTED, State.ABORTED)
    alarm = next(a for a in procedure.alarms.history if a.code == code)
    assert alarm.priority is priority and alarm.line().startswith(f"{priority.symbol} {priority.name}: ")
    assert code in recorded_alarms(rig, treatment.session_id)
    assert not rig.device.model.valve_commanded


def test_an_alarm_acknowledged_after_the_lesion_ended_is_recorded(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    treatment, procedure = start_freezing(rig)
    rig.device.empty_cartridge()
    procedure.run()
    assert procedure.finished and procedure.alarms.latched["cartridge_empty"].priority is Priority.HIGH
    procedure.acknowledge_alarms()  # no loop runs any more: the caller's thread records it
    acknowledged = [e.payload["code"] for e in rig.store.events(treatment.session_id) if e.kind == "alarm_acknowledged"]
    assert "cartridge_empty" in acknowledged and procedure.alarms.latched["cartridge_empty"].acknowledged


def test_valve_stuck_open_tells_the_clinician_to_shut_the_cartridge(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    treatment, procedure = start_freezing(rig)
    rig.device.stick_valve("open")
    procedure.stop()
    procedure.run()
    assert procedure.state is State.ABORTED and rig.device.valve_open  # the gas still flows
    alarm = procedure.alarms.latched["valve_stuck_open"]
    assert alarm.priority is Priority.HIGH and "shut the cartridge off by hand" in alarm.text
    assert "valve_stuck_open" in recorded_alarms(rig, treatment.session_id)


def test_cartridge_low_is_a_low_priority_alarm(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10)
    rig.device.model.cartridge.remaining_g = rig.device.model.cartridge.size_g * 0.16
    _, procedure = start_freezing(rig)
    procedure.run()
    (alarm,) = [a for a in procedure.alarms.history if a.code == "cartridge_low"]
    assert alarm.priority is Priority.LOW and procedure.state is State.COMPLETED


def test_alarms_latch_until_acknowledged_and_every_step_is_recorded() -> None:
    log: list[tuple[str, dict[str, object]]] = []
    alarms = AlarmManager(lambda kind, payload: log.append((kind, payload)))
    alarms.raise_("link_lost", "cable")
    alarms.raise_("link_lost", "again")  # already latched: not raised twice
    alarms.condition_gone("link_lost")
    assert "link_lost" in alarms.latched  # cleared but not acknowledged: still shown
    alarms.acknowledge("link_lost")
    assert "link_lost" not in alarms.latched
    assert [kind for kind, _ in log] == ["alarm_raised", "alarm_cleared", "alarm_acknowledged"]


def test_treatment_only_alarms_are_silent_in_maintenance() -> None:
    alarms = AlarmManager(lambda kind, payload: None, mode=Mode.MAINTENANCE)
    assert alarms.raise_("no_flow") is None  # a cartridge change is not a treatment
    assert alarms.raise_("link_lost") is not None


def test_record_not_saved_raises_a_high_alarm_and_stop_still_closes_the_valve(make_rig: Callable[..., Rig], mocker: MockerFixture) -> None:
    rig = make_rig()
    _, procedure = start_freezing(rig)
    mocker.patch.object(rig.store, "append", side_effect=RecordNotSaved("disk full"))
    procedure.stop()  # reaches the device from this thread, whatever the store does
    assert not rig.device.model.valve_commanded
    with pytest.raises(RecordNotSaved):
        procedure.run()
    alarm = procedure.alarms.latched["record_not_saved"]
    assert alarm.priority is Priority.HIGH and "disk full" in alarm.detail


def test_a_tip_that_does_not_cool_is_implausible(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(kind="probe", scale=10)
    rig.device.model.tip.gain = 0.0  # the thermocouple reads a constant offset whatever the tip does
    rig.device.model.tip.offset_c = 25.0
    treatment, procedure = rig.procedure("superficial-bcc")
    procedure.arm()
    while not procedure.alarms.latched.get("temperature_implausible") and not procedure.finished:
        procedure.tick()
    procedure.stop()
    procedure.run()
    alarm = next(a for a in procedure.alarms.history if a.code == "temperature_implausible")
    assert "tip still at" in alarm.detail and "temperature_implausible" in recorded_alarms(rig, treatment.session_id)


def test_a_silent_link_mid_freeze_trips_the_device_watchdog_and_the_alarm_follows(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    treatment, procedure = start_freezing(rig)
    rig.device.stall(3.0)  # the device stops hearing the host: its 2 s watchdog closes the valve
    procedure.run()
    codes = {a.code for a in procedure.alarms.history}
    assert {"telemetry_stale", "outcome_uncertain", "watchdog_trip"} <= codes
    assert procedure.cycles[0].end_reason == "WATCHDOG"
    assert {"telemetry_stale", "watchdog_trip"} <= set(recorded_alarms(rig, treatment.session_id))


def test_a_freeze_whose_request_cannot_be_recorded_is_never_sent(make_rig: Callable[..., Rig], mocker: MockerFixture) -> None:
    rig = make_rig()
    _, procedure = rig.procedure("common-wart", auto=False)
    procedure.arm()
    append = rig.store.append

    def append_but_the_request(kind: str, payload: dict[str, Any], session_id: str | None = None) -> StoredEvent:
        if kind == "freeze_requested":
            raise RecordNotSaved("disk full")
        return append(kind, payload, session_id)

    mocker.patch.object(rig.store, "append", side_effect=append_but_the_request)
    procedure.fire()
    with pytest.raises(RecordNotSaved):
        procedure.tick()
    procedure.run()
    assert procedure.state is State.FAULTED and "FREEZE not sent" in procedure.status_text
    assert not rig.device.model.valve_log  # the valve never opened
    assert procedure.alarms.latched["record_not_saved"].priority is Priority.HIGH
