"""STOP from every screen and pop-up the app can show mid-freeze (issue 13, item 1).

Each case is a fresh 30 s freeze on a simulated device (virtual time x2: 15 s of wall time, far
more than a case needs on a loaded machine), a screen or pop-up opened over the treatment screen,
one key, and the SIMULATED DEVICE as the judge: the valve it was told to close and the valve
itself, and the reason its firmware recorded for the freeze's end (STOPPED, not COMPLETED: the
freeze did not simply run out)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import HelpPanel, Input, Select

from controller.clinic import Clinic
from controller.procedure.driver import Procedure
from controller.procedure.states import State
from controller.procedure.treatment import Treatment
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.tui.app import GivreApp
from controller.tui.screens.base import GivreModalScreen
from controller.tui.screens.calibration import CalibrationScreen
from controller.tui.screens.cartridge import CartridgeScreen
from controller.tui.screens.device import DeviceScreen
from controller.tui.screens.faults import FaultScreen
from controller.tui.screens.lesion import LesionScreen
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.screens.records import RecordsScreen
from controller.tui.screens.session import SessionScreen
from controller.tui.widgets.stop_hint import StopHint
from firmware_bridge.messages import EndReason
from tests.controller.tui.test_tui import until

if TYPE_CHECKING:
    from tests.support.rig import Rig

pytestmark = pytest.mark.pty

PROFILE = "seborrheic-keratosis-thick"  # 20-30 s, one cycle
FREEZE_S = 30.0
SCALE = 2.0


@dataclass
class Stand:
    """A rig, the clinic and the app on it (the clinic's supervisor closes in the fixture)."""

    rig: Rig
    clinic: Clinic
    app: GivreApp


@pytest.fixture
def stand(make_rig: Callable[..., Rig]) -> Iterator[Stand]:
    rig = make_rig(scale=SCALE)
    clinic = Clinic(rig.store, rig.config, rig.library, rig.link, rig.clock, rig.device, bell=False, selftest_on_connect=False)
    yield Stand(rig, clinic, GivreApp(clinic))
    clinic.supervisor.close()


def open_lesion(app: GivreApp) -> Procedure:
    """What the session and lesion forms do (their own test fills them in by keyboard): a session,
    a lesion with a 30 s freeze asked for, its procedure attached, the treatment screen pushed."""
    clinic = app.clinic
    clinic.treatment = Treatment(clinic.store, clinic.config, clinic.clock, SessionInfo(operator="dr-a", patient="P-0042"), clinic.link)
    clinic.treatment.start()
    lesion = Lesion(profile_id=PROFILE, site=Site(region=Region("hand"), side="left"), description="a thick keratosis")
    procedure = clinic.treatment.lesion(lesion, clinic.library.get(PROFILE), trigger=clinic.trigger, requested_freeze_s=FREEZE_S)
    clinic.procedure = procedure
    clinic.supervisor.attach(procedure)
    app.push_screen(ProcedureScreen())
    return procedure


async def start_freeze(pilot: Pilot[None], stand: Stand) -> Procedure:
    app = stand.app
    await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
    procedure = open_lesion(app)
    await until(pilot, lambda: isinstance(app.screen, ProcedureScreen), what="treatment screen")
    await pilot.press("a")
    await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
    await pilot.press("f")
    await until(pilot, lambda: stand.rig.device.valve_open and procedure.state is State.FREEZING, what="spraying")
    return procedure


# ---- what a GP can open mid-freeze: each opener ends with it on screen --------------------------

Opener = Callable[[Pilot[None], GivreApp], Awaitable[None]]


async def by_key(pilot: Pilot[None], app: GivreApp, key: str, screen: type[GivreModalScreen]) -> None:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, screen), what=f"{screen.__name__} after {key}")


async def treatment_screen(pilot: Pilot[None], app: GivreApp) -> None:
    """Nothing over the treatment screen (its own STOP keys)."""


async def records(pilot: Pilot[None], app: GivreApp) -> None:
    await by_key(pilot, app, "r", RecordsScreen)


