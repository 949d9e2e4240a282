"""Words more than one screen shows: the device line and each procedure state's name and style."""

from __future__ import annotations

from controller.clinic import Clinic
from controller.procedure.states import State

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
