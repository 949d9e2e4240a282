"""The spray's gas cartridge: load a new one, seconds left, keeping time."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Button, Input, Label, Select, Static

from controller.records.ledger import CartridgeLedger, LedgerError
from controller.tui.screens.base import GivreModalScreen


class CartridgeScreen(GivreModalScreen):
    """The ledger's current cartridge, and a new one recorded when the clinician loads it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True),
                                             Binding("l", "load", "Load", show=True)]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Cartridge")
            yield Select([(name, name) for name in self.app.clinic.config.cartridges], prompt="size", id="size")
            yield Input(value=date.today().isoformat(), placeholder="opened YYYY-MM-DD", id="opened")
            yield Static("", id="status", markup=False)
            yield Button("Load new cartridge (l)", id="load")

    def on_mount(self) -> None:
        self._show()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_load()

    def action_load(self) -> None:
        clinic = self.app.clinic
        size = self.query_one("#size", Select).value
        text = self.query_one("#opened", Input).value.strip()
        try:
            opened = date.fromisoformat(text)
        except ValueError:
            self.query_one("#status", Static).update(f"✗ opened: {text!r} is not a date; write YYYY-MM-DD")
            return
        if not isinstance(size, str):
            self.query_one("#status", Static).update("✗ size: pick 8g, 16g or 23g")
            return
        try:
            CartridgeLedger(clinic.store, clinic.config).load(size, opened)
        except LedgerError as exc:
            self.query_one("#status", Static).update(f"✗ {exc}")
            return
        self._show()
        if clinic.device is not None:  # the embedded simulator: its cartridge is the one just registered
            try:
                clinic.device.load_cartridge(round(clinic.config.cartridges[size].size_g))
            except ValueError as exc:  # a clinic's own size the simulator does not make
                self.app.notify(f"the simulator kept its cartridge: {exc}", severity="warning", markup=False)

    def _show(self) -> None:
        clinic = self.app.clinic
        status = CartridgeLedger(clinic.store, clinic.config).status()
        if status is None:
            self.query_one("#status", Static).update("no cartridge registered")
            return
        warning = f"\n! past its keeping time of {status.keeping_days} days: load a new one" if status.past_keeping_time else ""
        self.query_one("#status", Static).update(
            f"{status.size}, opened {status.opened}: {status.remaining_s:.0f} s left of {status.capacity_s:.0f} s, "
            f"~{status.estimated_lesions_left} lesions{warning}\n{status.reminder}")
