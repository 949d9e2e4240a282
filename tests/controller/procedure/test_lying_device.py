"""A device that lies in its figures (valid frames, false numbers): nothing it says is believed
unchecked. Each lie of the issue is refused as a completed, billable cycle; a flooding device
cannot stall the loop or grow the store without bound. The devices are the simulator's LIES."""

from __future__ import annotations

from collections.abc import Callable

from controller.config import Config
from controller.practice.billing import acts_of
from controller.procedure.states import State
from controller.records.history import view_of
from controller.records.ledger import CartridgeLedger
from tests.support.rig import Rig
from tests.support.waiting import ticked, wait_until


def results(rig: Rig, session_id: str) -> list[dict[str, object]]:
    return [e.payload for e in rig.store.events(session_id) if e.kind == "freeze_result"]


def test_a_freeze_reported_as_4294967294_ms_is_not_completed_not_billed_and_charges_only_what_was_possible(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10, lies=["freeze-ms-huge"])
    treatment, procedure = rig.procedure("common-wart")
    procedure.arm()
    procedure.run()
    assert procedure.state is State.FAULTED and "figure_implausible" in procedure.alarms.latched
    [result] = results(rig, treatment.session_id)
    assert result["freeze_ms_device"] == 4_294_967_294  # the device's figure is kept, marked
    assert "more than the FREEZE asked" in str(result["implausible"])
    assert 0 < float(str(result["cartridge_seconds"])) <= 10.02  # the FREEZE asked 10 s: never the lie's 4.29 million
    status = CartridgeLedger(rig.store, Config()).status()
    assert status is not None and status.lesions_treated == 0  # not a treated lesion in the per-lesion figure either
    treatment.end()
    assert acts_of(view_of(rig.store, treatment.session_id)) == []


def test_a_zero_ms_completed_freeze_is_not_billed_and_the_gas_it_sprayed_is_counted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=10, lies=["freeze-ms-zero"])
    treatment, procedure = rig.procedure("common-wart")
    procedure.arm()
    procedure.run()
    assert procedure.state is State.FAULTED
    [result] = results(rig, treatment.session_id)
    assert result["freeze_ms_device"] == 0 and "COMPLETED at 0 ms" in str(result["implausible"])
    assert float(str(result["cartridge_seconds"])) >= 9.9  # a freeze that ran to its timer sprayed: the ledger is not under-counted
    treatment.end()
    assert acts_of(view_of(rig.store, treatment.session_id)) == []


def test_a_tissue_reading_below_absolute_zero_never_starts_the_hold(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(kind="probe", scale=10, lies=["tissue-cold"])
    treatment, procedure = rig.procedure("superficial-bcc", region="back")
    procedure.arm()
    procedure.run()
    kinds = rig.kinds(treatment.session_id)
    assert "tissue_target_reached" not in kinds and "halo_marked" not in kinds
    assert "temperature_implausible" in procedure.alarms.latched
    assert procedure.state is not State.COMPLETED
    for result in results(rig, treatment.session_id):
        assert result["min_tissue_c"] is None or float(str(result["min_tissue_c"])) > -273.15
    treatment.end()
    assert acts_of(view_of(rig.store, treatment.session_id)) == []


def test_a_flooding_device_neither_stalls_the_loop_nor_grows_the_store_and_stop_still_closes_the_valve(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(scale=1)
    treatment, procedure = rig.procedure("plantar-wart", auto=False, requested_freeze_s=30)
    procedure.arm()
    procedure.fire()
    procedure.tick()
    wait_until(lambda: ticked(procedure) and rig.device.valve_open, timeout_s=5, what="valve open")
    rig.device.lie("event-flood")
    for _ in range(40):  # about 2 s of the loop under a flood of thousands of events a second
        procedure.tick()
    assert "device_flooding" in procedure.alarms.latched and rig.device.valve_open
    procedure.stop()
    wait_until(lambda: not rig.device.valve_open, timeout_s=1.0, what="valve closed within 1 s of STOP")
    rig.device.stop_lying()
    wait_until(lambda: ticked(procedure) and procedure.finished, timeout_s=10, what="the lesion's end recorded")
    rows = rig.kinds(treatment.session_id)
    assert rows.count("device_event") < 100 and "device_events_coalesced" in rows
    assert rig.link.stats().events_dropped >= 0
