"""Shared fixtures: a simulated device on a real pty, a link opened on its path as on a USB port."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

import pytest

from firmware_bridge.link import Link
from sim.device import SimulatedDevice

if sys.platform == "win32":  # pragma: no cover
    collect_ignore_glob = ["test_*pty*.py"]

# Tests that are not about the watchdog give the host a generous one, so a loaded CI machine's
# scheduling pauses never end a freeze early. The watchdog tests use the 250 ms default.
TEST_WATCHDOG_MS = 2000


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll a condition instead of sleeping a fixed time; fail with a message if it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def device() -> Iterator[SimulatedDevice]:
    with SimulatedDevice(serial="SIM-TEST-1") as dev:
        dev.serve_pty()
        yield dev


@pytest.fixture
def link(device: SimulatedDevice) -> Iterator[Link]:
    with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as lnk:
        yield lnk
