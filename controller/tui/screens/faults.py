"""Demo mode only: the embedded simulator's faults, one button each."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Button, Label

from controller.tui.screens.base import GivreModalScreen


class FaultScreen(GivreModalScreen):
    """Demo only: the simulator's fault toggles, so a trainee can see each alarm."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True)]
    FAULTS: ClassVar[dict[str, str]] = {
        "disconnect": "Pull the cable", "block-nozzle": "Block the nozzle", "empty-cartridge": "Empty the cartridge",
        "reboot": "Reboot the device", "valve-stuck-open": "Jam the valve open"}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Simulator faults (demo)")
            for key, text in self.FAULTS.items():
                yield Button(text, id=f"fault-{key}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        device = self.app.clinic.device
        name = (event.button.id or "").removeprefix("fault-")
        if device is not None and name in self.FAULTS:
            device.inject(name)
            self.app.notify(f"simulator: {self.FAULTS[name]}")
        self.app.pop_screen()
