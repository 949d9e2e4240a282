"""After a lesion: its cycles as the device measured them, and the session's billing so far."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from controller.clinic import Clinic
from controller.practice.billing import acts_of, propose
from controller.records.history import view_of
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.billing import BillingScreen
from controller.tui.text import PHASES
from controller.tui.widgets.alarm_bar import AlarmBar
from controller.tui.widgets.title_bar import TitleBar


class SummaryScreen(GivreScreen):
    """The lesion's verdict and cycles; next lesion, or end the session (then billing)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("n", "next_lesion", "Next lesion", show=True),
                                             Binding("e", "end_session", "End session", show=True),
                                             Binding("k", "acknowledge", "Ack alarms", show=True)]

    def action_acknowledge(self) -> None:
        clinic = self.app.clinic
        if clinic.procedure is not None:
            clinic.procedure.alarms.acknowledge_all()
        clinic.alarms.acknowledge_all()

    def compose(self) -> ComposeResult:
        clinic = self.app.clinic
        p = clinic.procedure
        assert p is not None and clinic.treatment is not None  # a summary follows a lesion of an open session
        yield TitleBar()
        yield AlarmBar(id="alarms")
        yield Static(f"{PHASES[p.state][0]}: {p.profile.name_fr} — session {clinic.treatment.session_id}, lesion {p.lesion_id}",
                     id="verdict", markup=False)
        table: DataTable[str] = DataTable(id="cycles")
        table.add_columns("cycle", "requested ms", "device ms", "thaw ms", "limited by", "ended", "measured by")
        for c in p.cycles:
            table.add_row(str(c.cycle), str(c.dose.requested_ms), str(c.valve_open_ms), str(c.thaw_ms or "-"), c.dose.limited_by,
                          str(c.end_reason), c.measured_by)
        yield table
        yield Static(f"cartridge seconds used: {p.cartridge_seconds_used:.3f}   record: {clinic.store.path}", markup=False)
        yield Static(billing_line(clinic), id="billing", markup=False)
        yield Footer()

    def action_next_lesion(self) -> None:
        self.app.switch_to_lesion()

    def action_end_session(self) -> None:
        clinic = self.app.clinic
        if clinic.treatment is None:
            self.app.switch_to_session()
            return
        session_id, operator = clinic.treatment.session_id, clinic.treatment.info.operator
        status = clinic.treatment.end()
        if status == "unresolved":
            self.app.notify(f"session {session_id} stays open: a freeze's outcome is read from the device at its next connection",
                            severity="warning", timeout=10)
        else:
            self.app.notify(f"session {session_id} ended: {status}")
        clinic.treatment = None
        self.app.push_screen(BillingScreen(session_id, operator))


def billing_line(clinic: Clinic) -> str:
    """The session's proposal so far (completed lesions); the clinician confirms it when the session ends."""
    assert clinic.treatment is not None
    proposal = propose(acts_of(view_of(clinic.store, clinic.treatment.session_id)), clinic.billing_table)
    if not proposal.acts and not proposal.aesthetic_lesions:
        return "billing: no completed lesion to bill yet"
    return "proposed billing: " + proposal.line() + "".join(f"\n! {w}" for w in proposal.warnings)
