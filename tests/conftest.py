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


# ---- the procedure rig: a simulated device, a link, a record store, on one (virtual) clock ----

from dataclasses import dataclass, field  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from controller.config import Config  # noqa: E402
from controller.procedure.driver import Procedure  # noqa: E402
from controller.procedure.treatment import Treatment  # noqa: E402
from controller.records.ledger import CartridgeLedger  # noqa: E402
from controller.records.lesion import Lesion, SessionInfo, Site  # noqa: E402
from controller.records.store import RecordStore  # noqa: E402
from firmware_bridge.clock import Clock  # noqa: E402
from profiles.library import Library, load_builtins  # noqa: E402


@dataclass
class Rig:
    device: SimulatedDevice
    link: Link
    store: RecordStore
    clock: Clock
    config: Config = field(default_factory=Config)
    library: Library = field(default_factory=load_builtins)

    def load_cartridge(self, size: str = "23g") -> None:
        CartridgeLedger(self.store, self.config).load(size, date.today())

    def start(self, patient: str = "P-0001") -> Treatment:
        treatment = Treatment(self.store, self.config, self.clock, SessionInfo(operator="dr-a", patient=patient), self.link)
        treatment.start()
        return treatment

    def procedure(self, profile_id: str, region: str = "hand", treatment: Treatment | None = None, **options: Any) -> tuple[Treatment, Procedure]:
        treatment = treatment or self.start()
        lesion = Lesion(profile_id=profile_id, site=Site(region=region, side="left"), description="test lesion")
        options.setdefault("auto", True)
        return treatment, treatment.lesion(lesion, self.library.get(profile_id), **options)

    def kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.store.events(session_id)]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    opened: list[Rig] = []

    def make(kind: str = "spray", scale: float = 1.0, tcp: bool = False, cartridge: str | None = "23g", **device_options: Any) -> Rig:
        clock = Clock(scale)
        device = SimulatedDevice(kind=kind, clock=clock, **device_options)
        url = device.serve_tcp() if tcp else device.serve_pty()
        link = Link.open(url, clock=clock, watchdog_ms=min(60_000, round(TEST_WATCHDOG_MS * max(1.0, scale))))
        link.wait_for_telemetry()
        store = RecordStore(tmp_path / f"records-{len(opened)}.sqlite", clock=clock)
        rig = Rig(device, link, store, clock)
        opened.append(rig)
        if cartridge and kind == "spray":
            rig.load_cartridge(cartridge)
        return rig

    yield make
    for rig in opened:
        rig.link.close()
        rig.store.close()
        rig.device.close()
