"""The procedure controller against the simulator on a real pty; long protocols on virtual time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from controller.config import Config
from controller.procedure.dose import BelowMinimumOverride
from controller.procedure.driver import Procedure, StartRefused
from controller.procedure.recovery import unfinished_sessions
from controller.procedure.states import TRANSITIONS, State
from controller.procedure.treatment import Treatment
from controller.procedure.view import ProcedureView
from controller.records.certainty import Certainty
from controller.records.history import view_of
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import Fault
from profiles.library import load_builtins
from tests.support.rig import Rig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pty

SPRAY_PROFILES = [
    "plantar-wart", "common-wart", "condyloma", "actinic-keratosis", "seborrheic-keratosis-thin",
    "seborrheic-keratosis-thick", "skin-tag", "solar-lentigo", "molluscum-contagiosum",
]


@pytest.mark.parametrize("profile_id", SPRAY_PROFILES)
def test_full_protocol_for_every_spray_profile(make_rig: Callable[..., Rig], profile_id: str) -> None:
    rig = make_rig(scale=20)
    treatment, procedure = rig.procedure(profile_id)
    procedure.arm()
    procedure.run()
    assert procedure.state is State.COMPLETED, procedure.status_text
    profile = procedure.profile
    assert len(procedure.cycles) == profile.cycles
    for cycle in procedure.cycles:
        assert cycle.measured_by == "device" and cycle.certainty is Certainty.DEVICE_REPORTED
        assert cycle.valve_open_ms is not None and abs(cycle.valve_open_ms - profile.freeze_s.default * 1000) <= 60
    if profile.cycles > 1:
        thaw_ms = procedure.cycles[0].thaw_ms
        assert profile.thaw is not None and thaw_ms is not None and thaw_ms >= profile.thaw.min_s * 1000
    assert treatment.end() == "completed"
    kinds = rig.kinds(treatment.session_id)
    assert kinds.count("freeze_result") == profile.cycles and kinds[-1] == "session_ended"
    used = sum(c.valve_open_ms or 0 for c in procedure.cycles) / 1000
    status = procedure.ledger.status()
    assert status is not None and status.used_s == pytest.approx(used) and status.reserved_s == 0


def test_controlled_cryosurgery_counts_the_hold_from_the_tissue_target(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(kind="probe", scale=20)
    treatment, procedure = rig.procedure("superficial-bcc", region="nose")
    procedure.arm()
    procedure.run()
    assert procedure.state is State.COMPLETED, procedure.status_text
    for cycle in procedure.cycles:
        assert cycle.min_tissue_c is not None and cycle.min_tissue_c <= -50
        assert cycle.halo_to_off_ms is not None and abs(cycle.halo_to_off_ms - 30_000) <= 100  # the hold at the target
        assert cycle.valve_open_ms is not None and cycle.valve_open_ms > cycle.halo_to_off_ms  # gas used before the target too
    first = procedure.cycles[0]
    assert first.thaw_ms is not None
    thaw = next(e for e in rig.store.events(treatment.session_id) if e.kind == "thaw_done")
    assert thaw.payload["tissue_c"] > 0  # a thaw is complete only above 0 C
    kinds = rig.kinds(treatment.session_id)
    assert kinds.count("tissue_target_reached") == 2


def test_a_cryosurgery_profile_is_refused_on_a_spray(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    _, procedure = rig.procedure("superficial-bcc")
    with pytest.raises(StartRefused) as info:
        procedure.arm()
    text = str(info.value)
    assert "runs on probe, not on a spray device" in text and "needs LN2" in text and "tissue thermocouple" in text
    assert not rig.device.model.valve_log


def test_a_device_cap_below_the_profile_minimum_refuses_to_start_and_nothing_sprays(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10, max_freeze_ms=8000)
    treatment, procedure = rig.procedure("seborrheic-keratosis-thick", requested_freeze_s=25)
    with pytest.raises(StartRefused) as info:
        procedure.arm()
    assert "the limits leave 8 s per cycle (the device's own cap (handshake)), below profile seborrheic-keratosis-thick's minimum " \
           "of 20 s" in str(info.value) and "override it explicitly with who and why" in str(info.value)
    refused = next(e for e in rig.store.events(treatment.session_id) if e.kind == "start_refused")
    assert any("below profile" in reason for reason in refused.payload["reasons"])
    assert not rig.device.model.valve_log


def test_dose_chain_device_cap_wins_by_override_and_the_record_says_who_and_why(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10, max_freeze_ms=8000)
    override = BelowMinimumOverride(by="dr-a", why="only device available; lesion re-treated in 3 weeks")
    treatment, procedure = rig.procedure("seborrheic-keratosis-thick", requested_freeze_s=25, below_minimum=override)
    plan = procedure.arm()
    assert (plan.dose.requested_ms, plan.dose.effective_ms, plan.dose.limited_by) == (25_000, 8000, "device")
    assert any("below the profile's minimum of 20 s: overridden by dr-a" in w for w in procedure.warnings)
    procedure.run()
    assert procedure.cycles[0].valve_open_ms is not None and abs(procedure.cycles[0].valve_open_ms - 8000) <= 30
    armed = next(e for e in rig.store.events(treatment.session_id) if e.kind == "armed")
    assert [link["limit"] for link in armed.payload["dose"]["chain"]] == ["requested", "profile", "hard", "device"]
    assert armed.payload["dose"]["below_minimum"] == {"minimum_ms": 20_000, "by": "dr-a", "why": override.why}


def test_stop_mid_freeze_closes_the_valve_and_records_aborted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    treatment, procedure = rig.procedure("common-wart")
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    procedure.stop()
    assert not rig.device.model.valve_commanded  # STOP answered: the device closed before answering
    procedure.run()
    assert procedure.state is State.ABORTED
    cycle = procedure.cycles[0]
    assert cycle.end_reason == "STOPPED" and cycle.valve_open_ms is not None and cycle.valve_open_ms < 10_000
    assert treatment.end() == "aborted"


def test_stop_is_handled_before_the_table_of_transitions() -> None:
    non_terminal = set(State) - {State.COMPLETED, State.ABORTED, State.FAULTED}
    assert non_terminal == {State.IDLE, State.ARMED, State.FREEZING, State.THAWING, State.UNCERTAIN}
    # STOP is handled before the table (Procedure._on_stop); the table never needs a 'stop' row.
    assert all(trigger != "stop" for _, trigger in TRANSITIONS)


@pytest.mark.parametrize("stop_in", [State.IDLE, State.ARMED, State.FREEZING, State.THAWING])
def test_stop_ends_a_manual_lesion_aborted_from_each_state_it_reaches(manual_treatment: Treatment, stop_in: State) -> None:
    """UNCERTAIN needs a device; STOP there is not exercised here."""
    lesion = Lesion(profile_id="plantar-wart", site=Site(region=Region.HAND), description="wart")
    procedure = manual_treatment.lesion(lesion, load_builtins().get("plantar-wart"))  # two cycles with a thaw between
    if stop_in is not State.IDLE:
        procedure.arm()
    if stop_in in (State.FREEZING, State.THAWING):
        procedure.fire()
    while procedure.state is not stop_in:
        assert not procedure.finished, procedure.state
        procedure.tick()
    procedure.stop()
    procedure.run()
    assert procedure.state is State.ABORTED


def test_cartridge_running_out_mid_freeze(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10)
    treatment, procedure = rig.procedure("seborrheic-keratosis-thick")
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    rig.device.empty_cartridge()
    procedure.run()
    assert procedure.state is State.FAULTED
    assert procedure.cycles[0].end_reason == "CARTRIDGE_EMPTY"
    assert {a.code for a in procedure.alarms.history} >= {"cartridge_empty"}
    assert "alarm_raised" in rig.kinds(treatment.session_id)


def test_blocked_nozzle_raises_no_flow(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.device.block_nozzle()
    treatment, procedure = rig.procedure("common-wart")
    procedure.arm()
    procedure.run()
    assert procedure.state is State.FAULTED and procedure.cycles[0].end_reason == "FAULT"
    (alarm,) = [a for a in procedure.alarms.history if a.code == "no_flow"]
    assert alarm.priority.name == "HIGH"
    raised = [e.payload["code"] for e in rig.store.events(treatment.session_id) if e.kind == "alarm_raised"]
    assert "no_flow" in raised


def test_link_lost_mid_freeze_is_uncertain_then_reconciled_from_the_device(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(tcp=True)
    url = rig.link.port
    treatment, procedure = rig.procedure(
        "common-wart", reconnect=lambda: Link.open(url, watchdog_ms=2000), reconnect_window_s=10)
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    rig.device.at(0.3, rig.device.drop_host)
    states = []
    while not procedure.finished:
        procedure.tick()
        states.append(procedure.state)
    assert State.UNCERTAIN in states and procedure.state is State.FAULTED
    cycle = procedure.cycles[0]
    # The reconnection's HELLO ends a freeze the old host lost (NEW_SESSION), unless the watchdog did first.
    assert cycle.certainty is Certainty.RECONCILED and cycle.end_reason in ("NEW_SESSION", "WATCHDOG")
    edge = rig.device.model.valve_log[-1]
    wait_until(lambda: edge.closed_at is not None, what="the valve physically closed")
    assert edge.closed_at is not None and cycle.valve_open_ms is not None
    assert abs(cycle.valve_open_ms - (edge.closed_at - edge.opened_at) * 1000) <= 25
    kinds = rig.kinds(treatment.session_id)
    assert kinds.index("outcome_uncertain") < kinds.index("reconnected") < kinds.index("freeze_result")
    assert treatment.end() == "interrupted"
    assert procedure.link is not None  # the reconnection's link, which the rig does not own
    procedure.link.close()


def test_device_reboot_mid_protocol(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    _, procedure = rig.procedure("common-wart")
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    rig.device.at(0.2, rig.device.reboot)
    procedure.run()
    assert procedure.state is State.FAULTED
    cycle = procedure.cycles[0]
    assert cycle.certainty is Certainty.RECONCILED and cycle.end_reason == "RESET"
    edge = rig.device.model.valve_log[-1]
    wait_until(lambda: edge.closed_at is not None, what="the valve physically closed")
    assert edge.closed_at is not None and cycle.valve_open_ms is not None
    assert abs(cycle.valve_open_ms - (edge.closed_at - edge.opened_at) * 1000) <= 25  # the device's figure is the truth
    assert "device_rebooted" in {a.code for a in procedure.alarms.history}
    assert len(rig.device.model.valve_log) == 1  # nothing was resent after the reboot


@pytest.fixture
def manual_treatment(tmp_path: Path) -> Iterator[Treatment]:
    """A started session with no device (manual mode), on virtual time 20 times the wall's."""
    clock = Clock(20)
    with RecordStore(tmp_path / "m.sqlite", clock=clock) as store:
        treatment = Treatment(store, Config(), clock, SessionInfo(operator="dr-a", patient="P-9"), None)
        treatment.start()
        yield treatment


