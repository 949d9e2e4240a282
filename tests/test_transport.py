"""Port-opening failures map to errors that name the port and say what to do (a unit seam)."""

from __future__ import annotations

import errno

import pytest
import serial

from firmware_bridge.errors import PortBusy, PortError, PortNotFound, PortPermissionDenied
from firmware_bridge.transport import SerialTransport


@pytest.mark.parametrize(
    ("exc", "expected", "advice"),
    [
        (serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: [Errno 13] Permission denied"),
         PortPermissionDenied, "dialout"),
        (serial.SerialException(errno.EAGAIN, "Could not exclusively lock port /dev/ttyACM0"), PortBusy, "Close the other"),
        (serial.SerialException(errno.ENOENT, "could not open port: No such file or directory"), PortNotFound, "Plug the device in"),
        (serial.SerialException("Could not open port socket://x:1: [Errno 111] Connection refused"), PortNotFound, "givre sim --tcp"),
        (serial.SerialException(errno.EIO, "something odd"), PortError, "Check the address"),
    ],
)
def test_open_errors_are_mapped(mocker, exc: Exception, expected: type[PortError], advice: str) -> None:  # type: ignore[no-untyped-def]
    mocker.patch("firmware_bridge.transport.serial.serial_for_url", side_effect=exc)
    with pytest.raises(expected) as info:
        SerialTransport("/dev/ttyACM0")
    assert type(info.value) is expected
    assert str(info.value).startswith("/dev/ttyACM0: ") and advice in str(info.value)


def test_an_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(PortError, match="not a usable port address"):
        SerialTransport("bogus://device")
