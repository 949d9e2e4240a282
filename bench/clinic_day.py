"""A simulated clinic day on virtual time: many sessions through a lossy wire, then an audit.

Used by `givre bench` (clinic_day_wall_s) and by the test suite (zero lost or duplicated events).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from controller.config import Config
from controller.procedure.recovery import connect
from controller.procedure.treatment import Treatment
from controller.records import events as schema
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from profiles.library import load_builtins
from sim.device import SimulatedDevice

DAY_PROFILES = ["common-wart", "solar-lentigo", "actinic-keratosis", "skin-tag", "molluscum-contagiosum", "condyloma"]
DAY_REGIONS = [Region.HAND, Region.CHEEK, Region.FOREHEAD, Region.BACK, Region.FINGER, Region.NECK]
RELOAD_BELOW_S = 30  # a cartridge with less gas left than this is swapped before the next session


@dataclass(frozen=True, slots=True)
class DayAudit:
    wall_s: float
    sessions: int
    completed: int
    freezes_recorded: int
    freezes_on_device: int
    duplicate_results: int
    chain_ok: bool
    events: int
    frames_corrupted: int


def clinic_day(db: Path, sessions: int = 40, corrupt_pct: float = 1.0, scale: float = 100.0, seed: int = 1) -> DayAudit:
    clock = Clock(scale)
    library = load_builtins()
    config = Config()
    started = time.perf_counter()
    with SimulatedDevice(clock=clock, seed=seed) as device, RecordStore(db, clock=clock) as store:
        device.faults.corrupt_pct = corrupt_pct
        with connect(device.serve_pty(), clock) as link:
            ledger = CartridgeLedger(store, config)
            ledger.load("23g", date.today())
            completed = 0
            picks = itertools.cycle(zip(DAY_PROFILES, DAY_REGIONS, strict=True))
            for n in range(sessions):
                status = ledger.status()
                if status is None or status.remaining_s < RELOAD_BELOW_S:
                    ledger.load("23g", date.today())
                    device.load_cartridge(23)
                treatment = Treatment(store, config, clock, SessionInfo(operator="dr-a", patient=f"P-{n:04d}"), link)
                treatment.start()
                for _ in range(1 + n % 2):
                    profile_id, region = next(picks)
                    lesion = Lesion(profile_id=profile_id, site=Site(region=region), description="clinic day lesion")
                    procedure = treatment.lesion(lesion, library.get(profile_id), auto=True)
                    procedure.arm()
                    procedure.run()
                completed += treatment.end() == "completed"
            counters = link.counters()
        results = Counter(
            (e.session_id, result.lesion_id, result.cycle) for e in store.events()
            if e.kind == "freeze_result" and isinstance(result := schema.parse(e), schema.FreezeResult)
        )
        audit = DayAudit(
            wall_s=round(time.perf_counter() - started, 3), sessions=sessions, completed=completed,
            freezes_recorded=sum(results.values()), freezes_on_device=counters.freezes_started,
            duplicate_results=sum(count - 1 for count in results.values() if count > 1), chain_ok=store.verify() is None,
            events=store.head()[0], frames_corrupted=device.faults.corrupted,
        )
    return audit
