"""The conformance kit against the simulator: a good device passes every rule that applies to it and
is left as found; each deliberately broken device fails exactly the rules it breaks (so a kit that
fails everything, or nothing, is caught); `givre conformance` keeps its command-line contract."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from controller.cli.main import main
from firmware_bridge.conformance import (
    CHECKS,
    SECTIONS,
    Report,
    UnknownSection,
    Verdict,
    run_conformance,
)
from firmware_bridge.messages import LATCHING_FAULTS, CalData, Capability, DeviceState
from sim.device import SimulatedDevice
from sim.firmware import DEFECTS

pytestmark = pytest.mark.pty

GIVRE = [sys.executable, "-m", "controller.cli"]
# A simulator has every capability (nothing to refuse UNSUPPORTED) and its pty no USB serial number.
NOT_APPLICABLE_ON_SIM = {"freeze/FZ7", "handshake/H4"}


def failed(report: Report) -> set[str]:
    return {c.ref for c in report.failed}


def lines(report: Report) -> str:
    return "\n".join(c.line() for c in report.checks if c.verdict is not Verdict.PASS)


@pytest.mark.parametrize(("kind", "cryogen"), [("spray", "n2o"), ("spray", "ln2"), ("probe", "ln2"), ("probe", "n2o")])
def test_a_good_device_passes_every_check_and_is_left_as_found(kind: str, cryogen: str) -> None:
    calibration = CalData(120, 5000, -30, 1_010_000, 15, 990_000, 12, 9, 20_000, 20_365)
    with SimulatedDevice(kind=kind, cryogen=cryogen, serial="SIM-CONF") as device:
        device.nvm.calibration = calibration  # not the default: restoring it proves the kit read it first
        report = run_conformance(device.serve_pty())
        assert not failed(report), lines(report)
        assert report.result == "PASS" and not report.left_problems
        assert {c.ref for c in report.checks if c.verdict is Verdict.NOT_APPLICABLE} == NOT_APPLICABLE_ON_SIM
        assert all(c.detail for c in report.checks if c.verdict is Verdict.NOT_APPLICABLE)  # always with the reason
        assert not device.model.valve_commanded
        assert device.nvm.calibration == calibration
        assert not device.firmware.faults & LATCHING_FAULTS
        assert device.firmware.state is DeviceState.NO_SESSION  # it said BYE
        assert not device.firmware.pending_events  # and acknowledged what its freezes raised
    assert [c.ref for c in report.checks] == [f"{s.section}/{s.id}" for s in CHECKS]
    assert report.device["serial"] == "SIM-CONF" and report.device["kind"] == kind.upper()


# Each defect with the sections run against it and exactly the checks that must fail there. The
# failures beyond the defect's own rule are the checks that need what the device cannot do: without
# a watchdog the kit can latch no fault to test refusals with; without BYE it cannot leave a session.
# slow-telemetry leaves out the watchdog section: its trip is seen on the next 100 ms slot, 250 to
# 350 ms after the last frame, so W1 passes or fails by phase.
DEFECT_CASES = [
    ("no-watchdog", {"watchdog", "freeze", "counters"},
     {"watchdog/W1", "watchdog/W2", "watchdog/W3", "watchdog/W4", "watchdog/W6", "freeze/FZ2", "freeze/FZ5", "counters/CT3"}),
    ("rearm-watchdog", {"watchdog", "freeze"}, {"watchdog/W3"}),
    ("double-freeze", {"idempotency", "freeze", "stop"}, {"idempotency/I1", "idempotency/I2"}),
    ("slow-telemetry", {"telemetry", "stop", "cap"}, {"telemetry/T2", "telemetry/T3", "telemetry/T5"}),
    ("stop-before-close", {"stop", "counters", "telemetry", "session"}, {"stop/S4", "telemetry/T2"}),
    ("no-bye", {"session", "watchdog", "requests", "stop", "version"},
     {"session/SE1", "session/SE2", "session/SE3", "session/SE4", "watchdog/W5", "requests/R1", "stop/S1", "version/V1"}),
    ("events-not-repeated", {"events", "session"}, {"events/E2", "events/E5"}),
]


def test_every_defect_has_a_case() -> None:
    assert {case[0] for case in DEFECT_CASES} == set(DEFECTS)


@pytest.mark.parametrize(("defect", "sections", "expected"), DEFECT_CASES, ids=[case[0] for case in DEFECT_CASES])
def test_a_defect_fails_exactly_its_checks(defect: str, sections: set[str], expected: set[str]) -> None:
    with SimulatedDevice(defects={defect}) as device:
        report = run_conformance(device.serve_pty(), sections)
        assert not device.model.valve_commanded
    assert failed(report) == expected, lines(report)
    assert {c.section for c in report.checks} == sections
    assert all(c.detail for c in report.failed)


def test_checks_needing_a_missing_capability_are_not_applicable_and_unsupported_is_checked() -> None:
    with SimulatedDevice(capabilities=Capability.PRESSURE_SENSOR) as device:
        report = run_conformance(device.serve_pty(), {"freeze", "cap", "end_in", "stop"})
    not_applicable = {c.ref: c.detail for c in report.checks if c.verdict is Verdict.NOT_APPLICABLE}
    assert set(not_applicable) == {"freeze/FZ9", "freeze/FZ10", "cap/CP2", "end_in/EI1", "end_in/EI2", "end_in/EI5",
                                   "end_in/EI6", "stop/S3"}, lines(report)
    assert "0x0020" in not_applicable["cap/CP2"] and "trigger" in not_applicable["stop/S3"]
    assert not failed(report), lines(report)
    assert {c.ref for c in report.checks if c.verdict is Verdict.PASS} >= {"freeze/FZ7", "end_in/EI3", "end_in/EI4"}


def test_only_runs_the_sections_named_and_refuses_unknown_ones() -> None:
    with SimulatedDevice() as device:
        report = run_conformance(device.serve_pty(), {"version"})
    assert [c.ref for c in report.checks] == ["version/V1", "version/V2", "version/V3"]
    with pytest.raises(UnknownSection, match="unknown section watchdgo; allowed: framing, version"):
        run_conformance("/dev/ttyGIVRE-NOPE", {"watchdgo"})  # refused before any port is opened
    with pytest.raises(UnknownSection, match="no section named"):
        run_conformance("/dev/ttyGIVRE-NOPE", set())


def test_a_simulator_refuses_an_unknown_defect() -> None:
    with pytest.raises(ValueError, match="defect bogus: allowed values are double-freeze, events-not-repeated"):
        SimulatedDevice(defects={"bogus"})


# ---- the command -----------------------------------------------------------------------------------


def test_conformance_json_is_one_object_with_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with SimulatedDevice(serial="SIM-JSON") as device:
        code = main(["conformance", "--port", device.serve_pty(), "--only", "version, handshake", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["result"] == "PASS"
    assert {"device", "result", "checks", "counts"} <= set(report)
    assert report["device"]["serial"] == "SIM-JSON" and report["device"]["protocol"] == "1.1"
    assert {c["section"] for c in report["checks"]} == {"version", "handshake"}
    assert all(set(c) == {"id", "section", "protocol", "title", "verdict", "measured", "detail"} for c in report["checks"])
    assert report["counts"] == {"PASS": 6, "FAIL": 0, "NOT_APPLICABLE": 1}


def test_conformance_against_givre_sim_with_a_defect_prints_lines_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    sim = subprocess.Popen([*GIVRE, "sim", "--pty", "--defect", "double-freeze"], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        port = sim.stdout.readline().strip()
        code = main(["conformance", "--port", port, "--only", "idempotency"])
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0
    finally:
        if sim.poll() is None:
            sim.kill()
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line.split()[:2] for line in out[:5]] == [["FAIL", "idempotency/I1"], ["FAIL", "idempotency/I2"],
                                                      ["PASS", "idempotency/I3"], ["PASS", "idempotency/I4"],
                                                      ["PASS", "idempotency/I5"]]
    assert out[-1].startswith("conformance FAIL for SIM-0001 (spray, N2O, protocol 1.1") and "3 PASS, 2 FAIL" in out[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["conformance", "--port", "/dev/ttyGIVRE-NOPE"], "givre: /dev/ttyGIVRE-NOPE: no such port. Plug the device in"),
        (["conformance", "--port", "/dev/ttyGIVRE-NOPE", "--only", "framing,watchdgo"],
         f"givre conformance: --only framing,watchdgo: unknown section watchdgo; allowed: {', '.join(SECTIONS)}"),
    ],
    ids=["bad-port", "bad-section"],
)
def test_conformance_usage_and_port_errors_are_one_line_exit_2(argv: list[str], message: str) -> None:
    result = subprocess.run([*GIVRE, *argv], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr


def test_sim_refuses_an_unknown_defect_in_one_line() -> None:
    result = subprocess.run([*GIVRE, "sim", "--pty", "--defect", "explode"], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"givre sim: --defect 'explode': allowed defects are {', '.join(sorted(DEFECTS))}"
