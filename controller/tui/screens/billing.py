"""The end of a session: its CCAM acts, proposed, confirmed or changed by the clinician, recorded."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Input, Label, Static

from controller.practice.billing import BillingError, acts_of, confirm, parse_choice, propose
from controller.records.history import view_of
from controller.tui.screens.base import GivreModalScreen


class BillingScreen(GivreModalScreen):
    """The session's proposed CCAM acts; the clinician confirms or changes them and the choice is recorded."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+b", "confirm", "Confirm billing", show=True, priority=True),
                                             Binding("escape", "later", "Decide later", show=True)]

    def __init__(self, session_id: str, operator: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.operator = operator
        self.table = self.app.clinic.billing_table
        self.proposal = propose(acts_of(view_of(self.app.clinic.store, self.session_id)), self.table)

    def compose(self) -> ComposeResult:
        details = [f"{a.code} ({a.lesions} lesion(s)): {a.label}" for a in self.proposal.acts]
        details += [f"! {line}" for line in (*self.proposal.not_billed, *self.proposal.warnings)]
        with VerticalScroll(id="dialog"):
            yield Static(f"Billing for session {self.session_id}\nproposed: {self.proposal.line()}", id="proposal", markup=False)
            yield Label("Acts: CODE or CODE:ASSOC (1 = 100 %, 2 = 50 %); empty = none billed")
            yield Input(" ".join(f"{a.code}:{a.association_code}" if a.association_code else a.code for a in self.proposal.acts),
                        id="codes")
            yield Static("", id="billing-error", classes="error", markup=False)
            with Horizontal():
                yield Button("Confirm (ctrl+b)", id="confirm", variant="primary")
                yield Button("Decide later (esc)", id="later")
            yield Static("\n".join([*details, f"table: {self.table.version}"]), id="billing-details", markup=False)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_later()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:
        try:
            chosen = parse_choice(self.query_one("#codes", Input).value.split(), self.table)
            recorded = confirm(self.app.clinic.store, self.session_id, self.proposal, chosen, self.table, by=self.operator)
        except BillingError as exc:
            self.query_one("#billing-error", Static).update(f"✗ {exc}")
            return
        acts = ", ".join(a["code"] for a in recorded["chosen"]) or "nothing billed"
        self.app.notify(f"billing recorded: {acts}" + (" (changed from the proposal)" if recorded["changed"] else ""))
        self._close()

    def action_later(self) -> None:
        self.app.notify(f"billing not confirmed; later: givre records bill {self.session_id}", severity="warning")
        self._close()

    def _close(self) -> None:
        self.app.pop_screen()
        self.app.switch_to_session()
