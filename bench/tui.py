"""TUI figures for `givre bench`, driving the app from above with Textual's test pilot: launch to
the first screen ready, and a STOP key event to the screen saying the device closed its valve."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import date
from pathlib import Path

from textual import events

from controller.clinic import Clinic
from controller.config import Config
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from controller.tui.app import GivreApp
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.screens.session import SessionScreen
from firmware_bridge.link import Link
from profiles.library import load_builtins
from sim.device import SimulatedDevice


def measure_tui(samples: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as scratch, SimulatedDevice() as device:
        link = Link.open(device.serve_pty())
        link.wait_for_telemetry()
        store = RecordStore(Path(scratch) / "tui.sqlite")
        CartridgeLedger(store, Config()).load("23g", date.today())
        clinic = Clinic(store, Config(), load_builtins(), link, device=device, bell=False, selftest_on_connect=False)
        try:
            return asyncio.run(_drive(clinic, device, samples))
        finally:
            clinic.supervisor.close()
            link.close()
            store.close()


async def _drive(clinic: Clinic, device: SimulatedDevice, samples: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    app = GivreApp(clinic)
    stops: list[float] = []
    async with app.run_test(size=(80, 24)) as pilot:
        while not isinstance(app.screen, SessionScreen):
            await pilot.pause(0.001)
        start_ms = (time.perf_counter() - started) * 1000
        treatment = Treatment(clinic.store, clinic.config, clinic.clock, SessionInfo(operator="bench", patient="P-bench"), clinic.link)
        treatment.start()
        clinic.treatment = treatment
        profile = clinic.library.get("seborrheic-keratosis-thick")
        for _ in range(samples):
            procedure = treatment.lesion(Lesion(profile_id=profile.profile.id, site=Site(region=Region.BACK), description="bench"), profile)
            clinic.procedure = procedure
            clinic.supervisor.attach(procedure)
            app.push_screen(ProcedureScreen())
            procedure.arm()
            await pilot.press("f")
            while not device.valve_open:
                await pilot.pause(0.005)
            message = app.screen.query_one("#message")
            t0 = time.perf_counter()
            app.post_message(events.Key("space", " "))  # as the terminal delivers it; Pilot.press adds its own waits
            while "closed its valve" not in str(message.render()):
                await asyncio.sleep(0.0005)
            stops.append((time.perf_counter() - t0) * 1000)
            while not procedure.finished:
                await pilot.pause(0.01)
            while not isinstance(app.screen, SessionScreen):
                app.pop_screen()
                await pilot.pause(0.01)
        treatment.end()
    return start_ms, stops
