"""The Givre terminal UI: the clinician's flow and the technician's screens.

The UI never times a freeze: the device does, and the controller's own thread (Supervisor) runs
the procedure. The screens read the live Clinic, procedure and link (ten times a second on the
treatment screen) and send intents; the self-test and calibration run in worker threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from controller.clinic import Clinic
from controller.tui.screens.calibration import CalibrationScreen
from controller.tui.screens.cartridge import CartridgeScreen
from controller.tui.screens.connect import ConnectScreen
from controller.tui.screens.device import DeviceScreen
from controller.tui.screens.faults import FaultScreen
from controller.tui.screens.lesion import LesionScreen
from controller.tui.screens.records import RecordsScreen
from controller.tui.screens.session import SessionScreen
from firmware_bridge.link import Link


class GivreApp(App[None]):
    """The app: the clinic it shows, the keys that open each dialog, and the moves back to the
    start of a lesion or of a session."""

    TITLE = "Givre"
    CSS_PATH = "givre.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=True, priority=True),
        Binding("c", "cartridge", "Cartridge", show=True),
        Binding("r", "records", "Records", show=True),
        Binding("i", "device", "Device", show=True),
        Binding("x", "faults", "Sim faults", show=True),
        Binding("b", "toggle_bell", "Bell on/off", show=False),
        Binding("ctrl+l", "calibration", "Calibrate", show=True),
    ]

    def __init__(self, clinic: Clinic) -> None:
        super().__init__()
        self.clinic = clinic

    def on_mount(self) -> None:
        self.clinic.supervisor.start()
        if self.clinic.link is not None:
            self.connect(self.clinic.link)
            self.push_screen(SessionScreen())
        else:
            self.push_screen(ConnectScreen())

    def connect(self, link: Link) -> None:
        """Hand the clinic a freshly opened link, then start the pre-use self-test unless the clinic turned it off."""
        self.clinic.connect(link)
        if self.clinic.selftest_on_connect:
            self.start_selftest()

    @work(thread=True, name="self-test")
    def start_selftest(self) -> None:
        """The self-test in a worker thread: it holds the device for a few seconds; the session screen shows its lines."""
        self.clinic.run_selftest()

    def switch_to_lesion(self) -> None:
        """From a lesion's summary to a new lesion's form, in the same session."""
        self.pop_screen()  # summary
        self.pop_screen()  # procedure
        self.pop_screen()  # lesion form
        self.push_screen(LesionScreen())

    def switch_to_session(self) -> None:
        """Close every screen of the last session (down to Textual's default screen), then a new session's form."""
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(SessionScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette lists every screen and the bell, beside Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Cartridge", "Load a cartridge, seconds left, keeping time (c)", self.action_cartridge)
        yield SystemCommand("Records", "Sessions and the hash-chain check (r)", self.action_records)
        yield SystemCommand("Device", "Identity, counters, link statistics (i)", self.action_device)
        yield SystemCommand("Bell", "Bell at freeze start and end on or off (b)", self.action_toggle_bell)
        yield SystemCommand("Calibration", "Technician calibration steps with a certificate (ctrl+l)", self.action_calibration)
        if self.clinic.device is not None:
            yield SystemCommand("Simulator faults", "Pull the cable, block the nozzle, empty the cartridge... (x)", self.action_faults)

    def action_toggle_bell(self) -> None:
        self.clinic.bell = not self.clinic.bell
        self.notify(f"bell at freeze start and end: {'on' if self.clinic.bell else 'off'}")

    def action_cartridge(self) -> None:
        self.push_screen(CartridgeScreen())

    def action_calibration(self) -> None:
        self.push_screen(CalibrationScreen())

    def action_records(self) -> None:
        self.push_screen(RecordsScreen())

    def action_device(self) -> None:
        self.push_screen(DeviceScreen())

    def action_faults(self) -> None:
        if self.clinic.device is not None:
            self.push_screen(FaultScreen())
        else:
            self.notify("the fault panel exists only in demo mode (the embedded simulator)")

    def on_unmount(self) -> None:
        self.clinic.supervisor.close()  # a running freeze is stopped; the device watchdog is the backstop
        device = self.clinic.device
        if device is not None:
            device.close()
