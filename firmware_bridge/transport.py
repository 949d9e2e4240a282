"""The only module that imports pyserial. Maps its exceptions onto ours, naming the port.

Any URL ``serial.serial_for_url`` understands works: a /dev/tty path, a pty path from the
simulator, ``socket://host:port`` and ``loop://``. Ports are always opened ``exclusive=True``
so a second program cannot talk to the same device at the same time.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import serial

from firmware_bridge.errors import LinkLost, PortBusy, PortError, PortNotFound, PortPermissionDenied

DEFAULT_BAUDRATE = 115200


class SerialTransport:
    def __init__(self, url: str, read_timeout_s: float = 0.01, write_timeout_s: float = 0.25) -> None:
        self.url = url
        try:
            self._port = serial.serial_for_url(
                url,
                baudrate=DEFAULT_BAUDRATE,
                timeout=read_timeout_s,
                write_timeout=write_timeout_s,
                exclusive=True,
            )
        except serial.SerialException as exc:
            raise _open_error(url, exc) from exc
        except ValueError as exc:  # e.g. an unknown URL scheme or a bad parameter
            raise PortError(url, f"not a usable port address ({exc})", "Use a device path such as /dev/ttyUSB0, or socket://HOST:PORT") from exc

    def read(self) -> bytes:
        """Whatever has arrived, waiting at most the read timeout for the first byte."""
        try:
            return self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(self.url, f"reading failed ({exc})", "Check the cable and the device's power, then reconnect") from exc

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkLost(self.url, "the device stopped accepting data (write timed out)", "Check the device, then reconnect") from exc
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(self.url, f"writing failed ({exc})", "Check the cable and the device's power, then reconnect") from exc

    def wake_reader(self) -> None:
        """Make a blocked read return now (POSIX ports); others return within the read timeout."""
        cancel = getattr(self._port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except (serial.SerialException, OSError):
                pass

    def close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass


def _open_error(url: str, exc: serial.SerialException) -> PortError:
    code = exc.errno
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return PortNotFound(url, "no such port", "Plug the device in, or pick a port from `givre ports`")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortPermissionDenied(
            url, "permission denied", "Add your user to the 'dialout' group (then log in again), or install the udev rule from docs/"
        )
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text:
        return PortBusy(url, "the port is in use by another program", "Close the other Givre window or program using it, then retry")
    if "Connection refused" in text or code == errno.ECONNREFUSED:
        return PortNotFound(url, "nothing is listening there", "Start the device or `givre sim --tcp`, then retry")
    return PortError(url, f"could not open the port ({text})", "Check the address and that the device is connected")


@dataclass(frozen=True, slots=True)
class PortInfo:
    device: str
    description: str
    serial_number: str | None
    vid: int | None
    pid: int | None


def list_ports() -> list[PortInfo]:
    """Serial ports the OS knows, with the USB identity to match against the handshake serial."""
    from serial.tools import list_ports as serial_list_ports

    return [
        PortInfo(p.device, p.description, p.serial_number, p.vid, p.pid)
        for p in sorted(serial_list_ports.comports(), key=lambda p: p.device)
    ]
