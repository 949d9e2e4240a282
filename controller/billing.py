"""Billing proposal (CCAM): count a session's reimbursable lesions per zone and technique, find each
group's code by its lesion-count band, and apply the association rule (at most two acts: the higher
tariff at 100 %, association code 1; the second at 50 %, code 2). Unknown labels or tariffs stay
marked unverified: the clinician confirms or changes the proposal, never a silent guess.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Zone = Literal["face", "body"]
Technique = Literal["cryotherapy", "cryosurgery"]


class BillingError(ValueError):
    pass


class CcamCode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-Z]{4}[0-9]{3}$")
    zone: Literal["face", "body", "any"]
    technique: Technique
    lesions_min: int = Field(ge=1)
    lesions_max: int = Field(ge=1)
    label: str = Field(min_length=3)
    label_verified: bool
    tariff_eur: Decimal | None
    source: str = Field(min_length=3)

    @field_validator("tariff_eur", mode="before")
    @classmethod
    def _blank_is_unknown(cls, value: object) -> object:
        return None if value in ("", None) else value

    def covers(self, zone: Zone, technique: Technique, count: int) -> bool:
        return self.technique == technique and self.zone in (zone, "any") and self.lesions_min <= count <= self.lesions_max


class CcamTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: tuple[CcamCode, ...]


def load_table(path: Path | None = None) -> CcamTable:
    text = path.read_text(encoding="utf-8") if path else resources.files("controller").joinpath("ccam.toml").read_text(encoding="utf-8")
    return CcamTable.model_validate(tomllib.loads(text))


@dataclass(frozen=True, slots=True)
class Act:
    zone: Zone
    technique: Technique
    reimbursable: bool  # False for an aesthetic act: no reimbursement asked


@dataclass(frozen=True, slots=True)
class ProposedAct:
    code: str
    label: str
    verified: bool  # label and tariff both read from a published source
    lesions: int
    tariff_eur: Decimal | None
    association_code: int | None  # 1 = 100 %, 2 = 50 %
    rate: Decimal | None
    amount_eur: Decimal | None


@dataclass(frozen=True, slots=True)
class Proposal:
    acts: tuple[ProposedAct, ...]
    not_billed: tuple[str, ...]  # groups beyond the two-act rule, or without a code
    aesthetic_lesions: int  # not reimbursable: no 'remboursement demandé'
    warnings: tuple[str, ...]


def propose(acts: list[Act], table: CcamTable) -> Proposal:
    groups = Counter((a.zone, a.technique) for a in acts if a.reimbursable)
    aesthetic = sum(1 for a in acts if not a.reimbursable)
    found: list[tuple[CcamCode, int]] = []
    not_billed: list[str] = []
    warnings: list[str] = []
    for (zone, technique), count in sorted(groups.items()):
        match = next((c for c in table.code if c.covers(zone, technique, count)), None)
        if match is None:
            not_billed.append(f"{count} {technique} lesion(s), {zone}: no code in the table")
        else:
            found.append((match, count))
    if any(c.tariff_eur is None for c, _ in found) and len(found) > 1:
        warnings.append("a tariff is unknown: the order of association (100 % / 50 %) must be confirmed by the clinician")
    found.sort(key=lambda item: item[0].tariff_eur if item[0].tariff_eur is not None else Decimal(-1), reverse=True)
    proposed = []
    for rank, (code, count) in enumerate(found):
        if rank >= 2:
            not_billed.append(f"{code.code}: at most two acts per session (association rule)")
            continue
        association = (1 if rank == 0 else 2) if len(found) > 1 else None
        rate = Decimal("1") if rank == 0 else Decimal("0.5")
        amount = (code.tariff_eur * rate).quantize(Decimal("0.01")) if code.tariff_eur is not None else None
        verified = code.label_verified and code.tariff_eur is not None
        if not verified:
            warnings.append(f"{code.code}: {'label' if not code.label_verified else 'tariff'} not verified ({code.source})")
        proposed.append(ProposedAct(code.code, code.label, verified, count, code.tariff_eur, association, rate, amount))
    return Proposal(tuple(proposed), tuple(not_billed), aesthetic, tuple(warnings))
