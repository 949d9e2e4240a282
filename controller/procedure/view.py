"""What a screen, the command line or the bench shows of a procedure: one frozen value, published by
the control loop after each of its turns and replaced whole (never changed in place), so a reader
on another thread always sees one consistent moment and never reads the procedure's live objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.procedure.states import State


@dataclass(frozen=True, slots=True)
class CycleLine:
    """One cycle as it stands: None where there is no figure yet (or none was ever measured)."""

    cycle: int
    valve_open_ms: int | None
    end_reason: str | None
    certainty: str
    measured_by: str  # "device" or "host"
    thaw_ms: int | None
    implausible: str | None  # why the device's figure is not believed
    halo_to_off_ms: int | None = None  # halo- and target-timed cycles: the clinical dose, T0 -> spray off (valve_open_ms is the gas)


@dataclass(frozen=True, slots=True)
class ProcedureView:
    state: State
    finished: bool  # the lesion's end is recorded: a screen that reads the record may now
    cycle: int  # the cycle running, or the one the next FIRE starts (1-based)
    cycles_total: int
    armed: bool  # a plan exists (the start gate let it through)
    dose_ms: int | None  # per cycle, after every limit
    limited_by: str | None
    freeze_remaining_s: float | None  # the device's own countdown (telemetry), while freezing
    freeze_fraction: float  # 0..1 of the running freeze, from the device
    thaw_left_s: float | None  # the thaw's minimum left, while thawing
    thaw_waiting: str  # what else the thaw waits for (a tissue temperature), "" when nothing
    thaw_fraction: float
    halo_marked: bool
    tip_c: float | None  # believed readings only (plausibility): None where there is none or it is not believed
    tissue_c: float | None
    pressure_bar: float | None
    valve_sensed_open: bool | None  # None without fresh device data (manual mode, stale link)
    device_data_fresh: bool
    cartridge_left_s: float | None  # the reserved cartridge's seconds at ARM minus this lesion's use (no store read)
    status: str  # the latest thing said (a refusal, the device's answer to STOP, an outcome)
    warnings: tuple[str, ...]
    alarms: tuple[str, ...]  # latched alarms' lines, highest priority first
    refused: tuple[str, ...]  # every reason the last ARM was refused, if it was
    cycles: tuple[CycleLine, ...]
