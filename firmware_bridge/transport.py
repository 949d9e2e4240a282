"""The only module that imports pyserial. Maps its exceptions onto ours, naming the port.

Any URL ``serial.serial_for_url`` understands works: a /dev/tty path, a pty path from the
simulator, ``socket://host:port`` and ``loop://``. A port is held two ways so no second program
talks to the device mid-treatment: pyserial's ``exclusive=True`` (an flock, which only programs
that also flock respect) and, on a tty where the OS has it (Linux, macOS), the kernel's TIOCEXCL,
which makes every further open() fail with EBUSY unless the opener has CAP_SYS_ADMIN (root).
ModemManager runs as root, so docs/udev/99-givre.rules also tells it to leave the device alone.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from dataclasses import dataclass

import serial
from serial.tools import list_ports as serial_list_ports

from firmware_bridge.errors import LinkLost, PortBusy, PortError, PortNotFound, PortPermissionDenied

if sys.platform != "win32":  # Windows has no ttys: the OS opens COM ports exclusively by itself
    import fcntl
    import termios

DEFAULT_BAUDRATE = 115200
# pyserial checks its write timeout after each os.write, even one that wrote everything: a thread the
# OS held off the CPU longer than the timeout got "write timed out" for a complete write, and a
# loaded laptop dropped a healthy link. 2 s is far beyond any scheduling stall seen (786 ms under
# two busy processes) and still finds a device that stopped reading: the device's own watchdog has
# closed its valve long before, and the link's telemetry turned STALE after 1 s.
WRITE_TIMEOUT_S = 2.0
UDEV_HELP = "install docs/udev/99-givre.rules (see docs/udev/README.md)"


class SerialTransport:
    def __init__(self, url: str, read_timeout_s: float = 0.01, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
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
            raise PortError(
                url, f"not a usable port address ({exc})", "Use a device path such as /dev/ttyUSB0, or socket://HOST:PORT"
            ) from exc
        self._exclusive_fd: int | None = _hold_tty_exclusively(self._port)

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
            with contextlib.suppress(serial.SerialException, OSError):
                cancel()

    def close(self) -> None:
        """Give up the tty's exclusivity first: while the simulator (or any process) keeps the tty
        open, the kernel would otherwise keep refusing other openers after our fd is closed."""
        fd, self._exclusive_fd = self._exclusive_fd, None
        if fd is not None:
            _release_tty(fd)
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()


def _hold_tty_exclusively(port: serial.SerialBase) -> int | None:
    """Set TIOCEXCL on the port's tty; return the fd it was set on, or None when not applicable.

    socket:// has a socket fd and loop:// none at all: neither is a tty, so they are skipped
    silently. If the ioctl fails on a real tty the port stays open: pyserial's flock still keeps
    other Givre instances out, so failing here would only make the port unusable for no gain.
    """
    if sys.platform == "win32":
        return None
    request = getattr(termios, "TIOCEXCL", None)
    if request is None:
        return None
    try:
        fd = port.fileno()
        if not os.isatty(fd):
            return None
        fcntl.ioctl(fd, request)
    except (io.UnsupportedOperation, OSError, AttributeError, ValueError):
        # io.UnsupportedOperation: no fd (loop://); AttributeError: a socket:// whose socket is gone;
        # OSError: ioctl refused (flock alone holds it).
        return None
    return fd


def _release_tty(fd: int) -> None:
    """Clear TIOCEXCL before closing (best effort: a vanished USB device fails with EIO)."""
    if sys.platform == "win32":
        return
    request = getattr(termios, "TIOCNXCL", None)
    if request is None:
        return
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, request)


def _open_error(url: str, exc: serial.SerialException) -> PortError:
    code = exc.errno
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return PortNotFound(url, "no such port", "Plug the device in, or pick a port from `givre ports`")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortPermissionDenied(
            url, "permission denied", f"Add your user to the 'dialout' group (then log in again), or {UDEV_HELP}"
        )
    # EAGAIN: another process holds pyserial's flock; EBUSY: another process set TIOCEXCL.
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text or "resource busy" in text:
        return PortBusy(
            url,
            "the port is in use by another program (another Givre, a serial terminal, or ModemManager probing it)",
            f"Close the other program, then retry; if it is ModemManager, {UDEV_HELP}",
        )
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
    return [
        PortInfo(p.device, p.description, p.serial_number, p.vid, p.pid)
        for p in sorted(serial_list_ports.comports(), key=lambda p: p.device)
    ]
