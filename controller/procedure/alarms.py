"""Alarms in the IEC 60601-1-8 manner: a priority, words and a symbol (never colour alone),
latched until acknowledged, every raise and acknowledgement recorded."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def symbol(self) -> str:
        return {Priority.LOW: "!", Priority.MEDIUM: "!!", Priority.HIGH: "!!!"}[self]


class Mode(enum.Enum):
    TREATMENT = "treatment"
    MAINTENANCE = "maintenance"  # cartridge change, calibration: not a treatment


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    priority: Priority
    text: str
    treatment_only: bool = False


ALARMS: dict[str, AlarmSpec] = {
    "link_lost": AlarmSpec(Priority.HIGH, "Device link lost: the device closes its valve by itself; check the cable"),
    "device_rebooted": AlarmSpec(Priority.HIGH, "The device restarted: the valve is closed; nothing is resent"),
    "record_not_saved": AlarmSpec(Priority.HIGH, "Record NOT saved: free disk space or fix the store; STOP still works"),
    "valve_stuck_open": AlarmSpec(Priority.HIGH, "Valve stuck OPEN: shut the cartridge off by hand now"),
    "valve_stuck_closed": AlarmSpec(Priority.MEDIUM, "Valve stuck closed: the device needs service"),
    "no_flow": AlarmSpec(Priority.HIGH, "No flow: nozzle blocked or cartridge empty; check before freezing again", True),
    "watchdog_trip": AlarmSpec(Priority.HIGH, "Device watchdog tripped: the host went silent and the device closed its valve"),
    "cartridge_empty": AlarmSpec(Priority.HIGH, "Cartridge empty: load a new cartridge", True),
    "cartridge_low": AlarmSpec(Priority.LOW, "Cartridge low", True),
    "telemetry_stale": AlarmSpec(Priority.MEDIUM, "Device data STALE (older than 1 s): no new freeze until it is fresh"),
    "sensor_fault": AlarmSpec(Priority.MEDIUM, "Thermocouple fault (open or short): temperatures are not valid"),
    "temperature_implausible": AlarmSpec(Priority.MEDIUM, "Temperature implausible or not moving during a freeze", True),
    "calibration_overdue": AlarmSpec(Priority.LOW, "Device calibration overdue or missing"),
    "outcome_uncertain": AlarmSpec(Priority.HIGH, "A freeze's outcome is unknown: reading the device's counters"),
    "device_flooding": AlarmSpec(Priority.HIGH, "The device floods the link with events: STOP, then have it serviced"),
    "figure_implausible": AlarmSpec(Priority.HIGH, "A device figure is implausible: recorded as such, not completed, not billed"),
}


@dataclass(slots=True)
class Alarm:
    code: str
    priority: Priority
    text: str
    detail: str
    active: bool = True  # the condition is present
    acknowledged: bool = False

    def line(self) -> str:
        state = "" if self.active else " (cleared, awaiting acknowledgement)"
        return f"{self.priority.symbol} {self.priority.name}: {self.text}{': ' + self.detail if self.detail else ''}{state}"


@dataclass
class AlarmManager:
    record: Callable[[str, dict[str, object]], object]  # writes one step (kind, payload); what it returns is not used
    mode: Mode = Mode.TREATMENT
    latched: dict[str, Alarm] = field(default_factory=dict)
    history: list[Alarm] = field(default_factory=list)

    def raise_(self, code: str, detail: str = "") -> Alarm | None:
        spec = ALARMS[code]
        if spec.treatment_only and self.mode is not Mode.TREATMENT:
            return None
        existing = self.latched.get(code)
        if existing is not None:
            existing.active = True
            return existing
        alarm = Alarm(code, spec.priority, spec.text, detail)
        self.latched[code] = alarm
        self.history.append(alarm)
        self.record("alarm_raised", {"code": code, "priority": spec.priority.name, "text": spec.text, "detail": detail})
        return alarm

    def condition_gone(self, code: str) -> None:
        alarm = self.latched.get(code)
        if alarm is not None and alarm.active:
            alarm.active = False
            self.record("alarm_cleared", {"code": code})
            if alarm.acknowledged:
                del self.latched[code]

    def acknowledge(self, code: str, by: str = "clinician") -> None:
        alarm = self.latched.get(code)
        if alarm is None or alarm.acknowledged:
            return
        alarm.acknowledged = True
        self.record("alarm_acknowledged", {"code": code, "by": by})
        if not alarm.active:
            del self.latched[code]

    def acknowledge_all(self, by: str = "clinician") -> None:
        for code in list(self.latched):
            self.acknowledge(code, by)
