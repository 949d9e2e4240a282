"""Protocol 1.1 on the real pty path: what one boot or session said is never taken for another's,
and a freeze whose outcome was lost is settled from the device, now or at its next connection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.procedure.driver import Procedure
from controller.procedure.recovery import recover
from controller.procedure.states import State
from controller.procedure.treatment import Treatment
from controller.records.store import RecordStore
from firmware_bridge.codec import Frame, encode_frame
from firmware_bridge.link import Link
from firmware_bridge.messages import (
    NOT_AVAILABLE_TEMP,
    NOT_AVAILABLE_U32,
    BoundEvent,
    DeviceState,
    EndReason,
    Event,
    EventCode,
    Message,
    Telemetry,
)
from sim.device import SimulatedDevice
from tests.support.records import append_as_older_givre
from tests.support.rig import TEST_WATCHDOG_MS, Rig
from tests.support.waiting import wait_until


def wire(msg: Message, seq: int) -> bytes:
    return encode_frame(Frame(1, 1, msg.MSG_TYPE, 0, seq, 0, msg.pack()))


def test_an_earlier_boots_freeze_done_and_telemetry_replayed_mid_freeze_are_not_believed(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    assert rig.link.identity is not None
    boot = rig.link.identity.boot_count
    treatment, procedure = rig.procedure("common-wart")  # 10 s, device-timed
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    txn = procedure.cycles[0].txn
    assert txn is not None
    seq = rig.device.firmware.seq + 1  # a fresh sequence number: only the boot can give them away
    old_done = BoundEvent(1, EventCode.FREEZE_DONE, EndReason.COMPLETED, txn, 0, 5000, 5000, NOT_AVAILABLE_U32, 5000, boot - 1, 0x1234)
    old_state = Telemetry(900_000, boot - 1, DeviceState.READY, 0, 0, txn, 0, 0, 3000, NOT_AVAILABLE_TEMP, NOT_AVAILABLE_TEMP, 0)
    unbound = Event(1, EventCode.FREEZE_DONE, EndReason.COMPLETED, txn, 0, 5000, 5000, NOT_AVAILABLE_U32, 5000)
    rig.device.send_raw(wire(old_done, seq) + wire(old_state, seq) + wire(unbound, seq))
    procedure.run()
    cycle = procedure.cycles[0]
    assert procedure.state is State.COMPLETED and cycle.end_reason == "COMPLETED"
    assert cycle.valve_open_ms == 10_000 and cycle.certainty == "device_reported"  # not the replayed 5000 ms
    assert "valve_stuck_open" not in {a.code for a in procedure.alarms.history}
    stats = rig.link.stats().session
    assert stats.other_boot_frames >= 2 and stats.stale_frames >= 1
    assert treatment.end() == "completed"


@pytest.mark.parametrize("minor", [1, 0], ids=["protocol-1.1", "protocol-1.0"])
def test_events_an_earlier_session_left_are_filed_as_such_not_charged_to_the_new_lesion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], minor: int) -> None:
    db = tmp_path / "r.sqlite"
    assert main(["cartridge", "load", "--size", "23g", "--db", str(db)]) == 0
    with SimulatedDevice(proto_minor=minor) as device:
        url = device.serve_pty()
        earlier = Link.open(url, watchdog_ms=250)  # another program's session: not in this store
        earlier.freeze(150)
        earlier.close(end_session=False)  # it vanishes before acknowledging anything
        wait_until(lambda: device.firmware.watchdog_trips == 1 and device.firmware.freeze is None, what="the device's watchdog")
        pending = {p.event.code for p in device.firmware.pending_events.values()}
        assert {EventCode.FREEZE_DONE, EventCode.WATCHDOG_TRIP} <= pending
        capsys.readouterr()
        code = main(["run", "--port", url, "--profile", "solar-lentigo", "--site", "hand", "--db", str(db), "--yes", "--json"])
        result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["status"] == "completed"
    assert result["cycles"][0]["freeze_ms_device"] == 5000 and result["cycles"][0]["end_reason"] == "COMPLETED"
    assert "watchdog_trip" not in {a["code"] for a in result["alarms"]}  # the earlier session's trip is not this lesion's
    (trip,) = result["recovered"]
    assert "no open session owns" in trip and trip.endswith("recorded and cleared")
    with RecordStore(db, writer=False) as store:
        session_events = list(store.events(result["session_id"]))
        filed = [e.payload for e in store.events() if e.session_id is None and e.kind == "device_event"]
    assert not any(e.payload.get("earlier_session") for e in session_events)
    assert {"FREEZE_DONE", "WATCHDOG_TRIP"} <= {p["code"] for p in filed if p.get("earlier_session")}


def unplugged(device: SimulatedDevice) -> None:
    """USB power gone, then back: the host's port vanishes and the device restarts."""
    device.drop_host()
    device.reboot()


