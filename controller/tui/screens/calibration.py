"""The technician's guided calibration: one step at a time, measured in a worker thread, each
result certified and shown in a table."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Static
from textual.worker import Worker, WorkerState

from controller.clinic import Clinic
from controller.device.calibration import CalibrationError, StepResult, certify, flow, thermocouple, timer, valve
from controller.tui.screens.base import GivreModalScreen
from firmware_bridge.link import Link

TIMER_WINDOW_S = 10.0


class CalibrationScreen(GivreModalScreen):
    """The technician's guided calibration: one step at a time, measured off the UI thread, results as a table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Close", show=True)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label("Calibration (technician)")
            yield Input(placeholder="technician id", id="technician")
            with Horizontal():
                yield Button("Timer (10 s)", id="step-timer")
                yield Button("Valve latency", id="step-valve")
            yield Input(placeholder="flow: mass before (g)", id="mass-before")
            yield Input(placeholder="flow: mass after (g)", id="mass-after")
            yield Input(placeholder="flow: the spray's valve-open ms", id="valve-ms")
            yield Button("Flow rate", id="step-flow")
            yield Input(placeholder="thermocouple: point 1 as REF:READING, e.g. 0:3.8", id="point-1")
            yield Input(placeholder="thermocouple: point 2 as REF:READING, e.g. -196:-199.1", id="point-2")
            yield Button("Tip thermocouple", id="step-tip")
            yield Static("", id="progress", markup=False)
            table: DataTable[str] = DataTable(id="results")
            table.add_columns("step", "result", "measured", "written")
            yield table

    def on_button_pressed(self, event: Button.Pressed) -> None:
        clinic = self.app.clinic
        progress = self.query_one("#progress", Static)
        if clinic.link is None or clinic.device_busy:
            progress.update("✗ no device, or a measurement is already running")
            return
        step = (event.button.id or "").removeprefix("step-")
        try:
            measure = self._measurement(step, clinic.link)
        except (ValueError, CalibrationError) as exc:
            progress.update(f"✗ {exc}; nothing was written")
            return
        technician = self.query_one("#technician", Input).value.strip() or "technician"
        progress.update(f"measuring: {step}...")
        self.run_worker(partial(measure_and_certify, clinic, clinic.link, measure, technician), name=f"calibration: {step}", thread=True)

    def _measurement(self, step: str, link: Link) -> Callable[[], StepResult]:
        """The step's measurement with the figures typed in (a ValueError names a bad one), not yet run."""
        if step == "timer":
            return partial(timer, link, TIMER_WINDOW_S)
        if step == "valve":
            return partial(valve, link)
        if step == "flow":
            return partial(flow, link, float(self._typed("mass-before")), float(self._typed("mass-after")), int(self._typed("valve-ms")))
        points = []
        for key in ("point-1", "point-2"):
            ref, _, reading = self._typed(key).partition(":")
            points.append((float(ref), float(reading)))
        return partial(thermocouple, link, "tip", points)

    def _typed(self, input_id: str) -> str:
        return self.query_one(f"#{input_id}", Input).value.strip()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A step's worker finished: its result joins the table, or its error replaces the progress line."""
        if event.state is not WorkerState.SUCCESS:
            return
        outcome = event.worker.result
        progress = self.query_one("#progress", Static)
        if isinstance(outcome, StepResult):
            progress.update(f"done: {outcome.step}")
            self.query_one("#results", DataTable).add_row(
                outcome.step, "PASS" if outcome.passed else "FAIL", str(outcome.measurements), str(outcome.written or "-"))
        elif isinstance(outcome, str):
            progress.update(outcome)


def measure_and_certify(clinic: Clinic, link: Link, measure: Callable[[], StepResult], technician: str) -> StepResult | str:
    """Run in a worker thread: the measurement with the supervisor standing aside, then the
    certificate; a failure comes back as the line to show (never a traceback)."""
    try:
        with clinic.measuring():
            result = measure()
        certify(link, clinic.store, technician, [result])
    except Exception as exc:  # the technician reads it on screen
        return f"✗ {exc}; nothing was written"
    return result
