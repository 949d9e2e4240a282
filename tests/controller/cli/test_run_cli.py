"""`givre run`, `givre cartridge`, `givre records` as scripts and clinics use them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from sim.device import SimulatedDevice
from tests.support.images import jpeg_with_gps
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pty
GIVRE = [sys.executable, "-m", "controller.cli"]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", *argv, "--yes", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_run_prints_the_contract_and_the_record_holds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "16g", "--db", db, "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["capacity_s"] == 140 and loaded["remaining_s"] == 140
    with SimulatedDevice(clock=Clock(20), serial="SIM-RUN") as device:
        code, result = run_json(capsys, "--port", device.serve_pty(), "--profile", "plantar-wart", "--site", "foot-sole",
                                "--side", "right", "--patient", "P-0042", "--db", db, "--scale", "20")
    assert code == 0 and result["status"] == "completed"
    assert result["device"] == {"serial": "SIM-RUN", "kind": "spray", "firmware": "1.0.0"}
    assert result["profile"] == "plantar-wart" and len(result["cycles"]) == 2
    for cycle in result["cycles"]:
        assert {"freeze_ms_requested", "freeze_ms_device", "thaw_ms", "limited_by"} <= set(cycle)
        assert cycle["freeze_ms_requested"] == 20_000 and abs(cycle["freeze_ms_device"] - 20_000) <= 60
    assert result["cycles"][0]["thaw_ms"] >= 30_000
    assert result["cartridge_seconds_used"] == pytest.approx(sum(c["freeze_ms_device"] for c in result["cycles"]) / 1000)
    assert [a["code"] for a in result["alarms"]] == ["calibration_overdue"]
    assert main(["cartridge", "status", "--db", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["used_s"] == pytest.approx(result["cartridge_seconds_used"]) and status["lesions_treated"] == 1
    assert main(["records", "list", "--db", db, "--json"]) == 0
    (session,) = json.loads(capsys.readouterr().out)
    assert session["session_id"] == result["session_id"] and session["status"] == "completed" and session["patient"] == "P-0042"
    assert main(["records", "verify", "--db", db]) == 0


def test_exports_and_logs_hold_only_the_pseudonymous_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--manual", "--profile", "solar-lentigo", "--site", "cheek", "--patient", "Jean Dupont",
                 "--db", str(tmp_path / "r.sqlite"), "--yes"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--patient: the patient id has a space (a name?)" in err and "Dupont" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--site", "elbowpit"], "--site 'elbowpit': not a body region. Allowed: forehead, temple"),
        (["--site", "hand", "--photo", "/nope/lesion.jpg"], "photo /nope/lesion.jpg: no such file"),
        (["--site", "hand", "--freeze-s", "2"], "below profile common-wart's minimum of 10 s"),
        (["--site", "hand", "--cycles", "3"], "--cycles 3: profile common-wart plans 1 cycle(s)"),
    ],
)
def test_bad_run_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code = main(["run", "--manual", "--profile", "common-wart", *argv, "--db", str(tmp_path / "r.sqlite"), "--yes"])
    captured = capsys.readouterr()
    assert code in (1, 2)
    assert message in captured.err + captured.out


def test_run_without_yes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--manual", "--profile", "common-wart", "--site", "hand", "--db", str(tmp_path / "r.sqlite")]) == 2
    assert "Add --yes to confirm" in capsys.readouterr().err


HOST_RUN = ["run", "--profile", "seborrheic-keratosis-thick", "--site", "back", "--yes", "--json"]


def _start_run(port: str, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*GIVRE, *HOST_RUN, "--port", port, "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _freezing_run(db: Path) -> Iterator[tuple[SimulatedDevice, subprocess.Popen[str]]]:
    """`givre run` in its own process against a simulated spray, once the device's valve is open."""
    assert main(["cartridge", "load", "--size", "23g", "--db", str(db)]) == 0
    with SimulatedDevice() as device:
        host = _start_run(device.serve_pty(), db)
        try:
            wait_until(lambda: device.valve_open, timeout_s=15, what="the freeze starting")
            yield device, host
        finally:
            if host.poll() is None:
                host.kill()


def test_sigint_during_a_freeze_sends_stop_first_then_records_aborted(tmp_path: Path) -> None:
    with _freezing_run(tmp_path / "r.sqlite") as (device, host):
        host.send_signal(signal.SIGINT)
        out, err = host.communicate(timeout=20)
        assert not device.model.valve_commanded
        counters = device.firmware.nvm.last_freeze
    result = json.loads(out)
    assert host.returncode == 1 and result["status"] == "aborted", err
    (cycle,) = result["cycles"]
    assert cycle["end_reason"] == "STOPPED" and cycle["freeze_ms_device"] == counters.valve_open_ms


