from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, DataTable, Input, OptionList, Select, Static

from controller.cli.ui import embedded_simulator
from controller.clinic import Clinic
from controller.config import Config
from controller.procedure.states import State
from controller.records.store import RecordStore
from controller.tui.app import GivreApp
from controller.tui.screens.billing import BillingScreen
from controller.tui.screens.calibration import CalibrationScreen
from controller.tui.screens.cartridge import CartridgeScreen
from controller.tui.screens.connect import ConnectScreen
from controller.tui.screens.lesion import LesionScreen
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.screens.session import SessionScreen
from controller.tui.screens.summary import SummaryScreen
from controller.tui.widgets.title_bar import TitleBar
from profiles.library import load_builtins

if TYPE_CHECKING:
    from tests.support.rig import Rig

pytestmark = pytest.mark.pty


@dataclass
class Harness:
    """A rig (simulated device on a pty, link, store, one clock) with the clinic and the app built on it."""

    rig: Rig
    clinic: Clinic
    app: GivreApp


@pytest.fixture
def make_harness(make_rig: Callable[..., Rig]) -> Iterator[Callable[..., Harness]]:
    """make_rig's rig with a 23 g cartridge, a clinic (no bell) and the app; the clinic's supervisor
    closes here, the rig's link, store and device in make_rig."""
    clinics: list[Clinic] = []

    def make(scale: float = 20, selftest_on_connect: bool = False) -> Harness:
        rig = make_rig(scale=scale)
        clinic = Clinic(rig.store, rig.config, rig.library, rig.link, rig.clock, rig.device, bell=False,
                        selftest_on_connect=selftest_on_connect)
        clinics.append(clinic)
        return Harness(rig, clinic, GivreApp(clinic))

    yield make
    for clinic in clinics:
        clinic.supervisor.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def slow_harness(make_harness: Callable[..., Harness]) -> Harness:
    """Virtual time x2 only: a freeze lasts long enough for keys to land in the middle of it."""
    return make_harness(scale=2)


def _holds(predicate: Callable[[], object]) -> bool:
    try:
        return bool(predicate())
    except NoMatches:  # the screen is still composing
        return False


def _rendered(app: GivreApp, selector: str) -> str:
    """What a Static on the current screen shows."""
    return str(app.screen.query_one(selector, Static).render())


async def until(pilot: Pilot[None], predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not _holds(predicate):
        if time.monotonic() > deadline:
            app = pilot.app
            assert isinstance(app, GivreApp)
            p = app.clinic.procedure
            try:
                message = _rendered(app, "#message")
            except NoMatches:
                message = ""
            raise AssertionError(f"timed out waiting for {what} (state {p.state if p else None}, status {p.status_text if p else ''!r}, "
                                 f"screen message {message!r}, controller error {app.clinic.supervisor.error!r})")
        await pilot.pause(0.02)


async def fill_session_and_lesion(pilot: Pilot[None], app: GivreApp, profile_id: str, aesthetic: bool = False) -> None:
    await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
    await pilot.press(*"dr-a", "tab", *"P-0042", "enter")
    await until(pilot, lambda: isinstance(app.screen, LesionScreen), what="lesion screen")
    screen = app.screen
    screen.query_one("#region", Select).value = "foot-sole"  # the side is left blank: it is optional
    screen.query_one("#description", Input).value = "two plantar warts"
    screen.query_one("#aesthetic", Checkbox).value = aesthetic
    options = screen.query_one("#profiles", OptionList)
    options.highlighted = next(i for i in range(options.option_count) if options.get_option_at_index(i).id == profile_id)
    await pilot.press("ctrl+n")
    await until(pilot, lambda: isinstance(app.screen, ProcedureScreen), what="procedure screen")


def test_a_full_two_cycle_plantar_wart_protocol_from_the_keyboard(harness: Harness) -> None:
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "plantar-wart")
            procedure = harness.clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            await pilot.press("f")
            await until(pilot, lambda: procedure.state is State.THAWING, what="thawing")  # the device timed cycle 1
            await until(pilot, lambda: "THAW" in _rendered(app, "#phase"), what="THAW shown")
            await until(pilot, lambda: "press enter" in _rendered(app, "#message"), what="thaw time done")
            await pilot.press("enter")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed for cycle 2")
            await pilot.press("f")
            await until(pilot, lambda: procedure.state is State.COMPLETED, timeout_s=30, what="completed")
            await until(pilot, lambda: isinstance(app.screen, SummaryScreen) and app.screen.query_one("#cycles", DataTable).row_count == 2,
                        what="summary with both cycles")
            assert "proposed billing: QZNP004 tariff unknown (unverified)" in _rendered(app, "#billing")
            # x20 virtual time: the device thread's wall-time resolution (a few ms) is worth up to 200 ms of device time
            assert [c.valve_open_ms is not None and abs(c.valve_open_ms - 20_000) <= 200 for c in procedure.cycles] == [True, True]
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, BillingScreen), what="billing screen")
            codes = app.screen.query_one("#codes", Input)
            assert codes.value == "QZNP004"  # the proposal, ready to confirm or change
            codes.value = "QZNP004 QANP007"
            await pilot.press("ctrl+b")
            await until(pilot, lambda: "different association codes" in _rendered(app, "#billing-error"),
                        what="a bad choice refused inline")
            codes.value = "QZNP004:1 QANP007:2"
            await pilot.press("ctrl+b")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="back to a new session")
    asyncio.run(scenario())
    kinds = [e.kind for e in harness.rig.store.events()]
    assert kinds.count("freeze_result") == 2 and "thaw_done" in kinds and kinds[-2:] == ["session_ended", "billing_confirmed"]
    billing = list(harness.rig.store.events())[-1].payload
    assert [(a["code"], a["association_code"]) for a in billing["chosen"]] == [("QZNP004", 1), ("QANP007", 2)]
    assert billing["changed"] and billing["by"] == "dr-a" and [a["code"] for a in billing["proposed"]["acts"]] == ["QZNP004"]


