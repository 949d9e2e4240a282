"""The start gate, as pure functions: may this lesion's first freeze start, and may the next cycle fire?

Plain inputs (the profile, the device's identity and latest telemetry as values, the calibration's
day numbers, the config's limits, today) and plain outputs (every reason at once, the warnings,
the alarms to raise, the dose). No link, no store, no clock: the driver gathers the facts, calls
these, raises the alarms and records the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from controller.config import Config
from controller.procedure.dose import BelowMinimumOverride, DoseDecision, DoseRefused, decide
from firmware_bridge.link import DeviceIdentity
from firmware_bridge.messages import LATCHING_FAULTS, CalData, Capability, DeviceKind, Fault, Telemetry, TriggerMode
from firmware_bridge.units import date_of_day, day_number, fault_names
from profiles.schema import DeviceKindName, Profile, TimingStart

STALE_AFTER_S = 1.0  # device data older than this is not believed (a live device sends telemetry every 100 ms or faster)

# Which latched fault raises which alarm (the watchdog trip has its own path: a host that went silent).
FAULT_ALARMS: dict[Fault, str] = {
    Fault.NO_FLOW: "no_flow",
    Fault.VALVE_STUCK_OPEN: "valve_stuck_open",
    Fault.VALVE_STUCK_CLOSED: "valve_stuck_closed",
    Fault.SENSOR_OPEN: "sensor_fault",
    Fault.SENSOR_SHORT: "sensor_fault",
    Fault.WATCHDOG_TRIP: "watchdog_trip",
}


def kind_name(kind: DeviceKind | None) -> DeviceKindName:
    """A device's kind as profiles and the record name it ("spray", "probe"); no device (None) is "manual".
    procedure/ and device/ decide on the wire's DeviceKind and name it only through this."""
    return DeviceKindName.MANUAL if kind is None else DeviceKindName(kind.name.lower())


def alarms_for_faults(flags: int) -> list[str]:
    """The alarm codes a set of fault flags calls for, in FAULT_ALARMS' order, each once."""
    return list(dict.fromkeys(code for fault, code in FAULT_ALARMS.items() if flags & fault))


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the device, as its latest telemetry shows it, may start a freeze now."""

    reasons: tuple[str, ...]
    alarms: tuple[str, ...] = ()  # hazards present now, alarmed now whoever's event reported them


def device_readiness(telemetry: Telemetry | None, age_s: float | None) -> Readiness:
    """Fresh data, no latched fault, a cartridge that is not empty. ``age_s``: how old the telemetry is
    in wall seconds (None with no telemetry at all)."""
    if telemetry is None or age_s is None or age_s > STALE_AFTER_S:
        return Readiness(("device data is STALE (none in the last second): check the link",))
    faults = Fault(telemetry.fault_flags) & LATCHING_FAULTS
    if faults:
        return Readiness((f"the device holds a latched fault ({fault_names(faults)}): fix its cause and clear it",),
                         tuple(alarms_for_faults(faults & ~Fault.WATCHDOG_TRIP)))
    if Fault(telemetry.fault_flags) & Fault.CARTRIDGE_EMPTY:
        return Readiness(("the device reports its cartridge empty: load a new one",))
    return Readiness(())


@dataclass(frozen=True, slots=True)
class StartRequest:
    """Everything the gate looks at, as values."""

    profile: Profile
    cycles: int
    identity: DeviceIdentity | None  # None: manual mode
    readiness: Readiness  # device_readiness() of the latest telemetry (ignored in manual mode)
    calibration: CalData | None
    trigger: TriggerMode
    requested_freeze_s: float | None
    below_minimum: BelowMinimumOverride | None
    high_alarm_unacknowledged: bool
    config: Config
    today: date


@dataclass(frozen=True, slots=True)
class StartVerdict:
    reasons: list[str]  # empty: the lesion may start
    dose: DoseDecision | None  # None when the dose itself was refused
    warnings: list[str] = field(default_factory=list)
    alarms: list[tuple[str, str]] = field(default_factory=list)  # (code, detail) to raise

    @property
    def allowed(self) -> bool:
        return not self.reasons and self.dose is not None


def start_gate(request: StartRequest) -> StartVerdict:
    """Every reason this lesion cannot start now, at once, with the dose it would get."""
    reasons = profile_fit(request)
    alarms: list[tuple[str, str]] = []
    warnings: list[str] = []
    if request.identity is not None:
        reasons += request.readiness.reasons
        alarms += [(code, "") for code in request.readiness.alarms]
    cap = request.identity.max_freeze_ms if request.identity is not None else None
    try:
        dose: DoseDecision | None = decide(request.profile, request.requested_freeze_s, request.config.clinic_max_freeze_s, cap,
                                           request.below_minimum)
    except DoseRefused as exc:
        reasons.append(str(exc))
        dose = None
    if dose is not None and dose.override is not None:  # decide() lets a dose below the minimum through only with one
        warnings.append(f"{dose.effective_ms / 1000:g} s per cycle is below the profile's minimum of "
                        f"{dose.minimum_ms / 1000:g} s: overridden by {dose.override.by} ({dose.override.why})")
    calibration = calibration_gate(request.identity is not None, request.calibration, request.config, request.today)
    if calibration is not None:
        message, blocks = calibration
        alarms.append(("calibration_overdue", message))
        (reasons if blocks else warnings).append(message + (" (config: block)" if blocks else ""))
    if request.high_alarm_unacknowledged:
        reasons.append("a HIGH alarm is not acknowledged")
    return StartVerdict(reasons, dose, warnings, alarms)


def profile_fit(request: StartRequest) -> list[str]:
    """Why this profile cannot run on this device: its kind, cycles, cryogen, sensors, timing, trigger."""
    p, identity = request.profile, request.identity
    kind = kind_name(identity.kind if identity is not None else None)
    reasons: list[str] = []
    if not p.runs_on(kind):
        reasons.append(f"profile {p.id} runs on {', '.join(k.value for k in p.device_kinds)}, not on a {kind} device")
    if not 1 <= request.cycles <= p.cycles:
        reasons.append(f"--cycles {request.cycles}: profile {p.id} plans {p.cycles} cycle(s); ask for 1 to {p.cycles}")
    if identity is None:
        return reasons
    if p.cryogen != "any" and identity.cryogen.name.lower() != p.cryogen:
        reasons.append(f"profile {p.id} needs {p.cryogen.upper()}, the device uses {identity.cryogen.name}")
    if p.requires_tissue_thermocouple and not identity.capabilities & Capability.TISSUE_THERMOCOUPLE:
        reasons.append(f"profile {p.id} needs a tissue thermocouple; this device has none")
    if p.timing_start is not TimingStart.SPRAY_START and not identity.capabilities & Capability.HALO_TIMING:
        reasons.append(f"profile {p.id} counts from the {p.timing_start.value.replace('_', ' ')}; this device cannot time that")
    if request.trigger is not TriggerMode.HOST and not identity.capabilities & (Capability.HAND_TRIGGER | Capability.FOOT_SWITCH):
        reasons.append("this device has no hand trigger or foot switch")
    return reasons


def calibration_gate(with_device: bool, calibration: CalData | None, config: Config, today: date) -> tuple[str, bool] | None:
    """(what is wrong with the device's calibration, whether the config blocks on it), or None when it is in date."""
    if not with_device:
        return None
    due = calibration.due_on_day if calibration else 0
    if due and due >= day_number(today):
        return None
    what = "has never been calibrated" if not due else f"was due for calibration on {date_of_day(due)}"
    return f"the device {what}", config.calibration_overdue == "block"
