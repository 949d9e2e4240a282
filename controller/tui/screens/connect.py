"""The first screen when Givre starts without a port: which device to use."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Label, OptionList, Static
from textual.widgets.option_list import Option

from controller.tui.screens.base import GivreScreen
from controller.tui.screens.session import SessionScreen
from controller.tui.widgets.title_bar import TitleBar
from firmware_bridge.errors import BridgeError


class ConnectScreen(GivreScreen):
    """Pick the device: a serial port (with its USB description and serial number), the embedded
    simulator, or manual mode (cotton tip: Givre only times)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "connect", "Connect", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Label("Device")
        ports = self.app.clinic.serial_ports()
        options = [Option(f"{p.device} · {p.description} · serial {p.serial_number or '-'}", id=p.device) for p in ports]
        if self.app.clinic.simulator_factory is not None:
            options += [Option("Embedded simulator (spray)", id="sim:spray"), Option("Embedded simulator (probe)", id="sim:probe")]
        if self.app.clinic.clock.scale == 1:  # a host-timed freeze on virtual time would be recorded wrong
            options.append(Option("Manual mode: no device, Givre times only", id="manual"))
        yield OptionList(*options, id="ports")
        yield Static("", id="error", classes="error", markup=False)
        yield Footer()

    def action_connect(self) -> None:
        clinic = self.app.clinic
        ports = self.query_one("#ports", OptionList)
        choice = ports.get_option_at_index(ports.highlighted).id if ports.highlighted is not None else None
        if choice is None:
            return
        try:
            if choice.startswith("sim:"):
                choice = clinic.open_simulator(choice.removeprefix("sim:"))
            if choice != "manual":
                self.app.connect(clinic.open_port(choice))
        except BridgeError as exc:
            self.query_one("#error", Static).update(f"✗ {exc}")
            return
        self.app.switch_screen(SessionScreen())
