"""The alarm bar of the treatment screens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

from controller.procedure.alarms import Priority

if TYPE_CHECKING:
    from textual import getters

    from controller.tui.app import GivreApp

REFRESH_S = 0.1


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
        """Read the live alarm managers (the clinic's and the open procedure's) and show what is latched."""
        clinic = self.app.clinic
        try:
            latched = list(clinic.alarms.latched.values())
            if clinic.procedure is not None:
                latched += list(clinic.procedure.alarms.latched.values())
        except RuntimeError:
            return  # the controller thread changed a dict while we copied it: the next refresh reads it again
        self.update("  ".join(a.line() for a in sorted(latched, key=lambda a: -a.priority)) or "no alarm")
        high = any(a.priority is Priority.HIGH for a in latched)
        self.set_classes("alarm-bar " + ("alarm-high" if high else "alarm-some" if latched else "alarm-none"))