async def records_table_maximized(pilot: Pilot[None], app: GivreApp) -> None:
    """The palette's Maximize on the sessions table: Textual's escape restores it before any binding."""
    await records(pilot, app)
    app.screen.action_maximize()
    await until(pilot, lambda: app.screen.maximized is not None, what="table maximized")


async def device(pilot: Pilot[None], app: GivreApp) -> None:
    await by_key(pilot, app, "i", DeviceScreen)


async def faults(pilot: Pilot[None], app: GivreApp) -> None:
    await by_key(pilot, app, "x", FaultScreen)


async def cartridge(pilot: Pilot[None], app: GivreApp) -> None:
    await by_key(pilot, app, "c", CartridgeScreen)


async def cartridge_sizes_open(pilot: Pilot[None], app: GivreApp) -> None:
    """The size list dropped down (its overlay has its own escape)."""
    await cartridge(pilot, app)
    size = app.screen.query_one("#size", Select)
    size.focus()
    await pilot.press("enter")
    await until(pilot, lambda: size.expanded, what="size list open")


async def cartridge_date_typed(pilot: Pilot[None], app: GivreApp) -> None:
    """Focus in a text field, where Textual gives a space to the field, not to any binding."""
    await cartridge(pilot, app)
    app.screen.query_one("#opened", Input).focus()
    await until(pilot, lambda: isinstance(app.focused, Input), what="date field focused")


async def calibration(pilot: Pilot[None], app: GivreApp) -> None:
    await by_key(pilot, app, "ctrl+l", CalibrationScreen)


async def calibration_field_maximized(pilot: Pilot[None], app: GivreApp) -> None:
    """The technician's field focused, then the palette's Maximize on it."""
    await calibration(pilot, app)
    app.screen.query_one("#technician", Input).focus()
    await until(pilot, lambda: isinstance(app.focused, Input), what="technician field focused")
    app.screen.action_maximize()
    await until(pilot, lambda: app.screen.maximized is not None, what="field maximized")


async def command_palette(pilot: Pilot[None], app: GivreApp) -> None:
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette) and isinstance(app.focused, Input), what="command palette")


async def theme_picker(pilot: Pilot[None], app: GivreApp) -> None:
    """The palette's Theme command: a second palette, of themes."""
    app.action_change_theme()
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="theme picker")


async def keys_panel(pilot: Pilot[None], app: GivreApp) -> None:
    """The palette's Keys command: the help panel beside the treatment screen."""
    app.action_show_help_panel()
    await until(pilot, lambda: app.screen.query(HelpPanel), what="keys panel")


OPENERS: dict[str, Opener] = {
    "treatment": treatment_screen, "records": records, "records-table-maximized": records_table_maximized,
    "device": device, "faults": faults, "cartridge": cartridge, "cartridge-sizes-open": cartridge_sizes_open,
    "cartridge-date-field": cartridge_date_typed, "calibration": calibration, "calibration-field-maximized": calibration_field_maximized,
    "command-palette": command_palette, "theme-picker": theme_picker, "keys-panel": keys_panel,
}
KEYS = ["space", "escape", "ctrl+c"]
CASES = [(where, key) for where in OPENERS for key in KEYS]
# ctrl+q is the app's own priority key on every screen (no field takes it, nothing acts before it): three screens
CASES += [(where, "ctrl+q") for where in ("treatment", "cartridge-date-field", "command-palette")]


