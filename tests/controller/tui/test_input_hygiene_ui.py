"""The UI says the pseudonym rule and the store folder's warning: a refusal stays on the session screen
in one line, a surname is warned about and the session starts, a notice shows when the app opens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from controller.clinic import Clinic
from controller.tui.app import GivreApp
from controller.tui.screens.lesion import LesionScreen
from controller.tui.screens.session import SessionScreen
from tests.support.rig import Rig

pytestmark = pytest.mark.pty


async def _until(pilot: Pilot[None], predicate: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.02)


def _app(rig: Rig, notices: list[str] | None = None) -> tuple[Clinic, GivreApp]:
    clinic = Clinic(rig.store, rig.config, rig.library, rig.link, rig.clock, rig.device, bell=False, selftest_on_connect=False,
                    notices=notices or [])
    return clinic, GivreApp(clinic)


def _notifications(app: GivreApp) -> list[str]:
    return [n.message for n in app._notifications]


def test_an_email_patient_is_refused_on_the_screen_and_a_surname_is_warned_about(make_rig: Callable[..., Rig]) -> None:
    clinic, app = _app(make_rig(scale=20))

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: isinstance(app.screen, SessionScreen), "session screen")
            screen = app.screen
            screen.query_one("#operator", Input).value = "dr-07"
            screen.query_one("#patient", Input).value = "jeanne.dupont@example.fr"
            await pilot.press("enter")
            error = str(screen.query_one("#error", Static).render())
            assert error.startswith("✗ patient: the patient id looks like an e-mail address") and "dupont" not in error
            assert isinstance(app.screen, SessionScreen) and clinic.treatment is None
            screen.query_one("#patient", Input).value = "Dupont"
            await pilot.press("enter")
            await _until(pilot, lambda: isinstance(app.screen, LesionScreen), "lesion screen")
            assert any(n.startswith("patient: the patient id looks like a surname") for n in _notifications(app))

    try:
        asyncio.run(scenario())
    finally:
        clinic.supervisor.close()


def test_a_store_folder_notice_is_shown_when_the_app_opens(make_rig: Callable[..., Rig]) -> None:
    clinic, app = _app(make_rig(scale=20), notices=["warning: /x (the record store's folder) is writable by its group"])

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: _notifications(app), "a notification")
            assert _notifications(app) == ["warning: /x (the record store's folder) is writable by its group"]

    try:
        asyncio.run(scenario())
    finally:
        clinic.supervisor.close()