def test_stop_mid_freeze_closes_the_valve_and_records_aborted(slow_harness: Harness) -> None:
    harness, device = slow_harness, slow_harness.rig.device

    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "seborrheic-keratosis-thick", aesthetic=True)
            procedure = harness.clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            await pilot.press("f")
            await until(pilot, lambda: device.valve_open, what="valve open")
            await pilot.press("space")
            assert not device.model.valve_commanded  # STOP reached the device before the key handler returned
            await until(pilot, lambda: procedure.state is State.ABORTED, what="aborted")
            await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="summary")
    asyncio.run(scenario())
    results = [e.payload for e in harness.rig.store.events() if e.kind == "freeze_result"]
    assert results[0]["end_reason"] == "STOPPED"
    (lesion,) = [e.payload for e in harness.rig.store.events() if e.kind == "lesion_recorded"]
    assert lesion["reimbursable"] is False  # the form's aesthetic box reached the record


def test_a_simulator_fault_reaches_the_screen_and_the_record(slow_harness: Harness) -> None:
    harness, device = slow_harness, slow_harness.rig.device

    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "seborrheic-keratosis-thick")
            procedure = harness.clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            await pilot.press("f")
            await until(pilot, lambda: device.valve_open, what="valve open")
            device.block_nozzle()
            await until(pilot, lambda: "No flow" in _rendered(app, "#alarms"), what="alarm shown")
            assert _rendered(app, "#alarms").startswith("!!! HIGH:")  # words and symbols, not colour alone
    asyncio.run(scenario())
    assert "no_flow" in [e.payload.get("code") for e in harness.rig.store.events() if e.kind == "alarm_raised"]


def test_form_validation_is_inline_and_writes_nothing(harness: Harness) -> None:
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            await pilot.press(*"Jean Dupont", "tab", *"P-1", "enter")
            assert isinstance(app.screen, SessionScreen)
            assert "operator: the operator id has a space (a name?)" in _rendered(app, "#error")
            app.screen.query_one("#operator", Input).value = "dr-a"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, LesionScreen), what="lesion screen")
            lesion_form = app.screen
            lesion_form.query_one("#size", Input).value = "four"
            await pilot.press("ctrl+n")
            assert "size: 'four' is not a number of mm" in _rendered(app, "#error")
            lesion_form.query_one("#size", Input).value = "4"
            await pilot.press("ctrl+n")
            assert "region" in _rendered(app, "#error")
            assert app.screen is lesion_form
            titles = {command.title for command in app.get_system_commands(lesion_form)}
            assert {"Cartridge", "Records", "Device", "Bell", "Simulator faults"} <= titles  # the palette lists them
    asyncio.run(scenario())
    kinds = [e.kind for e in harness.rig.store.events()]
    assert "lesion_recorded" not in kinds and kinds.count("session_started") == 1


