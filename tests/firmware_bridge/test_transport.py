"""Port-opening failures map to errors that name the port and say what to do (a unit seam), and an
open port is held exclusively (flock and TIOCEXCL), checked on the simulator's real pty."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import serial
from pytest_mock import MockerFixture

from firmware_bridge.errors import PortBusy, PortError, PortNotFound, PortPermissionDenied
from firmware_bridge.transport import SerialTransport, _open_error
from sim.device import SimulatedDevice
from tests.support.paths import REPO_ROOT

UDEV_RULES = "docs/udev/99-givre.rules"
NOBODY = 65534


@pytest.mark.parametrize(
    ("exc", "expected", "advice"),
    [
        (serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: [Errno 13] Permission denied"),
         PortPermissionDenied, "dialout"),
        (serial.SerialException(errno.EAGAIN, "Could not exclusively lock port /dev/ttyACM0"), PortBusy, "Close the other"),
        (serial.SerialException(errno.EBUSY, "could not open port /dev/ttyACM0: [Errno 16] Device or resource busy"), PortBusy,
         "ModemManager"),
        (serial.SerialException(errno.ENOENT, "could not open port: No such file or directory"), PortNotFound, "Plug the device in"),
        (serial.SerialException("Could not open port socket://x:1: [Errno 111] Connection refused"), PortNotFound, "givre sim --tcp"),
        (serial.SerialException(errno.EIO, "something odd"), PortError, "Check the address"),
    ],
)
def test_open_errors_are_mapped(mocker: MockerFixture, exc: Exception, expected: type[PortError], advice: str) -> None:
    mocker.patch("firmware_bridge.transport.serial.serial_for_url", side_effect=exc)
    with pytest.raises(expected) as info:
        SerialTransport("/dev/ttyACM0")
    assert type(info.value) is expected
    assert str(info.value).startswith("/dev/ttyACM0: ") and advice in str(info.value)


def test_an_unknown_url_scheme_is_a_clear_error() -> None:
    with pytest.raises(PortError, match="not a usable port address"):
        SerialTransport("bogus://device")


# ---- the udev rules file is named where the user needs it ---------------------------------------


def test_permission_denied_names_the_udev_rules_file() -> None:
    error = _open_error("/dev/ttyACM0", serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: Permission denied"))
    assert isinstance(error, PortPermissionDenied)
    assert f"install {UDEV_RULES} (see docs/udev/README.md)" in str(error)
    assert "\n" not in str(error)


def test_busy_names_the_culprits_and_the_udev_rules_file() -> None:
    error = _open_error("/dev/ttyACM0", serial.SerialException(errno.EBUSY, "could not open port /dev/ttyACM0: Device or resource busy"))
    assert isinstance(error, PortBusy)
    assert "another Givre, a serial terminal, or ModemManager probing it" in str(error)
    assert UDEV_RULES in str(error) and "\n" not in str(error)


def test_the_udev_files_exist() -> None:
    root = REPO_ROOT
    rules = (root / UDEV_RULES).read_text(encoding="utf-8")
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in rules and 'GROUP="dialout"' in rules
    assert (root / "docs" / "udev" / "README.md").is_file()


# ---- exclusivity on a real pseudo-terminal -------------------------------------------------------


@pytest.fixture
def pty_path() -> Iterator[str]:
    with SimulatedDevice(serial="SIM-EXCL-1") as dev:
        yield dev.serve_pty()


@pytest.mark.pty
def test_a_second_transport_on_an_open_port_is_busy(pty_path: str) -> None:
    first = SerialTransport(pty_path)
    try:
        with pytest.raises(PortBusy) as info:
            SerialTransport(pty_path).close()
        assert str(info.value).startswith(f"{pty_path}: ") and UDEV_RULES in str(info.value)
    finally:
        first.close()
    SerialTransport(pty_path).close()  # released: it opens again


# The child only tries a plain open() of the path, as a serial terminal or a prober would.
_TRY_OPEN = (
    "import os, sys\n"
    "try:\n"
    "    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))\n"
    "except OSError as exc:\n"
    "    print(exc.errno)\n"
    "else:\n"
    "    print('opened')\n"
)


def _open_in_unprivileged_process(path: str) -> str:
    """Try to open path from a process without CAP_SYS_ADMIN (root bypasses TIOCEXCL): as root, the
    child drops to nobody. subprocess's user/group/extra_groups do what a preexec_fn calling
    setgroups/setgid/setuid would, without running Python code in the forked child (the simulator
    thread is running). The venv's interpreter may sit in a directory nobody cannot enter, so the
    system's python3 is the fallback."""
    as_root = os.geteuid() == 0
    interpreters = dict.fromkeys([sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"])
    for interpreter in interpreters:
        try:
            done = subprocess.run(
                [interpreter, "-I", "-S", "-c", _TRY_OPEN, path],
                capture_output=True, text=True, timeout=60, cwd="/", check=False,
                user=NOBODY if as_root else None, group=NOBODY if as_root else None, extra_groups=[] if as_root else None,
            )
        except (PermissionError, FileNotFoundError):
            continue
        if done.returncode == 0:
            return done.stdout.strip()
    pytest.skip("could not run a Python process as an unprivileged user (nobody): no usable interpreter, or no right to drop to it")


@pytest.mark.pty
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TIOCEXCL's EBUSY on open() is checked on Linux only")
def test_an_open_port_refuses_other_unprivileged_openers(pty_path: str) -> None:
    mode = os.stat(pty_path).st_mode & 0o7777
    os.chmod(pty_path, 0o666)  # so only exclusivity, not permissions, can refuse the child
    try:
        transport = SerialTransport(pty_path)
        try:
            assert _open_in_unprivileged_process(pty_path) == str(errno.EBUSY)
        finally:
            transport.close()
        assert _open_in_unprivileged_process(pty_path) == "opened"  # released on close
    finally:
        os.chmod(pty_path, mode)


def test_a_socket_url_opens_without_a_tty_ioctl() -> None:
    with SimulatedDevice(serial="SIM-EXCL-2") as dev:
        transport = SerialTransport(dev.serve_tcp())
        try:
            assert transport._exclusive_fd is None
            transport.write(b"\x00")
        finally:
            transport.close()


def test_a_loop_url_opens_without_a_tty_ioctl() -> None:
    transport = SerialTransport("loop://")
    try:
        assert transport._exclusive_fd is None
        transport.write(b"ping")
        received = b""
        for _ in range(1000):  # each read waits at most the 10 ms read timeout
            received += transport.read()
            if len(received) >= 4:
                break
        assert received == b"ping"
    finally:
        transport.close()