def gone_quiet(device: SimulatedDevice) -> None:
    """Nothing answers any more."""
    device.set_silent(True)
    device.drop_host()


def freeze_then(rig: Rig, when_s: float, happening: Callable[[SimulatedDevice], None], window_s: float) -> tuple[Treatment, Procedure]:
    """A 10 s device-timed freeze over TCP (same URL after a reconnection) that ``happening`` interrupts."""
    url = rig.link.port
    treatment, procedure = rig.procedure("common-wart", reconnect=lambda: Link.open(url, watchdog_ms=TEST_WATCHDOG_MS),
                                         reconnect_window_s=window_s)
    procedure.arm()
    while not rig.device.valve_open:
        procedure.tick()
    rig.device.at(when_s, lambda: happening(rig.device))
    procedure.run()
    return treatment, procedure


def test_a_device_that_vanishes_mid_freeze_and_returns_rebooted_is_reconciled_never_zero(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(tcp=True)
    treatment, procedure = freeze_then(rig, 0.4, unplugged, window_s=10)
    cycle = procedure.cycles[0]
    assert procedure.state is State.FAULTED and cycle.certainty == "reconciled" and cycle.end_reason == "RESET"
    edge = rig.device.model.valve_log[-1]
    wait_until(lambda: edge.closed_at is not None, what="the valve physically closed")
    assert edge.closed_at is not None and cycle.valve_open_ms is not None and cycle.valve_open_ms >= 300
    assert abs(cycle.valve_open_ms - (edge.closed_at - edge.opened_at) * 1000) <= 25  # the device's figure, kept across its reset
    kinds = rig.kinds(treatment.session_id)
    assert "freeze_unresolved" not in kinds and kinds.count("freeze_result") == 1
    assert treatment.end() == "interrupted"
    assert procedure.link is not None
    procedure.link.close()


def test_an_outcome_the_device_cannot_give_now_stays_open_and_is_settled_at_its_next_connection(
        make_rig: Callable[..., Rig], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig(tcp=True)
    url = rig.link.port
    treatment, procedure = freeze_then(rig, 0.3, gone_quiet, window_s=1.5)
    assert procedure.state is State.FAULTED and procedure.cycles[0].certainty == "unresolved"
    assert treatment.end() == "unresolved"  # the session is NOT closed: its cycle waits for the device
    kinds = rig.kinds(treatment.session_id)
    assert "freeze_unresolved" in kinds and "freeze_result" not in kinds and "session_ended" not in kinds
    wait_until(lambda: rig.device.firmware.nvm.last_freeze.end_reason is EndReason.WATCHDOG, what="the device closing its valve by itself")
    truth = rig.device.firmware.nvm.last_freeze
    assert procedure.link is not None
    procedure.link.close()
    rig.store.close()
    rig.device.set_silent(False)
    capsys.readouterr()
    db = str(rig.store.path)
    assert main(["info", "--port", url, "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    settled, trip = report["recovered"]
    # The device kept that session's FREEZE_DONE: the best evidence, filed under it and believed first.
    assert f"recovered session {treatment.session_id}" in settled and f"the device reported {truth.valve_open_ms} ms" in settled
    assert "went silent" in trip and report["counters"]["fault_flags"] == 0
    assert main(["records", "list", "--db", db, "--json"]) == 0
    (session,) = json.loads(capsys.readouterr().out)
    assert session["status"] == "interrupted"
    with RecordStore(Path(db), writer=False) as store:
        (result,) = [e.payload for e in store.events(treatment.session_id) if e.kind == "freeze_result"]
        filed = [e.payload for e in store.events(treatment.session_id) if e.kind == "device_event" and e.payload.get("earlier_session")]
    assert (result["freeze_ms_device"], result["end_reason"], result["certainty"]) == (truth.valve_open_ms, "WATCHDOG", "device_reported")
    assert {"FREEZE_DONE", "WATCHDOG_TRIP"} <= {p["code"] for p in filed} and all(p["serial"] == "SIM-0001" for p in filed)


def test_an_open_cycle_is_not_settled_by_another_device(make_rig: Callable[..., Rig], capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig(tcp=True)
    treatment, procedure = freeze_then(rig, 0.3, gone_quiet, window_s=1.0)
    assert treatment.end() == "unresolved"
    assert procedure.link is not None
    procedure.link.close()
    rig.store.close()
    with SimulatedDevice(serial="SIM-OTHER") as other:
        capsys.readouterr()
        assert main(["info", "--port", other.serve_pty(), "--db", str(rig.store.path), "--json"]) == 0
    (line,) = json.loads(capsys.readouterr().out)["recovered"]
    assert f"session {treatment.session_id} stays open" in line and "SIM-OTHER, not SIM-0001" in line


def test_recovery_settles_every_open_freeze_of_a_session_and_charges_the_cartridge(tmp_path: Path) -> None:
    """Two lesions, the first one's freeze lost: it stays open until its device's report is in the
    record, then the session closes with the device's figure, the gas charged and the reservation released."""
    with RecordStore(tmp_path / "r.sqlite") as store:
        device = {"serial": "SIM-A", "boot_count": 3, "device_session": 11}
        append_as_older_givre(store, "session_started", {"operator": "dr", "patient": "P-1", "mode": "device", "device": device,
                                                         "calibration": {}}, "S1")
        append_as_older_givre(store, "cartridge_reserved", {"cartridge_id": "C1", "seconds": 30}, "S1")
        for lesion, txn in (("L1", 500), ("L2", 501)):
            append_as_older_givre(store, "freeze_requested", {"lesion_id": lesion, "cycle": 1, "requested_ms": 10_000,
                                                              "effective_ms": 10_000,
                                              "limited_by": "requested", "serial": "SIM-A", "boot_count": 3,
                                              "freezes_started_before": 4, "last_txn_before": 499, "device_session": 11}, "S1")
            append_as_older_givre(store, "freeze_accepted", {"lesion_id": lesion, "cycle": 1, "txn": txn, "device_ms": 10_000},
                                  "S1")
        append_as_older_givre(store, "freeze_result", {"lesion_id": "L2", "cycle": 1, "freeze_ms_device": 10_000,
                                                       "end_reason": "COMPLETED"}, "S1")
        (waiting,) = recover(store, None)
        assert not waiting.closed and "L1 cycle 1: device SIM-A cannot be read now" in waiting.finding
        another_link = {"code": "FREEZE_DONE", "end_reason": "COMPLETED", "txn": 500, "fault_flags": 0, "valve_open_ms": 3_000,
                        "halo_to_off_ms": None, "device_session": 12, "serial": "SIM-A"}  # the same txn, drawn again by a later link
        append_as_older_givre(store, "device_event", another_link, "S1")
        (still,) = recover(store, None)
        assert not still.closed
        append_as_older_givre(store, "device_event", {"code": "FREEZE_DONE", "end_reason": "COMPLETED", "txn": 500, "fault_flags": 0,
                                      "valve_open_ms": 9_990, "halo_to_off_ms": None, "earlier_session": True, "device_session": 11,
                                      "serial": "SIM-A"}, "S1")
        (settled,) = recover(store, None)
        events = list(store.events("S1"))
    assert settled.closed and "L1 cycle 1 (10000 ms planned): the device reported 9990 ms, ended COMPLETED" in settled.finding
    (result,) = [e.payload for e in events if e.kind == "freeze_result" and e.payload["lesion_id"] == "L1"]
    assert (result["freeze_ms_device"], result["certainty"], result["cartridge_id"]) == (9_990, "device_reported", "C1")
    assert [e.payload["seconds"] for e in events if e.kind == "cartridge_used"] == [9.99]
    assert [e.kind for e in events][-2:] == ["cartridge_released", "session_ended"]
