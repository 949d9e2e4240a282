"""The alarm bar of the treatment screens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

from controller.procedure.alarms import AlarmManager, Priority

if TYPE_CHECKING:
    from textual import getters

    from controller.clinic import Clinic
    from controller.tui.app import GivreApp

REFRESH_S = 0.1


def latched_lines(alarms: AlarmManager) -> list[tuple[Priority, str]]:
    """An alarm manager's latched alarms as (priority, line), from one copy of its table: ``dict.copy``
    is a single C call the GIL does not interrupt, so a thread that raises or acknowledges an alarm
    meanwhile is seen before or after, never halfway (nothing to catch)."""
    return [(a.priority, a.line()) for a in alarms.latched.copy().values()]


def priority_of(line: str) -> Priority:
    """The priority an alarm line states ("!!! HIGH: ..."; AlarmManager's Alarm.line): the view carries lines."""
    return next((p for p in Priority if line.startswith(f"{p.symbol} {p.name}:")), Priority.LOW)


def alarm_lines(clinic: Clinic) -> list[tuple[Priority, str]]:
    """What is latched now, highest priority first: the clinic's own alarms (raised between procedures)
    and the open procedure's, from its published view while its loop runs it. Once the lesion is over
    (view.finished) the loop no longer touches that procedure, so its alarms are the UI's alone to read
    and acknowledge (the summary's k): they are read from the procedure, as acknowledged, not from the
    last view, which a finished procedure no longer republishes."""
    lines = latched_lines(clinic.alarms)
    procedure = clinic.procedure
    if procedure is not None:
        view = procedure.view  # one read: one moment
        lines += latched_lines(procedure.alarms) if view.finished else [(priority_of(line), line) for line in view.alarms]
    return sorted(lines, key=lambda pl: -pl[0])


class AlarmBar(Static):
    """Latched alarms in words and symbols (never colour alone), on every treatment screen."""

    if TYPE_CHECKING:
        app = getters.app(GivreApp)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.show)
        self.show()

    def show(self) -> None:
        """Show what is latched (alarm_lines), in words, with the bar's colour as a second cue."""
        lines = alarm_lines(self.app.clinic)
        self.update("  ".join(line for _, line in lines) or "no alarm")
        high = any(p is Priority.HIGH for p, _ in lines)
        self.set_classes("alarm-bar " + ("alarm-high" if high else "alarm-some" if lines else "alarm-none"))
