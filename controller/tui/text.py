"""Words more than one screen shows: the device line, each procedure state's name and style, a cycle's figures."""

from __future__ import annotations

from controller.clinic import Clinic
from controller.procedure.states import State
from controller.procedure.view import CycleLine
from controller.records.certainty import Certainty

PHASES = {
    State.IDLE: ("READY", "phase-idle"),
    State.ARMED: ("ARMED", "phase-armed"),
    State.FREEZING: ("FREEZE", "phase-freeze"),
    State.THAWING: ("THAW", "phase-thaw"),
    State.COMPLETED: ("DONE", "phase-done"),
    State.ABORTED: ("STOPPED", "phase-alarm"),
    State.FAULTED: ("FAULT", "phase-alarm"),
    State.UNCERTAIN: ("CHECKING DEVICE", "phase-alarm"),
}
"""Each procedure state as a word (never colour alone) and the CSS class that colours it."""


def device_line(clinic: Clinic) -> str:
    """The connected device in one line (kind, serial, firmware, cap, calibration, port), or manual mode."""
    if clinic.link is None or clinic.link.identity is None:
        return "manual mode: no device, Givre times only"
    ident = clinic.link.identity
    return (f"{ident.kind.name.lower()} {ident.serial} · firmware {ident.firmware} · protocol {ident.protocol} · "
            f"{ident.cryogen.name} · cap {ident.max_freeze_ms / 1000:g} s · calibration {clinic.calibration_status} · {ident.port}")


def seconds(ms: int | None) -> str:
    """A duration as a clinician reads it across the room: seconds with one decimal, "-" when there is none."""
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def spray_text(c: CycleLine) -> str:
    """A cycle's freeze as measured, in words: never a Python None, never a figure the record does not believe unmarked."""
    if c.valve_open_ms is None:
        if c.certainty == Certainty.UNRESOLVED:
            return "not known yet"  # the device could not be read: the cycle stays open until it can
        return "running" if c.end_reason is None and c.certainty != Certainty.UNKNOWN else "not measured"
    return f"{seconds(c.valve_open_ms)} NOT BELIEVED" if c.implausible else seconds(c.valve_open_ms)


def measured_by_text(c: CycleLine) -> str:
    """Who measured the freeze: only where there is a figure; how it was known when not from the usual answer."""
    if c.valve_open_ms is None:
        return "device could not say" if c.certainty == Certainty.UNKNOWN else "-"
    return f"{c.measured_by} (read back)" if c.certainty == Certainty.RECONCILED else c.measured_by


def cycle_notes(cycles: tuple[CycleLine, ...]) -> list[str]:
    """One line per cycle whose device figure is not believed, with why (the cell says NOT BELIEVED)."""
    return [f"! cycle {c.cycle}: the device's {c.valve_open_ms} ms is not believed ({c.implausible}): "
            "not completed, not billed" for c in cycles if c.implausible]
