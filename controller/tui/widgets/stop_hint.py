"""The STOP line every pop-up shows while a freeze runs."""

from __future__ import annotations

from textual.widgets import Static

STOP_HINT = "■ FREEZING: space or escape = STOP, any time, no confirmation"


class StopHint(Static):
    """Docked at the bottom of a pop-up; the stylesheet shows it only while the app carries the
    -freezing class (GivreApp follows the procedure's state ten times a second)."""

    def __init__(self) -> None:
        super().__init__(STOP_HINT, markup=False)