def test_manual_mode_is_a_host_timer_flagged_as_such(manual_treatment: Treatment) -> None:
    lesion = Lesion(profile_id="solar-lentigo", site=Site(region=Region.CHEEK), description="lentigo")
    procedure = manual_treatment.lesion(lesion, load_builtins().get("solar-lentigo"), auto=True)
    procedure.arm()
    procedure.run()
    assert procedure.state is State.COMPLETED
    (cycle,) = procedure.cycles
    assert cycle.measured_by == "host" and cycle.certainty is Certainty.HOST_MEASURED
    assert cycle.valve_open_ms is not None and 5000 <= cycle.valve_open_ms <= 5600
    assert manual_treatment.end() == "completed"
    # A cotton-tip uses no gas: the record, the session's sum (day report, CSV) count none.
    results = [e.payload for e in manual_treatment.store.events(manual_treatment.session_id) if e.kind == "freeze_result"]
    assert [r["cartridge_seconds"] for r in results] == [0.0]
    assert view_of(manual_treatment.store, manual_treatment.session_id).cartridge_seconds == 0


def test_the_zone_of_an_unsourced_region_is_the_clinics_choice(tmp_path: Path) -> None:
    """Ear = face, scalp and neck = body are Givre's own choice (no source): a clinic's config may change them."""
    assert Site(region=Region.EAR).zone_unsourced and not Site(region=Region.CHEEK).zone_unsourced
    with RecordStore(tmp_path / "z.sqlite", clock=Clock(20)) as store:
        config = Config(zoning={"ear": "body", "neck": "face"})
        treatment = Treatment(store, config, Clock(20), SessionInfo(operator="dr-a", patient="P-9"), None)
        treatment.start()
        for region in (Region.EAR, Region.NECK, Region.SCALP, Region.NOSE):
            treatment.lesion(Lesion(profile_id="skin-tag", site=Site(region=region), description="tag"), load_builtins().get("skin-tag"))
        zones = [e.payload["zone"] for e in store.events(treatment.session_id) if e.kind == "lesion_recorded"]
    assert zones == ["body", "face", "body", "face"]


