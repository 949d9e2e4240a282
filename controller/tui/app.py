"""The Givre terminal UI: the clinician's flow and the technician's screens.

The UI never times a freeze: the device does, and the controller's own thread (Supervisor) runs
the procedure. The treatment screens (procedure, summary, alarm bar) render `Procedure.view`, the
frozen ProcedureView that thread publishes after each turn, read once per refresh, never the
procedure's live objects; their keys queue intents (`request_arm`, `fire`, ...) for that thread.
The self-test and calibration run in worker threads.

STOP is the app's, not a screen's: while the lesion's freeze runs (or its outcome is being read
back), space and escape STOP over every screen and pop-up (the command palette included), ctrl+c
STOPs before it says how to quit, and ctrl+q STOPs before it quits. The rest of the time the keys
keep each screen's meaning (escape closes a pop-up, space types a space).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from controller.clinic import Clinic
from controller.procedure.states import FREEZE_MAY_RUN
from controller.tui.screens.calibration import CalibrationScreen
from controller.tui.screens.cartridge import CartridgeScreen
from controller.tui.screens.connect import ConnectScreen
from controller.tui.screens.device import DeviceScreen
from controller.tui.screens.faults import FaultScreen
from controller.tui.screens.lesion import LesionScreen
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.screens.records import RecordsScreen
from controller.tui.screens.session import SessionScreen
from firmware_bridge.link import Link

STOP_KEYS = frozenset({"space", "escape"})
"""The keys that STOP a running freeze from any screen or pop-up."""

FOLLOW_S = 0.1  # how often the app looks at the procedure's state (footer keys, the pop-ups' STOP line)


class GivreApp(App[None]):
    """The app: the clinic it shows, STOP over every screen, the keys that open each dialog, and the
    moves back to the start of a lesion or of a session."""

    TITLE = "Givre"
    CSS_PATH = "givre.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: the app's bindings are tried before any screen's, pop-up's or widget's. They
        # act only while a freeze runs (check_action); otherwise the key goes on to the screen.
        Binding("space", "stop_freeze", "STOP", key_display="space/esc", show=True, priority=True),
        Binding("escape", "stop_freeze", "STOP", show=False, priority=True),
        Binding("ctrl+c", "stop_then_ask_quit", "STOP", show=False, priority=True),
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
        for notice in self.clinic.notices:
            self.notify(notice, severity="warning", timeout=30, markup=False)
        self.set_interval(FOLLOW_S, self._follow_freeze)
        self.clinic.supervisor.start()
        if self.clinic.link is not None:
            self.connect(self.clinic.link)
            self.push_screen(SessionScreen())
        else:
            self.push_screen(ConnectScreen())
        # The widget tree and every library loaded so far live as long as the app: out of the
        # collector's generations, a full collection no longer pauses every thread (the link
        # thread's heartbeats too) for tens of milliseconds.
        self.call_after_refresh(gc.freeze)

    # ---- STOP ----------------------------------------------------------------------------------

    @property
    def freezing(self) -> bool:
        """The lesion's freeze runs, or its outcome is being read back: the device may be spraying.
        STOP reads the procedure's live state (one attribute), not a published view a tick old:
        Procedure.stop() decides on the same attribute whether to send STOP to the device."""
        procedure = self.clinic.procedure
        return procedure is not None and procedure.state in FREEZE_MAY_RUN

    def stop_freeze(self) -> str | None:
        """If a freeze runs, STOP it: Procedure.stop() sends STOP to the device from this thread and
        returns what the device said, shown as a notification (and on the treatment screen). None
        when nothing was running."""
        procedure = self.clinic.procedure
        if procedure is None or procedure.state not in FREEZE_MAY_RUN:
            return None
        said = procedure.stop()
        self.notify(said, title="■ STOP", severity="warning", timeout=10)
        for screen in self.screen_stack:
            if isinstance(screen, ProcedureScreen):
                screen.show_stop(said)
        return said

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """STOP's bindings exist only while a freeze runs: the rest of the time Textual passes their
        keys on (escape to the pop-up, space to the Input) and the footer does not list them."""
        if action in ("stop_freeze", "stop_then_ask_quit"):
            return self.freezing
        return super().check_action(action, parameters)

    def action_stop_freeze(self) -> None:
        self.stop_freeze()

    def action_stop_then_ask_quit(self) -> None:
        """ctrl+c mid-freeze: STOP first, then Textual's answer to ctrl+c (how to quit), said here
        because Textual's own finds no quit key over a pop-up and then says nothing."""
        self.stop_freeze()
        self.notify("Press [b]ctrl+q[/b] to quit the app", title="Do you want to quit?")

    async def action_quit(self) -> None:
        """ctrl+q (and the palette's Quit): the valve closes before anything else, then the app quits."""
        self.stop_freeze()
        await super().action_quit()

    async def on_event(self, event: events.Event) -> None:
        """The two ways a key reaches a widget before any binding, even a priority one, routed to
        STOP while a freeze runs: Textual drops a binding whose key the focused widget consumes
        (space in an Input: the cartridge date, the calibration figures, the command palette), and
        escape restores a maximized widget before bindings are tried."""
        if (isinstance(event, events.Key) and not event.is_forwarded and event.key in STOP_KEYS
                and self._key_bypasses_bindings(event) and self.stop_freeze() is not None):
            event.stop()
            return
        await super().on_event(event)

    def _key_bypasses_bindings(self, event: events.Key) -> bool:
        focused = self.focused
        consumed = focused is not None and focused.check_consume_key(event.key, event.character)
        return consumed or (event.key == "escape" and self.screen.maximized is not None)

    def _follow_freeze(self) -> None:
        """The freeze's start and end come from the controller's thread: the app carries the
        -freezing class (the pop-ups' STOP line) and the footers list STOP only while it runs."""
        freezing = self.freezing
        if freezing != self.has_class("-freezing"):
            self.set_class(freezing, "-freezing")
            self.refresh_bindings()

    # ---- navigation ------------------------------------------------------------------------------

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
