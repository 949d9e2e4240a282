"""The procedure rig: a simulated device, a link opened on it, a record store, all on one (virtual) clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from controller.config import Config
from controller.procedure.driver import Procedure
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.units import scaled_watchdog_ms
from profiles.library import Library, load_builtins
from sim.device import SimulatedDevice

# Tests that are not about the watchdog give the host a generous one, so a loaded CI machine's
# scheduling pauses never end a freeze early. The watchdog tests use the 250 ms default.
TEST_WATCHDOG_MS = 2000


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

    def procedure(
        self, profile_id: str, region: str = "hand", treatment: Treatment | None = None, **options: Any
    ) -> tuple[Treatment, Procedure]:
        treatment = treatment or self.start()
        lesion = Lesion(profile_id=profile_id, site=Site(region=Region(region), side="left"), description="test lesion")
        options.setdefault("auto", True)
        return treatment, treatment.lesion(lesion, self.library.get(profile_id), **options)

    def kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.store.events(session_id)]


class RigFactory:
    """Opens rigs whose stores live in one directory, and closes every rig it opened (make_rig)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._opened: list[Rig] = []

    def __call__(  # noqa: PLR0913 - every knob a test turns, each defaulted; the last two keyword-only
        self, kind: str = "spray", scale: float = 1.0, tcp: bool = False, cartridge: str | None = "23g",
        *, watchdog_ms: int = TEST_WATCHDOG_MS, store: Path | None = None, **device_options: Any
    ) -> Rig:
        clock = Clock(scale)
        device = SimulatedDevice(kind=kind, clock=clock, **device_options)
        url = device.serve_tcp() if tcp else device.serve_pty()
        link = Link.open(url, clock=clock, watchdog_ms=scaled_watchdog_ms(scale, watchdog_ms))
        link.wait_for_telemetry()
        records = RecordStore(store or self._directory / f"records-{len(self._opened)}.sqlite", clock=clock)
        rig = Rig(device, link, records, clock)
        self._opened.append(rig)
        if cartridge and kind == "spray":
            rig.load_cartridge(cartridge)
        return rig

    def close(self) -> None:
        for rig in self._opened:
            rig.link.close()
            rig.store.close()
            rig.device.close()
