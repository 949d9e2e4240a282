"""A new session: who treats whom, and the device's pre-use self-test."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Button, Footer, Input, Label, Static

from controller.procedure.treatment import Treatment
from controller.records.lesion import SessionInfo
from controller.records.pseudonym import PseudonymRefused, Role, check_pseudonym
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.lesion import LesionScreen
from controller.tui.widgets.title_bar import TitleBar

SELFTEST_REFRESH_S = 0.2


class SessionScreen(GivreScreen):
    """Operator and patient (pseudonymous ids), what recovery settled, the self-test's lines. The device
    is named once, in the title bar; the operator of the last session is filled in (one GP, many patients)."""

    AUTO_FOCUS = None  # on_mount picks the field: the operator, or the patient when the operator is filled in
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "start", "Start session", show=True, priority=True),
                                             Binding("ctrl+t", "selftest", "Self-test", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        clinic = self.app.clinic
        yield TitleBar()
        with VerticalScroll():
            for line in clinic.recovered:
                yield Static(f"! {line}", classes="warning", markup=False)
            yield Label("Operator (pseudonymous id)")
            yield Input(clinic.last_operator, placeholder="e.g. dr-07", id="operator")
            yield Label("Patient (pseudonymous id: never a name)")
            yield Input(placeholder="e.g. P-0042", id="patient")
            yield Static("", id="error", classes="error", markup=False)
            yield Button("Start session (enter)", id="start", variant="primary")
            yield Static("", id="selftest", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#patient" if self.app.clinic.last_operator else "#operator", Input).focus()
        self.set_interval(SELFTEST_REFRESH_S, self._show_selftest)

    def _show_selftest(self) -> None:
        self.query_one("#selftest", Static).update("\n".join(self.app.clinic.selftest_lines))

    def action_selftest(self) -> None:
        self.app.start_selftest()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_start()

    def action_start(self) -> None:
        """Both ids through the clinic's pseudonym rule: a refusal stays on this screen in one line; a
        warning (an id that looks like a surname) is shown and the session starts."""
        clinic = self.app.clinic
        ids: dict[Role, str] = {role: self.query_one(f"#{role}", Input).value.strip() for role in ("operator", "patient")}
        try:
            warnings = [check_pseudonym(role, value, role, clinic.config.pseudonym_pattern) for role, value in ids.items()]
            info = SessionInfo(operator=ids["operator"], patient=ids["patient"])
        except PseudonymRefused as exc:
            self.query_one("#error", Static).update(f"✗ {exc}")
            return
        except ValidationError as exc:
            field_name = str(exc.errors()[0]["loc"][0])
            self.query_one("#error", Static).update(
                f"✗ {field_name}: letters, digits, '.', '_' or '-' (1-40, no spaces; a pseudonymous id, never a name)"
            )
            return
        for warning in warnings:
            if warning is not None:
                self.app.notify(warning, severity="warning", timeout=15, markup=False)
        clinic.last_operator = info.operator
        clinic.treatment = Treatment(clinic.store, clinic.config, clinic.clock, info, clinic.link)
        clinic.treatment.start()
        self.app.push_screen(LesionScreen())
