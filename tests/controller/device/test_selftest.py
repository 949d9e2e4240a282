"""The pre-use self-test against the simulator: it passes a good device and bites on a bad one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.device.selftest import Verdict, overall, run_selftest
from controller.records.store import RecordStore
from firmware_bridge.link import Link
from sim.device import SimulatedDevice

pytestmark = pytest.mark.pty


def selftest(device: SimulatedDevice, tmp_path: Path) -> dict[str, Verdict]:
    with Link.open(device.serve_pty()) as link, RecordStore(tmp_path / "st.sqlite") as store:
        checks = run_selftest(link, store)
        assert [e.kind for e in store.events()][-1] == "selftest"
    return {c.name: c.verdict for c in checks}


def test_a_good_spray_passes_with_warnings_for_what_a_technician_must_do(tmp_path: Path) -> None:
    with SimulatedDevice() as device:
        verdicts = selftest(device, tmp_path)
        assert not device.model.valve_commanded
    assert verdicts["watchdog"] is Verdict.PASS and verdicts["valve and pressure"] is Verdict.PASS
    assert verdicts["device clock"] is Verdict.PASS
    assert verdicts["calibration"] is Verdict.WARN and verdicts["cartridge"] is Verdict.WARN  # never calibrated, none loaded


@pytest.mark.parametrize(
    ("build", "check"),
    [
        (lambda: _with(SimulatedDevice(), SimulatedDevice.break_watchdog), "watchdog"),
        (lambda: _with(SimulatedDevice(), SimulatedDevice.block_nozzle), "valve and pressure"),
        (lambda: SimulatedDevice(drift_ppm=20_000), "device clock"),
        (lambda: _with(SimulatedDevice(kind="probe"), lambda d: setattr(d.model.tip, "offset_c", 60.0)), "thermocouples"),
    ],
    ids=["watchdog-broken", "nozzle-blocked", "clock-drift", "thermocouple-offset"],
)
def test_a_defect_fails_its_check(tmp_path: Path, build: Callable[[], SimulatedDevice], check: str) -> None:
    with build() as device:
        verdicts = selftest(device, tmp_path)
    assert verdicts[check] is Verdict.FAIL
    assert overall([]) is Verdict.PASS


def _with(device: SimulatedDevice, change: Callable[[SimulatedDevice], object]) -> SimulatedDevice:
    change(device)
    return device


def test_selftest_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimulatedDevice(kind="probe", serial="SIM-ST") as device:
        code = main(["selftest", "--port", device.serve_pty(), "--db", str(tmp_path / "st.sqlite"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["device"] == "SIM-ST" and report["result"] == "WARN"
    assert {c["name"]: c["verdict"] for c in report["checks"]}["thermocouples"] == "PASS"
