"""The UI on a store aged to weeks of use, with the real 250 ms watchdog: the connection's recovery,
the records screen and a lesion from the keyboard read the projections, so the device is fed the
whole time and the lesion completes (`givre bench --store-events` measures 1 M events)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bench.aged_store import AgedStore
from controller.clinic import Clinic
from controller.procedure.states import State
from controller.tui.app import GivreApp
from controller.tui.screens.records import RecordsScreen
from tests.controller.tui.test_tui import fill_session_and_lesion, until
from tests.support.rig import Rig

pytestmark = pytest.mark.pty


def test_a_lesion_from_the_keyboard_on_an_aged_store_trips_no_watchdog(make_rig: Callable[..., Rig], aged_store: AgedStore) -> None:
    rig = make_rig(scale=20, watchdog_ms=250, store=aged_store.path)
    clinic = Clinic(rig.store, rig.config, rig.library, rig.link, rig.clock, rig.device, bell=False, selftest_on_connect=False)
    app = GivreApp(clinic)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.screen.id != "_default", what="the first screen")
            await app.push_screen(RecordsScreen())  # weeks of sessions: the latest, from the projections
            await until(pilot, lambda: isinstance(app.screen, RecordsScreen), what="records screen")
            await pilot.press("escape")
            await fill_session_and_lesion(pilot, app, "common-wart")
            procedure = clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            await pilot.press("f")
            await until(pilot, lambda: procedure.state is State.COMPLETED, timeout_s=30, what="completed")

    try:
        asyncio.run(scenario())
    finally:
        clinic.supervisor.close()
    assert rig.device.firmware.watchdog_trips == 0
