"""The record: every session in one table, and the hash chain's check."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from controller.records.history import load_sessions
from controller.tui.screens.base import GivreModalScreen


class RecordsScreen(GivreModalScreen):
    """Sessions as the record's read-back view gives them; v verifies the chain."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True),
                                             Binding("v", "verify", "Verify chain", show=True)]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            table: DataTable[str] = DataTable(id="sessions")
            table.add_columns("session", "started", "status", "patient", "lesions", "billing")
            for s in load_sessions(self.app.clinic.store):
                billing = "-" if s.billing is None else (", ".join(a["code"] for a in s.billing["chosen"]) or "none billed")
                table.add_row(s.session_id, s.started[:19], s.status, s.patient, ", ".join(lesion.profile_id for lesion in s.lesions),
                              billing)
            yield table
            yield Static("", id="verify", markup=False)

    def action_verify(self) -> None:
        store = self.app.clinic.store
        bad = store.verify()
        count, head = store.head()
        self.query_one("#verify", Static).update(
            f"✓ chain intact: {count} events, head {head[:16]}" if bad is None else f"✗ TAMPERED from event {bad.seq} ({bad.kind})")
