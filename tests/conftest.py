"""Shared fixtures: a simulated device on a real pty, a link opened on its path as on a USB port, and
the procedure rig (tests/support/rig.py). Helpers the tests import live in tests/support/."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.aged_store import AgedStore, build_aged_store, template_day
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


AGED_EVENTS = 40_000  # about six weeks of a busy practice: every `givre run` failed from about 30 k before the projections


@pytest.fixture(scope="session")
def aged_store_built(tmp_path_factory: pytest.TempPathFactory) -> AgedStore:
    """A store aged to AGED_EVENTS by replaying a clinic day recorded by the real procedure (built
    once per test process; use ``aged_store``, a copy, in a test)."""
    folder = tmp_path_factory.mktemp("aged")
    return build_aged_store(folder / "aged.sqlite", AGED_EVENTS, template_day(folder / "day.sqlite", sessions=12))


@pytest.fixture
def aged_store(aged_store_built: AgedStore, tmp_path: Path) -> AgedStore:
    """A test's own copy of the aged store, with its side files (key state, key store, photos)."""
    source = aged_store_built.path
    for item in source.parent.glob(f"{source.name}*"):
        target = tmp_path / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        elif not item.name.endswith(".lock"):
            shutil.copy2(item, target)
    return dataclasses.replace(aged_store_built, path=tmp_path / source.name)
