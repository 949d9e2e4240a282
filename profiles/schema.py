"""The lesion profile schema: what a clinician picks, and what decides how long the device freezes.

Strict on purpose: frozen models, unknown keys refused, and hard bounds that hold whatever a file
says (freeze 0 < s <= 60 per cycle, 1..3 cycles, thaw >= 0, min <= default <= max, temperatures
within what the cryogen can physically reach). Every figure names its source.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

HARD_MAX_FREEZE_S = 60.0
MAX_CYCLES = 3
# Boiling points at 1 atm: the coldest a tissue can get with each cryogen (domain notes §1.1).
CRYOGEN_FLOOR_C = {"n2o": -89.0, "ln2": -196.0}
BODY_C = 37.0

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
SourceRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Indication(enum.StrEnum):
    CRYOTHERAPY = "cryotherapy"  # benign: destruction need not be total
    CRYOSURGERY = "cryosurgery"  # pre-malignant / malignant: controlled destruction


class DeviceKindName(enum.StrEnum):
    SPRAY = "spray"  # N2O spray actuator
    PROBE = "probe"  # contact cryode
    MANUAL = "manual"  # cotton-tip LN2 applicator: Givre is a timer only


class TimingStart(enum.StrEnum):
    SPRAY_START = "spray_start"  # the practice sheet's figures: counted from the start of the spray
    HALO = "halo"  # counted from the clinician marking the ice halo at the margin
    TISSUE_TARGET = "tissue_target"  # counted from the tissue thermocouple reaching the target


class FreezeSeconds(Strict):
    """Freeze seconds per cycle. With timing_start = tissue_target this is the hold time at the target."""

    min: float = Field(gt=0, le=HARD_MAX_FREEZE_S)
    default: float = Field(gt=0, le=HARD_MAX_FREEZE_S)
    max: float = Field(gt=0, le=HARD_MAX_FREEZE_S)
    source: SourceRef

    @model_validator(mode="after")
    def _ordered(self) -> FreezeSeconds:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"must have min <= default <= max (got {self.min:g} / {self.default:g} / {self.max:g} s)")
        return self


class Thaw(Strict):
    """A thaw must be complete before the next cycle: at least min_s, and above until_above_c if set."""

    min_s: float = Field(ge=0, le=600)
    until_above_c: float | None = Field(default=None, ge=-10, le=BODY_C)
    source: SourceRef


class Halo(Strict):
    margin_mm_min: float = Field(ge=0, le=20)
    margin_mm_max: float = Field(ge=0, le=20)
    source: SourceRef

    @model_validator(mode="after")
    def _ordered(self) -> Halo:
        if self.margin_mm_min > self.margin_mm_max:
            raise ValueError(f"must have margin_mm_min <= margin_mm_max (got {self.margin_mm_min:g} > {self.margin_mm_max:g} mm)")
        return self


class Target(Strict):
    """Controlled cryosurgery: the tissue temperature to reach, checked by a thermocouple under the lesion."""

    tissue_c: float = Field(lt=0, ge=CRYOGEN_FLOOR_C["ln2"])
    source: SourceRef


class Profile(Strict):
    id: Slug
    name_fr: Text
    name_en: Text
    family: Slug
    indication: Indication
    device_kinds: tuple[DeviceKindName, ...] = Field(min_length=1)
    cryogen: Literal["any", "n2o", "ln2"] = "any"
    requires_tissue_thermocouple: bool = False
    timing_start: TimingStart = TimingStart.SPRAY_START
    timing_start_source: SourceRef | None = None  # why the seconds count from there (a clinic may override by id)
    freeze_s: FreezeSeconds
    cycles: int = Field(ge=1, le=MAX_CYCLES)
    cycles_source: SourceRef
    thaw: Thaw | None = None  # required when there is more than one cycle
    halo: Halo | None = None
    target: Target | None = None
    notes: Text
    uncertain: tuple[Text, ...] = ()  # what the literature does not settle, said in the data
    caution: tuple[Text, ...] = ()  # what the clinician must weigh before choosing it: shown wherever the profile is picked

    @field_validator("device_kinds")
    @classmethod
    def _distinct(cls, kinds: tuple[DeviceKindName, ...]) -> tuple[DeviceKindName, ...]:
        if len(set(kinds)) != len(kinds):
            raise ValueError("must not list a device kind twice")
        return kinds

    @model_validator(mode="after")
    def _coherent(self) -> Profile:
        if self.timing_start is TimingStart.HALO and self.halo is None:
            raise ValueError("timing_start = 'halo' needs a [halo] table with the margin")
        if self.cycles > 1 and self.thaw is None:
            raise ValueError(f"cycles = {self.cycles} needs a [thaw] table: a thaw must be complete before the next cycle")
        thaw_by_temperature = self.thaw is not None and self.thaw.until_above_c is not None
        needs_thermocouple = self.timing_start is TimingStart.TISSUE_TARGET or thaw_by_temperature
        if self.timing_start is TimingStart.TISSUE_TARGET and self.target is None:
            raise ValueError("timing_start = 'tissue_target' needs a [target] table with tissue_c")
        if self.target is not None and self.timing_start is not TimingStart.TISSUE_TARGET:
            raise ValueError("a [target] table needs timing_start = 'tissue_target'")
        if needs_thermocouple and not self.requires_tissue_thermocouple:
            raise ValueError("a tissue temperature target or thaw rule needs requires_tissue_thermocouple = true")
        if self.requires_tissue_thermocouple and self.device_kinds != (DeviceKindName.PROBE,):
            raise ValueError("requires_tissue_thermocouple = true: device_kinds must be ['probe'] (only a probe has one)")
        if self.target is not None and self.cryogen != "any" and self.target.tissue_c <= CRYOGEN_FLOOR_C[self.cryogen]:
            floor = CRYOGEN_FLOOR_C[self.cryogen]
            raise ValueError(f"target.tissue_c = {self.target.tissue_c:g}: {self.cryogen} cannot go below {floor:g} C")
        if self.target is not None and self.cryogen == "any":
            raise ValueError("a tissue temperature target needs a cryogen ('n2o' or 'ln2'), since the cryogen bounds it")
        if self.indication is Indication.CRYOSURGERY and DeviceKindName.MANUAL in self.device_kinds:
            raise ValueError("cryosurgery needs a contact cryode (practice sheet): device_kinds must not include 'manual'")
        return self

    @property
    def act_family(self) -> str:
        """Billing hint: which CCAM family the act belongs to (cryotherapy vs cryosurgery)."""
        return self.indication.value

    def runs_on(self, kind: str) -> bool:
        return DeviceKindName(kind) in self.device_kinds


class Reference(Strict):
    key: Slug
    citation: Text
    kind: Literal["practice-sheet", "primary", "secondary", "manufacturer", "givre"]  # givre: our own rule, no source
    note: Text | None = None
    excerpts: tuple[Text, ...] = ()  # verbatim from the source as held (tests/profiles/test_sources.py quotes them)


class References(Strict):
    reference: tuple[Reference, ...]


_UNIT_SUFFIX = re.compile(r"_(s|c|mm)$")
UNITS = {"s": " s", "c": " C", "mm": " mm"}


def unit_for(path: tuple[str | int, ...]) -> str:
    """The unit of a field from its key path, e.g. ('freeze_s', 'max') -> ' s'."""
    for part in reversed(path):
        match = _UNIT_SUFFIX.search(str(part))
        if match:
            return UNITS[match.group(1)]
    return ""
