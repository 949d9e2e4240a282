"""A clinic uses commands one after another: every clean exit ends the device session (BYE), so the
next command finds the device ready, with no watchdog trip latched and none counted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.units import scaled_watchdog_ms
from sim.device import SimulatedDevice
from tests.support.waiting import wait_until

GIVRE = [sys.executable, "-m", "controller.cli"]


@pytest.fixture
def start_sim() -> Iterator[Callable[..., str]]:
    """`givre sim --pty` in its own process, as a technician would start it; returns its pty path."""
    started: list[subprocess.Popen[str]] = []

    def start(*options: str) -> str:
        sim = subprocess.Popen([*GIVRE, "sim", "--pty", *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(sim)
        assert sim.stdout is not None
        return sim.stdout.readline().strip()

    yield start
    for sim in started:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def treat(capsys: pytest.CaptureFixture[str], port: str, db: str, *options: str) -> None:
    code, result = run_json(capsys, ["run", "--port", port, "--profile", "solar-lentigo", "--site", "cheek", "--patient", "P-0042",
                                     "--db", db, "--yes", *options])
    assert (code, result["status"], result["recovered"], result["refused"]) == (0, "completed", [], [])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runs_in_a_row_with_info_selftest_and_calibration_between(
        start_sim: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, db = start_sim(), str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "23g", "--db", db]) == 0
    treat(capsys, port, db)
    code, info = run_json(capsys, ["info", "--port", port, "--db", db])
    assert code == 0 and info["recovered"] == []
    code, selftest = run_json(capsys, ["selftest", "--port", port, "--db", db])
    assert code == 0 and selftest["recovered"] == []
    checks = selftest["checks"]
    assert isinstance(checks, list) and {c["name"]: c["verdict"] for c in checks}["watchdog"] == "PASS"
    for step in (["--step", "timer", "--window-s", "2"], ["--step", "valve"]):
        code, certificate = run_json(capsys, ["calibrate", "--port", port, "--db", db, *step])
        assert code == 0, certificate
    treat(capsys, port, db)
    code, info = run_json(capsys, ["info", "--port", port, "--db", db])
    counters = info["counters"]
    assert isinstance(counters, dict)
    assert code == 0 and info["recovered"] == [] and counters["fault_flags"] == 0
    assert counters["watchdog_trips"] == 1  # the self-test's own, deliberate and cleared: no exit ever tripped it
    assert main(["records", "verify", "--db", db]) == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ten_runs_in_a_row(start_sim: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On virtual time (x10, the device's watchdog scaled with it), so ten 5 s freezes take seconds."""
    port, db = start_sim("--scale", "10"), str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "23g", "--db", db]) == 0
    for _ in range(10):
        treat(capsys, port, db, "--scale", "10")
    with Link.open(port, clock=Clock(10), watchdog_ms=scaled_watchdog_ms(10)) as link:
        counters = link.counters()
    assert (counters.fault_flags, counters.watchdog_trips, counters.freezes_started) == (0, 0, 10)


def test_a_1_0_device_without_bye_still_runs_twice_in_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 1.0 device trips its watchdog after every exit; the next command records that trip with the
    device's counters, clears it, and goes on."""
    db = str(tmp_path / "r.sqlite")
    assert main(["cartridge", "load", "--size", "23g", "--db", db]) == 0
    with SimulatedDevice(proto_minor=0) as device:
        url = device.serve_pty()
        run = ["run", "--port", url, "--profile", "solar-lentigo", "--site", "cheek", "--db", db, "--yes"]
        code, first = run_json(capsys, run)
        assert code == 0 and first["recovered"] == []
        wait_until(lambda: device.firmware.watchdog_trips == 1, what="the 1.0 device tripping after the exit")
        code, second = run_json(capsys, run)
        assert code == 0 and second["status"] == "completed"
        (trip,) = second["recovered"]
        assert "protocol 1.0, which has no way to end a session" in str(trip) and str(trip).endswith("recorded and cleared")
        wait_until(lambda: device.firmware.watchdog_trips == 2, what="the trip after the second exit: 1.0 cannot avoid it")
