"""A device's serial is printable ASCII or the device is refused at the handshake, on the real pty path."""

from __future__ import annotations

import dataclasses

import pytest

from firmware_bridge.errors import NotAGivreDevice
from firmware_bridge.link import DeviceIdentity, Link
from firmware_bridge.messages import SCHEMA_HASH, Capability, Cryogen, DeviceKind, HelloAck
from sim.device import SimulatedDevice

pytestmark = pytest.mark.pty


def test_a_serial_with_a_terminal_escape_is_refused_naming_the_bytes_escaped() -> None:
    with SimulatedDevice(serial="SN\x1b[2J\x07") as device:
        url = device.serve_pty()
        with pytest.raises(NotAGivreDevice) as caught:
            Link.open(url)
    line = str(caught.value)
    assert line.startswith(f"{url}: its serial number 'SN\\x1b[2J\\x07' holds bytes that are not printable ASCII (0x07, 0x1b)")
    assert "\x1b" not in line and "\x07" not in line and "\n" not in line
    assert "Do not use this device" in line


@pytest.mark.parametrize("serial", ["SN\x00X", "SN\x7f", "\tSN"])
def test_nul_del_and_tab_are_refused_too(serial: str) -> None:
    ack = HelloAck(1, 1, DeviceKind.SPRAY, Cryogen.N2O, 1, 0, 0, "SIM-1", 1, 60_000, 250, Capability(0), 0, SCHEMA_HASH, 7)
    assert DeviceIdentity.from_hello_ack("/dev/x", ack).serial == "SIM-1"
    with pytest.raises(NotAGivreDevice, match="not printable ASCII"):
        DeviceIdentity.from_hello_ack("/dev/x", dataclasses.replace(ack, serial=serial))


def test_a_serial_that_looks_like_a_formula_is_printable_and_accepted() -> None:
    """'=' is printable: the CSV export quotes it (practice/export.py), the handshake has no reason to refuse it."""
    with SimulatedDevice(serial="=1+1") as device, Link.open(device.serve_pty()) as link:
        assert link.identity is not None and link.identity.serial == "=1+1"