@pytest.mark.parametrize(("where", "key"), CASES, ids=[f"{where}-{key}" for where, key in CASES])
def test_stop_from_every_screen_and_pop_up_closes_the_valve(stand: Stand, where: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app, device = stand.app, stand.rig.device
    said: list[tuple[str, bool]] = []  # each notification's title or the quit, with the valve as the device was told then
    notify, exit_ = app.notify, app.exit

    def noting(message: str, *, title: str = "", **options: Any) -> None:
        said.append((title, device.model.valve_commanded))
        notify(message, title=title, **options)

    def quitting(*args: Any, **kwargs: Any) -> None:
        said.append(("quit", device.model.valve_commanded))
        exit_(*args, **kwargs)

    monkeypatch.setattr(app, "notify", noting)
    monkeypatch.setattr(app, "exit", quitting)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            procedure = await start_freeze(pilot, stand)
            await OPENERS[where](pilot, app)
            opened = app.screen
            if isinstance(opened, GivreModalScreen):
                hint = opened.query_one(StopHint)
                await until(pilot, lambda: hint.display, what="the pop-up's STOP line")
            assert device.valve_open and procedure.state is State.FREEZING, "the freeze ended before the key"
            await pilot.press(key)
            # (Pilot's press waits for the app to look idle, which a loaded machine can fake: wait for the device instead)
            await until(pilot, lambda: not device.model.valve_commanded, timeout_s=5, what="the device told to close its valve")
            await until(pilot, lambda: not device.valve_open, timeout_s=5, what="the simulated valve closed")
            assert device.firmware.nvm.last_freeze.end_reason is EndReason.STOPPED
            if key in ("space", "escape"):
                if not isinstance(opened, ProcedureScreen):  # (the treatment screen goes on to the lesion's summary)
                    assert app.screen is opened  # the key was STOP, and only STOP: the pop-up stays for the next key
                await until(pilot, lambda: procedure.state is State.ABORTED, what="aborted")
    asyncio.run(scenario())
    then = {"ctrl+c": [("Do you want to quit?", False)], "ctrl+q": [("quit", False)]}.get(key, [])
    assert said == [("■ STOP", False), *then]  # what the device said to STOP; ctrl+c and ctrl+q: then the question or the quit


def test_without_a_freeze_the_keys_keep_their_meaning(stand: Stand) -> None:
    """Space types in a field, escape closes a pop-up, armed or not; STOP is not in the footer."""
    app = stand.app

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            app.clinic.treatment = Treatment(app.clinic.store, app.clinic.config, app.clinic.clock,
                                             SessionInfo(operator="dr-a", patient="P-1"), app.clinic.link)
            app.clinic.treatment.start()
            app.push_screen(LesionScreen())
            await until(pilot, lambda: isinstance(app.screen, LesionScreen) and app.screen.query_one("#description"), what="lesion form")
            description = app.screen.query_one("#description", Input)
            description.focus()
            await pilot.press(*"two warts")
            assert description.value == "two warts"
            await pilot.press("c")  # typed: the app's c (cartridge) is not a priority key
            assert description.value == "two wartsc"
            lesion_form = app.screen
            app.screen.query_one("#region", Select).focus()
            await by_key(pilot, app, "r", RecordsScreen)
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is lesion_form, what="records closed by escape")
            assert "stop_freeze" not in {b.binding.action for b in app.screen.active_bindings.values()}

            procedure = open_lesion(app)
            await until(pilot, lambda: isinstance(app.screen, ProcedureScreen), what="treatment screen")
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            treatment = app.screen
            await by_key(pilot, app, "c", CartridgeScreen)
            assert not app.screen.query_one(StopHint).display
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is treatment, what="cartridge closed by escape")
            assert procedure.state is State.ARMED  # escape closed the pop-up; it did not disarm
    asyncio.run(scenario())


def test_mid_freeze_the_footer_and_every_pop_up_say_how_to_stop(stand: Stand) -> None:
    """The treatment screen's footer, and a STOP line docked in each pop-up (a pop-up's footer would
    not list the app's keys: Textual lists only the modal screen's own)."""
    app = stand.app

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await start_freeze(pilot, stand)
            footer_keys = {key: b.binding for key, b in app.screen.active_bindings.items() if b.enabled}
            assert footer_keys["space"].description == "STOP" and footer_keys["space"].key_display == "space/esc"
            for opener in (records, device, faults, cartridge, calibration):
                await opener(pilot, app)
                await until(pilot, lambda: app.screen.query_one(StopHint).display, what=f"STOP line shown on {type(app.screen).__name__}")
                assert "space or escape = STOP" in str(app.screen.query_one(StopHint).render())
                app.pop_screen()
    asyncio.run(scenario())