def test_sigkill_mid_freeze_then_the_next_start_recovers_the_true_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    assert main(["cartridge", "load", "--size", "23g", "--db", str(db)]) == 0
    capsys.readouterr()
    with SimulatedDevice() as device:
        port = device.serve_pty()
        host = _start_run(port, db)
        try:
            wait_until(lambda: device.valve_open, timeout_s=15, what="the freeze starting")
            wait_until(lambda: device.now() - device.model.valve_log[-1].opened_at > 0.5, what="half a second of freezing")
            os.kill(host.pid, signal.SIGKILL)
            host.wait(timeout=10)
        finally:
            if host.poll() is None:
                host.kill()
        wait_until(lambda: device.model.valve_log[-1].closed_at is not None, what="the device watchdog closing the valve")
        truth = device.firmware.nvm.last_freeze
        assert truth.end_reason.name == "WATCHDOG"
        code = main(["run", "--port", port, "--profile", "solar-lentigo", "--site", "hand", "--db", str(db), "--yes", "--json"])
    result = json.loads(capsys.readouterr().out)
    line, trip = result["recovered"]
    assert f"cycle 1 (20000 ms planned): the device reported {truth.valve_open_ms} ms, ended WATCHDOG" in line  # its kept FREEZE_DONE
    assert "went silent" in trip and trip.endswith("was recorded and cleared")
    assert code == 0 and result["status"] == "completed"  # the watchdog trip was accounted for and cleared
    assert main(["records", "list", "--db", str(db), "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first["status"] == "interrupted" and first["cycles"] == 1 and second["status"] == "completed"


def test_cartridge_bad_size_and_future_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "12g", "--db", db]) == 2
    assert "allowed sizes are 8g, 16g, 23g" in capsys.readouterr().err
    assert main(["cartridge", "load", "--size", "8g", "--opened", "2999-01-01", "--db", db]) == 2
    assert "cannot be opened in the future" in capsys.readouterr().err


def test_a_photo_is_taken_into_the_store_with_its_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = jpeg_with_gps(tmp_path / "wart.JPG")
    db = tmp_path / "r.sqlite"
    code, result = run_json(capsys, "--manual", "--profile", "solar-lentigo", "--site", "cheek", "--photo", str(photo),
                            "--db", str(db))  # manual mode is never scaled: one 5 s cotton-tip timer on real time
    assert code == 0 and result["device"] is None and result["cycles"][0]["measured_by"] == "host"
    assert result["time_scale"] == 1
    assert main(["records", "show", result["session_id"], "--db", str(db), "--json"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    recorded = next(e for e in events if e["kind"] == "lesion_recorded")["payload"]
    stored = tmp_path / "r-photos" / recorded["photo"]["file"]
    with RecordStore(db, writer=False) as store:
        image = store.read_photo(recorded["photo"]["file"])  # the file holds it encrypted under the patient's key
    assert image is not None and image not in stored.read_bytes()
    digest = hashlib.sha256(image).hexdigest()  # what is stored: the photo without its EXIF (test_input_hygiene)
    assert recorded["photo"]["sha256"] == digest and recorded["photo"]["file"].endswith(".jpg") and recorded["zone"] == "face"
    assert oct(stored.stat().st_mode & 0o777) == "0o600"


def test_run_proposes_billing_and_an_aesthetic_act_is_not_reimbursable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On the simulator at x50 (manual mode, which never scales, would take 15 s of real time)."""
    db = str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "23g", "--db", db]) == 0
    capsys.readouterr()
    with SimulatedDevice(clock=Clock(50)) as device:
        url = device.serve_pty()
        code, result = run_json(capsys, "--port", url, "--profile", "common-wart", "--site", "hand", "--db", db, "--scale", "50")
        assert code == 0 and [a["code"] for a in result["billing"]["acts"]] == ["QZNP004"]
        assert result["billing"]["acts"][0]["association_code"] is None and result["billing"]["total_eur"] is None  # tariff unknown
        code, result = run_json(capsys, "--port", url, "--profile", "solar-lentigo", "--site", "cheek", "--aesthetic", "--db", db,
                                "--scale", "50")
    assert code == 0 and result["billing"]["acts"] == [] and result["billing"]["aesthetic_lesions"] == 1
    assert main(["records", "show", result["session_id"], "--db", db, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert next(e for e in events if e["kind"] == "lesion_recorded")["payload"]["reimbursable"] is False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_flooding_device_within_a_second_and_the_store_stays_small(tmp_path: Path, sig: signal.Signals) -> None:
    db = tmp_path / "r.sqlite"
    with _freezing_run(db) as (device, host):
        first_id = device.firmware.next_event_id
        device.lie("event-flood")
        wait_until(lambda: device.firmware.next_event_id - first_id > 2000, timeout_s=5, what="a flood under way")
        host.send_signal(sig)
        wait_until(lambda: not device.model.valve_commanded, timeout_s=1.0, what="the valve closed within 1 s of the signal")
        device.stop_lying()
        out, err = host.communicate(timeout=20)
    assert json.loads(out)["status"] == "aborted", err
    with RecordStore(db, writer=False) as store:
        assert len(list(store.events())) < 300  # coalesced: not one fsynced row per flooded event
