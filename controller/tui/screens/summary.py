"""After a lesion: its cycles as the device measured them, and the session's billing so far."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Static

from controller.clinic import Clinic
from controller.practice.billing import acts_of, propose
from controller.records.history import SessionView, view_of
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.billing import BillingScreen
from controller.tui.text import PHASES, cycle_notes, measured_by_text, seconds, spray_text
from controller.tui.widgets.alarm_bar import REFRESH_S, AlarmBar
from controller.tui.widgets.title_bar import TitleBar


class SummaryScreen(GivreScreen):
    """The lesion's verdict and cycles; next lesion, or end the session (then billing)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("n", "next_lesion", "Next lesion", show=True),
                                             Binding("e", "end_session", "End session", show=True),
                                             Binding("k", "acknowledge", "Ack alarms", show=True)]

    def __init__(self) -> None:
        super().__init__()
        self._waiting: Timer | None = None  # looks again until the lesion's end is recorded

    def action_acknowledge(self) -> None:
        clinic = self.app.clinic
        if clinic.procedure is not None:
            clinic.procedure.acknowledge_alarms()
        clinic.alarms.acknowledge_all()

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield AlarmBar(id="alarms")
        yield Static("", id="verdict", markup=False)
        table: DataTable[str] = DataTable(id="cycles")
        table.add_columns("cycle", "asked", "spray", "thaw", "limited by", "ended", "measured by", "from T0")
        yield table
        yield Static("", id="notes", markup=False)
        yield Static("", id="cartridge", markup=False)
        yield Static("", id="billing", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        if not self.show_lesion():
            self._waiting = self.set_interval(REFRESH_S, self.show_lesion)

    def show_lesion(self) -> bool:
        """Render one published view (read once: the verdict, the cycles and the billing show one moment);
        the record's figures (cartridge seconds, billing) only once the lesion's end is recorded
        (view.finished), never before: a lesion half-closed reads as nothing to bill. True once shown whole."""
        clinic = self.app.clinic
        p = clinic.procedure
        assert p is not None and clinic.treatment is not None  # a summary follows a lesion of an open session
        view = p.view
        self.query_one("#verdict", Static).update(
            f"{PHASES[view.state][0]}: {p.profile.name_fr} — session {clinic.treatment.session_id}, lesion {p.lesion_id}")
        table: DataTable[str] = self.query_one("#cycles", DataTable)
        table.clear()
        for c in view.cycles:  # "spray" is the gas the device measured; "from T0" the clinical dose (halo-timed profiles)
            table.add_row(str(c.cycle), seconds(view.dose_ms), spray_text(c), seconds(c.thaw_ms), view.limited_by or "-",
                          c.end_reason or "-", measured_by_text(c), seconds(c.halo_to_off_ms))
        self.query_one("#notes", Static).update("\n".join(cycle_notes(view.cycles)) if view.cycles else "no freeze was fired")
        if not view.finished:
            self.query_one("#billing", Static).update("billing: once the lesion's record is closed...")
            return False
        session = view_of(clinic.store, clinic.treatment.session_id)
        lesion = session.lesion(p.lesion_id)
        used = sum(c.cartridge_seconds for c in lesion.cycles) if lesion is not None else 0.0
        self.query_one("#cartridge", Static).update(f"cartridge seconds used: {used:.3f}   record: {clinic.store.path}")
        self.query_one("#billing", Static).update(billing_line(clinic, session))
        if self._waiting is not None:
            self._waiting.stop()
        return True

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


def billing_line(clinic: Clinic, session: SessionView) -> str:
    """The session's proposal so far (its recorded, completed lesions); the clinician confirms it when the session ends."""
    proposal = propose(acts_of(session), clinic.billing_table)
    if not proposal.acts and not proposal.aesthetic_lesions:
        return "billing: no completed lesion to bill yet"
    return "proposed billing: " + proposal.line() + "".join(f"\n! {w}" for w in proposal.warnings)