def test_without_a_port_the_connect_screen_offers_ports_the_simulator_and_manual_mode(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "c.sqlite")
    clinic = Clinic(store, Config(), load_builtins(), None, bell=False, selftest_on_connect=False, simulator_factory=embedded_simulator)
    app = GivreApp(clinic)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ConnectScreen), what="connect screen")
            ports = app.screen.query_one("#ports", OptionList)
            ids = [ports.get_option_at_index(i).id for i in range(ports.option_count)]
            assert {"sim:spray", "sim:probe", "manual"} <= set(ids)
            ports.highlighted = ids.index("sim:probe")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            assert clinic.link is not None and clinic.device_kind == "probe"
            assert "probe SIM-0001" in str(app.screen.query_one(TitleBar).render())
    try:
        asyncio.run(scenario())
    finally:
        clinic.supervisor.close()
        if clinic.link is not None:
            clinic.link.close()
        store.close()


def test_the_self_test_runs_on_connect_and_its_lines_are_shown(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(scale=1, selftest_on_connect=True)
    app = h.app

    async def scenario() -> None:
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: "self-test running" in _rendered(app, "#selftest"), what="self-test running shown")
            await until(pilot, lambda: any(line.startswith("self-test ") and "running" not in line for line in h.clinic.selftest_lines),
                        timeout_s=30, what="self-test finished")
            await until(pilot, lambda: "PASS  watchdog" in _rendered(app, "#selftest"), what="lines shown")
    asyncio.run(scenario())
    assert [e.kind for e in h.rig.store.events()].count("selftest") == 1


def test_the_calibration_screen_runs_a_step_and_shows_its_result(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(scale=1)
    app = h.app

    async def scenario() -> None:
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, CalibrationScreen), what="calibration screen")
            screen = app.screen
            screen.query_one("#mass-before", Input).value = "22"
            screen.query_one("#mass-after", Input).value = "22.4"
            screen.query_one("#valve-ms", Input).value = "10000"
            screen.query_one("#step-flow", Button).press()
            await until(pilot, lambda: "must be less than before" in _rendered(app, "#progress"), what="refusal")
            screen.query_one("#mass-after", Input).value = "21.3"
            screen.query_one("#step-flow", Button).press()
            await until(pilot, lambda: screen.query_one("#results", DataTable).row_count == 1, what="result row")
            assert h.rig.link.read_calibration().flow_mg_per_s == 70
    asyncio.run(scenario())
    assert [e.kind for e in h.rig.store.events()].count("calibration_certificate") == 1


def test_the_next_session_keeps_the_operator_and_names_the_device_once(harness: Harness) -> None:
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            device_mentions = [w for w in app.screen.query(Static) if "SIM" in str(w.render())]
            assert len(device_mentions) == 1  # the title bar alone
            await pilot.press(*"dr-a", "tab", *"P-0042", "enter")
            await until(pilot, lambda: isinstance(app.screen, LesionScreen), what="lesion screen")
            harness.clinic.treatment = None
            await app.push_screen(SessionScreen())
            await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.focused is not None, what="a new session")
            assert app.screen.query_one("#operator", Input).value == "dr-a"
            await until(pilot, lambda: app.screen.focused is app.screen.query_one("#patient", Input), what="the patient field focused")
    asyncio.run(scenario())


def test_a_cartridge_loaded_on_screen_is_screwed_onto_the_embedded_simulator(harness: Harness) -> None:
    device = harness.rig.device
    device.empty_cartridge()

    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            screen = CartridgeScreen()
            await app.push_screen(screen)
            screen.query_one("#size", Select).value = "16g"
            screen.action_load()
            await until(pilot, lambda: "16g" in _rendered(app, "#status"), what="the new cartridge shown")
    asyncio.run(scenario())
    assert device.model.cartridge.size_g == 16 and device.model.cartridge.remaining_g == 16  # full: no more 'cartridge empty'
