"""The record: the latest sessions in one table, and the hash chain's check.

The table reads the store's sessions projection (a few indexed reads, whatever the record's age);
the chain's check walks every event, so it runs in a worker thread, never on the UI's.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from controller.records.text import printable
from controller.tui.screens.base import GivreModalScreen

LATEST_SESSIONS = 200  # the screen is a glance; `givre records list` has them all


class RecordsScreen(GivreModalScreen):
    """The latest sessions as the record's projections give them; v verifies the chain."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True),
                                             Binding("v", "verify", "Verify chain", show=True)]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            table: DataTable[Text] = DataTable(id="sessions")
            table.add_columns("session", "started", "status", "patient", "lesions", "billing")
            for s in self.app.clinic.store.session_summaries(latest=LATEST_SESSIONS):
                billing = "-" if s["billed"] is None else (", ".join(s["billed"]) or "none billed")
                table.add_row(*(_cell(text) for text in (s["session_id"], s["started"][:19], s["status"], s["patient"],
                                                         ", ".join(s["lesions"]), billing)))
            yield table
            yield Static("", id="verify", markup=False)

    def action_verify(self) -> None:
        self.query_one("#verify", Static).update("verifying the chain…")
        self._verify()

    @work(thread=True, exclusive=True, name="verify chain")
    def _verify(self) -> None:
        store = self.app.clinic.store
        bad = store.verify()
        count, head = store.head()
        text = f"✓ chain intact: {count} events, head {head[:16]}" if bad is None else f"✗ TAMPERED from event {bad.seq} ({bad.kind})"
        self.app.call_from_thread(self.query_one("#verify", Static).update, text)


def _cell(recorded: str) -> Text:
    """Text from the record as data: its control characters escaped, never read as markup (a patient
    id of '[b]' or '[/]' is shown as typed)."""
    return Text(printable(recorded))
