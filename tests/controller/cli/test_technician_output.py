"""Technician output reads as words, not wire values: `givre info`'s dates, sentinels, fault names
and degrees, and `givre ports` with its header."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pytest_mock import MockerFixture

from controller.cli import ports
from controller.cli.info import readable
from controller.cli.main import main
from firmware_bridge.messages import NOT_AVAILABLE_U32, Fault
from sim.device import SimulatedDevice


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("last_halo_to_off_ms", NOT_AVAILABLE_U32, "n/a"),
        ("last_valve_open_ms", 5000, "5000"),
        ("due_on_day", 0, "never"),
        ("calibrated_on_day", 20_783, "2026-11-26"),
        ("fault_flags", 0, "none"),
        ("fault_flags", int(Fault.WATCHDOG_TRIP), "WATCHDOG_TRIP"),
        ("tip_offset_cdeg", -150, "-1.50 °C"),
        ("last_end_reason", "NONE", "-"),
        ("kind", "SPRAY", "SPRAY"),
    ],
)
def test_info_shows_each_wire_value_as_a_technician_reads_it(key: str, value: object, shown: str) -> None:
    assert readable(key, value) == shown


@pytest.mark.pty
def test_info_prints_no_sentinel_and_no_day_number(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with SimulatedDevice() as device:
        assert main(["info", "--port", device.serve_pty(), "--db", str(tmp_path / "r.sqlite")]) == 0
    out = capsys.readouterr().out
    assert str(NOT_AVAILABLE_U32) not in out and "due_on_day               never" in out


def test_ports_has_a_header_and_says_when_there_is_none(mocker: MockerFixture, capsys: pytest.CaptureFixture[str]) -> None:
    found = [SimpleNamespace(device="/dev/ttyACM0", serial_number="GV-0042", description="Givre spray\x1b[2J")]
    mocker.patch.object(ports, "list_ports", return_value=found)
    assert main(["ports"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split() == ["port", "USB", "serial", "description"]
    assert line.split()[:2] == ["/dev/ttyACM0", "GV-0042"] and "\\x1b" in line  # a device's text is escaped
    mocker.patch.object(ports, "list_ports", return_value=[])
    assert main(["ports"]) == 1
    assert "no serial port found" in capsys.readouterr().out
