"""The connected device: identity, lifetime counters, link statistics."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from controller.tui.screens.base import GivreModalScreen
from controller.tui.text import device_line
from firmware_bridge.errors import BridgeError


class DeviceScreen(GivreModalScreen):
    """What the device and the link say about themselves, read once when the dialog opens."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True)]

    def compose(self) -> ComposeResult:
        clinic = self.app.clinic
        lines = [device_line(clinic)]
        if clinic.link is not None and not clinic.link.lost:
            try:
                counters = clinic.link.counters()
                lines.append(f"counters: {counters.freezes_started} freezes, {counters.total_valve_open_ms} ms valve open since boot, "
                             f"{counters.watchdog_trips} watchdog trips; last freeze {counters.last_valve_open_ms} ms "
                             f"({counters.last_end_reason.name})")
            except BridgeError as exc:
                lines.append(f"counters unavailable: {exc}")
            stats = clinic.link.stats()
            lines.append(f"link: {stats.bytes_received} bytes in, {stats.session.retransmits} retransmits, "
                         f"{stats.decoder.crc_errors} CRC errors, {stats.session.seq_gaps} frames missed")
        with Vertical(id="dialog"):
            yield Static("\n".join(lines), markup=False)
