"""Shared fixtures: a simulated device on a real pty, a link opened on its path as on a USB port, and
the procedure rig (tests/support/rig.py). Helpers the tests import live in tests/support/."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.link import Link
from sim.device import SimulatedDevice
from tests.support.rig import TEST_WATCHDOG_MS, RigFactory

if sys.platform == "win32":  # pragma: no cover
    collect_ignore_glob = ["test_*pty*.py"]


@pytest.fixture
def device() -> Iterator[SimulatedDevice]:
    with SimulatedDevice(serial="SIM-TEST-1") as dev:
        dev.serve_pty()
        yield dev


@pytest.fixture
def link(device: SimulatedDevice) -> Iterator[Link]:
    with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as lnk:
        yield lnk


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[RigFactory]:
    """make_rig(kind, scale, tcp, cartridge, **device_options): a Rig; every one is closed after the test."""
    rigs = RigFactory(tmp_path)
    yield rigs
    rigs.close()