def test_gating_cartridge_cover_and_keeping_time(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(cartridge=None)
    _, procedure = rig.procedure("common-wart")
    with pytest.raises(StartRefused, match="no cartridge is registered"):
        procedure.arm()
    CartridgeLedger(rig.store, rig.config).load("8g", date.today() - timedelta(days=10))
    rig.config = Config(cartridge_past_keeping="block")  # the default only warns (tests/controller/procedure/test_core.py)
    _, procedure = rig.procedure("common-wart")
    with pytest.raises(StartRefused, match="10 days old, past its keeping time of 7 days"):
        procedure.arm()
    rig.config = Config()
    CartridgeLedger(rig.store, rig.config).load("8g", date.today())
    loaded = CartridgeLedger(rig.store, rig.config).status()
    assert loaded is not None
    rig.store.append("cartridge_used", {"cartridge_id": loaded.cartridge_id, "seconds": 115.0, "lesion_done": 1}, "S-old")
    _, procedure = rig.procedure("common-wart")
    with pytest.raises(StartRefused, match="needs 10 s of spray, 5 s are left"):
        procedure.arm()


def test_calibration_overdue_can_block(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.config = Config(calibration_overdue="block")
    _, procedure = rig.procedure("common-wart")
    with pytest.raises(StartRefused, match=r"never been calibrated \(config: block\)"):
        procedure.arm()


def test_a_latched_device_fault_blocks_arming(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.device.stick_valve("closed")
    rig.device.sensor_fault("tip", "open")
    wait_until(lambda: (t := rig.link.latest_telemetry()) is not None and t.telemetry.fault_flags & Fault.SENSOR_OPEN, what="fault")
    _, procedure = rig.procedure("common-wart")
    with pytest.raises(StartRefused, match="latched fault"):
        procedure.arm()


def test_unfinished_session_is_found(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    treatment = rig.start()
    assert treatment.session_id in unfinished_sessions(rig.store)
    treatment.end()
    assert treatment.session_id not in unfinished_sessions(rig.store)


def published(procedure: Procedure) -> ProcedureView:
    """The procedure's view as published now (a call, so each read is a fresh one)."""
    return procedure.view


def test_the_ui_thread_only_queues_intents_and_reads_the_published_view(manual_treatment: Treatment) -> None:
    """The loop runs on its own thread; this thread (the UI's place) queues ARM, FIRE and STOP and reads
    only ``view``, a frozen value replaced whole after each turn."""
    lesion = Lesion(profile_id="plantar-wart", site=Site(region=Region.HAND), description="wart")
    procedure = manual_treatment.lesion(lesion, load_builtins().get("plantar-wart"))
    loop = threading.Thread(target=procedure.run, name="test-loop")
    loop.start()
    try:
        wait_until(lambda: published(procedure).state is State.IDLE and procedure._loop_thread is not None, what="the loop's first turn")
        first = published(procedure)
        procedure.request_arm()
        wait_until(lambda: published(procedure).armed, what="ARM handled by the loop")
        assert published(procedure) is not first and first.state is State.IDLE  # replaced whole, never changed in place
        armed = published(procedure)
        assert armed.state is State.ARMED and armed.dose_ms == 20_000 and armed.cycles_total == 2
        procedure.fire()
        wait_until(lambda: published(procedure).state is State.FREEZING, what="FIRE handled by the loop")
        procedure.stop()
        wait_until(lambda: published(procedure).finished, what="STOP recorded by the loop")
        assert published(procedure).state is State.ABORTED and published(procedure).cycles[0].end_reason == "STOPPED"
    finally:
        procedure.stop()
        loop.join(timeout=10)
    assert not loop.is_alive()


def test_arm_from_another_thread_is_run_by_the_loop_and_answered(manual_treatment: Treatment) -> None:
    lesion = Lesion(profile_id="solar-lentigo", site=Site(region=Region.CHEEK), description="lentigo")
    refused = manual_treatment.lesion(lesion, load_builtins().get("solar-lentigo"), cycles=5)
    loop = threading.Thread(target=refused.run, name="test-loop")
    loop.start()
    try:
        wait_until(lambda: refused._loop_thread is not None, what="the loop's first turn")
        with pytest.raises(StartRefused, match="--cycles 5"):
            refused.arm()  # queued: the loop runs the gate, this thread gets its answer
        assert published(refused).refused and "--cycles 5" in published(refused).refused[0] and not published(refused).armed
    finally:
        refused.stop()
        loop.join(timeout=10)
    assert refused.state is State.ABORTED
