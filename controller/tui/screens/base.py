"""The base of every Givre screen: the app typed as GivreApp, so a screen reads `self.app.clinic`
and calls the app's own navigation with the type checker's help."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import ModalScreen, Screen

from controller.tui.widgets.stop_hint import StopHint

if TYPE_CHECKING:
    from textual import getters

    from controller.tui.app import GivreApp


class GivreScreen(Screen[None]):
    """A full screen of the clinician's flow."""

    if TYPE_CHECKING:  # app.py imports the screens: the type is declared, the runtime `app` is Textual's own
        app = getters.app(GivreApp)


class GivreModalScreen(ModalScreen[None]):
    """A dialog over the current screen (cartridge, records, device, calibration, billing, faults).
    While a freeze runs, a pop-up shows the STOP line (the app's own keys STOP over any pop-up)."""

    if TYPE_CHECKING:
        app = getters.app(GivreApp)

    def on_mount(self) -> None:
        """Textual calls each class's on_mount in turn: a pop-up's own on_mount does not replace this one."""
        self.mount(StopHint())
