"""Calibration recovers the simulator's injected errors; a bad device fails; bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.device import calibration
from controller.records.store import RecordStore
from firmware_bridge.link import Link
from sim.device import SimulatedDevice

pytestmark = pytest.mark.pty


def test_timer_drift_is_measured_and_corrected(tmp_path: Path) -> None:
    with SimulatedDevice(drift_ppm=3000) as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        result = calibration.timer(link, window_s=3, freezes=2, freeze_ms=500)
        assert result.passed and abs(result.measurements["drift_ppm"] - 3000) < 500
        assert result.measurements["per_freeze_error_ms"] == [0, 0] and len(result.measurements["host_minus_device_ms"]) == 2
        assert link.read_calibration().timer_ppm == result.written["timer_ppm"]
        after, _ = calibration.measure_drift_ppm(link, 3)
        assert abs(after) < 500  # the device's corrected clock now agrees with the host's


def test_a_clock_too_far_off_fails_and_nothing_is_written(tmp_path: Path) -> None:
    with SimulatedDevice(drift_ppm=20_000) as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        result = calibration.timer(link, window_s=2, freezes=0)
        assert not result.passed and result.written == {} and link.read_calibration().timer_ppm == 0


def test_thermocouple_offset_is_recovered_two_point(tmp_path: Path) -> None:
    with SimulatedDevice(kind="probe") as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        device.model.tip.offset_c = -4.0  # the true error the technician does not know
        device.model.tip.gain = 1.02
        points = []
        for bath in (0.0, -196.0):
            device.immerse(bath)
            points.append((bath, calibration.read_sensor(link, "tip", settle_s=0.5)))
        assert abs(points[0][1] - bath) > 1 or abs(points[0][1] + 4) < 1  # it really read wrong before
        result = calibration.thermocouple(link, "tip", points)
        assert result.passed
        for bath in (0.0, -78.5, -196.0):
            device.immerse(bath)
            assert abs(calibration.read_sensor(link, "tip", settle_s=0.5) - bath) < 0.6


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(0.0, 1.0)], "exactly two reference points"),
        ([(0.0, 1.0), (-300.0, -290.0)], "outside -200..50 C"),
        ([(0.0, 1.0), (-5.0, -4.0)], "at least 20 C apart"),
    ],
)
def test_bad_thermocouple_input_writes_nothing(points: list[tuple[float, float]], message: str) -> None:
    with SimulatedDevice(kind="probe") as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        before = link.read_calibration()
        with pytest.raises(calibration.CalibrationError, match=message):
            calibration.thermocouple(link, "tip", points)
        assert link.read_calibration() == before


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [(-1.0, 0.5, "positive grams"), (22.0, 22.5, "must be less than before"), (22.0, 22.0, "must be less than before")],
)
def test_bad_weighings_write_nothing(before: float, after: float, message: str) -> None:
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        with pytest.raises(calibration.CalibrationError, match=message):
            calibration.flow(link, before, after, 10_000)
        assert link.read_calibration().flow_mg_per_s == 0


def test_flow_rate_from_weighings_is_stored() -> None:
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        result = calibration.flow(link, 23.0, 22.3, 10_000)
        assert result.written == {"flow_mg_per_s": 70} and link.read_calibration().flow_mg_per_s == 70


def test_valve_latency_is_measured_and_a_slow_valve_fails() -> None:
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        good = calibration.valve(link)
        assert good.passed and good.measurements["open_latency_ms"] <= 40
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        device.model.open_latency_s = 0.15  # slow, but under the device's own 200 ms stuck-valve detection
        slow = calibration.valve(link)
        assert not slow.passed and slow.measurements["open_latency_ms"] > 100


def test_a_certificate_sets_the_due_date_and_is_recorded(tmp_path: Path) -> None:
    with SimulatedDevice(serial="SIM-CAL") as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link, \
            RecordStore(tmp_path / "c.sqlite") as store:
        result = calibration.flow(link, 23.0, 22.3, 10_000)
        certificate = calibration.certify(link, store, "tech-1", [result])
        assert certificate["passed"] and link.read_calibration().due_on_day > 0
        page = calibration.certificate_html(certificate)
        assert "SIM-CAL" in page and "tech-1" in page and "PASS" in page
        assert "<th>mass sprayed</th><td>0.7 g</td>" in page and "<th>flow</th><td>70 mg/s</td>" in page
        assert "{" not in page.split("</style>")[1]  # figures in words, never a Python dict
        assert [e.kind for e in store.events()] == ["calibration_certificate"]


def test_figures_are_described_in_words_with_their_units() -> None:
    assert calibration.described({"open_latency_ms": 20, "drift_ppm": -70.8, "per_freeze_error_ms": [0, 1], "grams": 0.7,
                                  "g_per_s": 0.07, "resolution_ms": "one telemetry period (20 ms)"}) == [
        ("open latency", "20 ms"), ("drift", "-70.8 ppm"), ("per freeze error", "0, 1 ms"), ("mass sprayed", "0.7 g"),
        ("flow", "0.07 g/s"), ("resolution", "one telemetry period (20 ms)")]


def test_calibrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SimulatedDevice(serial="SIM-CLI-CAL") as device:
        port = device.serve_pty()
        page = tmp_path / "cert.html"
        code = main(["calibrate", "--port", port, "--step", "flow", "--mass-before", "23", "--mass-after", "22.3",
                     "--valve-open-ms", "10000", "--db", str(tmp_path / "c.sqlite"), "--certificate", str(page), "--json"])
        certificate = json.loads(capsys.readouterr().out)
        assert code == 0 and certificate["passed"] and certificate["device"] == "SIM-CLI-CAL"
        assert "SIM-CLI-CAL" in page.read_text() and oct(page.stat().st_mode & 0o777) == "0o600"
        code = main(["calibrate", "--port", port, "--step", "flow", "--mass-before", "22", "--mass-after", "22.5",
                     "--valve-open-ms", "10000", "--db", str(tmp_path / "c.sqlite")])
        assert code == 2 and "must be less than before" in capsys.readouterr().err


def test_a_flow_calibration_is_refused_on_a_liquid_nitrogen_device() -> None:
    with SimulatedDevice(kind="probe", cryogen="ln2") as device, Link.open(device.serve_pty(), watchdog_ms=2000) as link:
        before = link.read_calibration()
        with pytest.raises(calibration.CalibrationError, match="runs on LN2, which has no cartridge"):
            calibration.flow(link, 23.0, 22.3, 10_000)
        assert link.read_calibration() == before  # nothing written
