"""The title bar at the top of the clinician's screens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

from controller.tui.text import device_line

if TYPE_CHECKING:
    from textual import getters

    from controller.tui.app import GivreApp


class TitleBar(Static):
    """Product and device on one line (a plain Static: screens come and go fast during a procedure)."""

    if TYPE_CHECKING:
        app = getters.app(GivreApp)

    def __init__(self) -> None:
        super().__init__("", markup=False)

    def on_mount(self) -> None:
        self.update(f"Givre · {device_line(self.app.clinic)}")
