"""Billing proposal (CCAM): count a session's reimbursable lesions per zone and technique, find each
group's code by its lesion-count band, and apply the association rule, which the table holds as data
with its source (at most two acts: the higher tariff at 100 %, association code 1; the second at 50 %,
code 2). A label is the official one or none; unknown labels, tariffs and pairs stay marked
unverified: the clinician confirms or changes the proposal, and that choice is recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.config import read_toml
from controller.errors import GivreError
from controller.records.history import SessionView
from controller.records.lesion import Zone
from controller.records.store import RecordStore

Technique = Literal["cryotherapy", "cryosurgery"]


class BillingError(GivreError):
    """A billing table or a clinician's choice that cannot be used; the message says what to fix."""


class CcamCode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[A-Z]{4}[0-9]{3}$")
    zone: Literal["face", "body", "any"]
    technique: Technique
    lesions_min: int = Field(ge=1)
    lesions_max: int = Field(ge=1)
    label: str = ""  # the official label as published; empty when none was found
    verified: bool  # the label was read from a published source (label_source)
    label_source: str = ""
    unverified: str = ""  # what is not known about this entry, in words
    tariff_eur: Decimal | None = Field(ge=0, le=10_000)  # None: unknown, never guessed
    tariff_source: str = ""
    source: str = Field(min_length=3)

    @field_validator("tariff_eur", mode="before")
    @classmethod
    def _blank_is_unknown(cls, value: object) -> object:
        return None if value in ("", None) else value

    @model_validator(mode="after")
    def _band(self) -> CcamCode:
        if self.lesions_min > self.lesions_max:
            raise ValueError(f"{self.code}: lesions_min {self.lesions_min} > lesions_max {self.lesions_max}")
        if self.verified and not self.label.strip():
            raise ValueError(f"{self.code}: verified = true needs the published label")
        return self

    @property
    def display(self) -> str | None:
        """The official label, or None: a coding's display never carries text that is not the label."""
        return self.label if self.verified else None

    @property
    def text(self) -> str:
        """For people: the official label, or what is not known about the code."""
        return self.label if self.verified else f"label not verified ({self.unverified or self.source})"

    @property
    def fully_verified(self) -> bool:
        """Label and tariff both read from a published source."""
        return self.verified and self.tariff_eur is not None

    def amount(self, rate: Decimal) -> Decimal | None:
        return None if self.tariff_eur is None else (self.tariff_eur * rate).quantize(Decimal("0.01"))

    def fits(self, zone: str, technique: str) -> bool:
        """The code is for this technique on this zone ("any" fits face and body)."""
        return self.technique == technique and self.zone in (zone, "any")

    def covers(self, zone: Zone, technique: Technique, count: int) -> bool:
        return self.fits(zone, technique) and self.lesions_min <= count <= self.lesions_max


class TariffRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_eur: Decimal = Field(ge=0)
    max_eur: Decimal = Field(ge=0)
    source: str = Field(min_length=3)

    def text(self) -> str:
        return f"{self.min_eur}-{self.max_eur} EUR per act ({self.source})"


class AssociationCode(BaseModel):
    """One association code (1 = 100 %, ...): its rate, and whether Givre may propose it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: int = Field(ge=1, le=9)
    rate: Decimal = Field(gt=0, le=1)
    meaning: str = Field(min_length=3)
    proposed: bool  # False: accepted when the clinician chooses it, never proposed
    unverified: str = ""
    source: str = Field(min_length=3)


class AssociationPair(BaseModel):
    """Whether acts on these two zones may be billed together, as far as it is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: tuple[Literal["face", "body", "any"], Literal["face", "body", "any"]]
    allowed: Literal["yes", "no", "unverified"]
    note: str = Field(min_length=3)
    source: str = Field(min_length=3)


class AssociationRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_acts: int = Field(ge=1)
    source: str = Field(min_length=3)
    unlisted_pairs: str = Field(min_length=3)
    code: tuple[AssociationCode, ...] = Field(min_length=1)
    pair: tuple[AssociationPair, ...] = ()

    def rate(self, association_code: int | None) -> Decimal:
        """A single act (None) is at code 1's rate."""
        wanted = association_code or 1
        return next(c.rate for c in self.code if c.code == wanted)

    def pair_of(self, first: str, second: str) -> AssociationPair | None:
        return next((p for p in self.pair if set(p.zones) == {first, second}), None)


class CcamTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    tariff_range: dict[Technique, TariffRange] = Field(default_factory=dict)
    association: AssociationRule | None = None  # None in a clinic table: the shipped rule applies (load_table)
    code: tuple[CcamCode, ...] = Field(min_length=1)

    @property
    def rule(self) -> AssociationRule:
        assert self.association is not None, "load_table always sets the association rule"
        return self.association

    @model_validator(mode="after")
    def _one_code_per_band(self) -> CcamTable:
        seen: set[str] = set()
        for c in self.code:
            if c.code in seen:
                raise ValueError(f"{c.code} appears twice")
            seen.add(c.code)
        for a in self.code:
            for b in self.code:
                if a.code < b.code and a.technique == b.technique and (a.zone == b.zone or "any" in (a.zone, b.zone)) \
                        and a.lesions_min <= b.lesions_max and b.lesions_min <= a.lesions_max:
                    raise ValueError(f"{a.code} and {b.code} both cover {b.technique} bands that overlap; one code per count")
        return self

    def get(self, code: str) -> CcamCode:
        for c in self.code:
            if c.code == code:
                return c
        raise BillingError(f"{code!r}: not a code in the billing table ({self.version}); allowed: {', '.join(c.code for c in self.code)}")


def load_table(path: Path | None = None) -> CcamTable:
    """The shipped table, or the clinic's newer one (config `billing_table`); a clinic table without
    its own [association] takes the shipped rule (the convention's, not a tariff)."""
    with resources.as_file(resources.files("controller.practice").joinpath("ccam.toml")) as shipped:
        table = read_toml(shipped, CcamTable, BillingError)
    if path is None:
        return table
    clinic = read_toml(path, CcamTable, BillingError)
    return clinic if clinic.association is not None else clinic.model_copy(update={"association": table.association})


@dataclass(frozen=True, slots=True)
class Act:
    """One treated lesion, as billing sees it."""

    zone: Zone
    technique: Technique
    reimbursable: bool  # False for an aesthetic act: no 'remboursement demandé'
    lesion_id: str = ""


def acts_of(session: SessionView) -> list[Act]:
    """What billing counts of a recorded session: its lesions whose protocol completed."""
    return [Act(Zone(lesion.zone), cast(Technique, lesion.technique), lesion.reimbursable, lesion.lesion_id)
            for lesion in session.lesions if lesion.completed]


@dataclass(frozen=True, slots=True)
class ProposedAct:
    code: str
    label: str
    verified: bool  # label and tariff both read from a published source
    lesions: int
    tariff_eur: Decimal | None
    association_code: int | None  # 1 = 100 %, 2 = 50 %; None for a single act
    rate: Decimal
    amount_eur: Decimal | None
    lesion_ids: tuple[str, ...] = ()

    def line(self) -> str:
        assoc = f" (assoc. {self.association_code})" if self.association_code else ""
        amount = f"{self.amount_eur} EUR" if self.amount_eur is not None else "tariff unknown"
        return f"{self.code}{assoc} {amount}{'' if self.verified else ' (unverified)'}"


@dataclass(frozen=True, slots=True)
class Proposal:
    acts: tuple[ProposedAct, ...]
    not_billed: tuple[str, ...]  # groups beyond the two-act rule, or without a code
    aesthetic_lesions: int  # not reimbursable: no 'remboursement demandé'
    warnings: tuple[str, ...]
    table_version: str = ""

    @property
    def total_eur(self) -> Decimal | None:
        """The sum, or None when any act's tariff is unknown (never a partial sum shown as a total)."""
        if any(a.amount_eur is None for a in self.acts):
            return None
        return sum((a.amount_eur for a in self.acts if a.amount_eur is not None), Decimal("0"))

    def line(self) -> str:
        if not self.acts:
            aesthetic = f" ({self.aesthetic_lesions} aesthetic lesion(s), not reimbursable)" if self.aesthetic_lesions else ""
            return "no reimbursable act" + aesthetic
        aesthetic = f"; {self.aesthetic_lesions} aesthetic lesion(s) not reimbursable" if self.aesthetic_lesions else ""
        return "; ".join(a.line() for a in self.acts) + aesthetic

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = _plain(asdict(self))
        return record | {"total_eur": _plain(self.total_eur)}


def _plain(value: Any) -> Any:
    """Decimals as strings and tuples as lists: what the record and JSON hold."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def propose(acts: Iterable[Act], table: CcamTable) -> Proposal:
    acts = list(acts)
    groups: Counter[tuple[Zone, Technique]] = Counter((a.zone, a.technique) for a in acts if a.reimbursable)
    aesthetic = sum(1 for a in acts if not a.reimbursable)
    found: list[tuple[CcamCode, int, tuple[str, ...]]] = []
    not_billed: list[str] = []
    warnings: list[str] = []
    for (zone, technique), count in sorted(groups.items()):
        lesion_ids = tuple(a.lesion_id for a in acts if a.reimbursable and (a.zone, a.technique) == (zone, technique))
        match = next((c for c in table.code if c.covers(zone, technique, count)), None)
        if match is None:
            not_billed.append(f"{count} {technique} lesion(s), {zone}: no code in the table")
        else:
            found.append((match, count, lesion_ids))
    rule = table.rule
    if any(c.tariff_eur is None for c, _, _ in found) and len(found) > 1:
        warnings.append("a tariff is unknown: the order of association (100 % / 50 %) must be confirmed by the clinician")
    found.sort(key=lambda item: item[0].tariff_eur if item[0].tariff_eur is not None else Decimal(-1), reverse=True)
    proposed = []
    for rank, (code, count, lesion_ids) in enumerate(found):
        if rank >= rule.max_acts:
            not_billed.append(f"{code.code}: at most {rule.max_acts} acts per session (association rule)")
            continue
        association = rank + 1 if len(found) > 1 else None
        rate = rule.rate(association)
        if rank == 1:
            warnings.extend(_pair_warning(found[0][0], code, rule))
        if not code.verified:
            warnings.append(f"{code.code}: {code.text}")
        if code.tariff_eur is None:
            known = table.tariff_range.get(code.technique)
            warnings.append(f"{code.code}: tariff unknown" + (f"; the sheet's range is {known.text()}" if known else ""))
        proposed.append(ProposedAct(code.code, code.text, code.fully_verified, count, code.tariff_eur, association, rate,
                                    code.amount(rate), lesion_ids))
    return Proposal(tuple(proposed), tuple(not_billed), aesthetic, tuple(warnings), table.version)


def _pair_warning(first: CcamCode, second: CcamCode, rule: AssociationRule) -> list[str]:
    """What the table says of billing these two acts together, when it is not a plain yes."""
    if first.zone == second.zone:
        return []
    pair = rule.pair_of(first.zone, second.zone)
    if pair is None:
        return [f"{first.code} with {second.code}: {rule.unlisted_pairs}"]
    return [] if pair.allowed == "yes" else [f"{first.code} with {second.code}: {pair.allowed}: {pair.note}"]


@dataclass(frozen=True, slots=True)
class ChosenAct:
    code: str
    association_code: int | None


def parse_choice(items: Iterable[str], table: CcamTable) -> list[ChosenAct]:
    """The clinician's acts as 'CODE' or 'CODE:ASSOCIATION' (e.g. QZNP012:1 QANP007:2); none bills nothing."""
    rule = table.rule
    allowed = {c.code: c for c in rule.code}
    chosen: list[ChosenAct] = []
    for item in items:
        code, _, assoc = item.strip().upper().partition(":")
        table.get(code)
        if assoc and (not assoc.isdigit() or int(assoc) not in allowed):
            codes = ", ".join(f"{c.code} ({float(c.rate) * 100:g} %)" for c in rule.code)
            raise BillingError(f"{item!r}: association code must be one of {codes}")
        chosen.append(ChosenAct(code, int(assoc) if assoc else None))
    if len(chosen) > rule.max_acts:
        raise BillingError(f"{len(chosen)} acts: at most {rule.max_acts} acts per session (association rule)")
    associations = [c.association_code for c in chosen]
    if len(chosen) > 1 and (None in associations or len(set(associations)) < len(associations)):
        raise BillingError("two acts need different association codes, e.g. QZNP012:1 QANP007:2")
    return chosen


def confirm(  # noqa: PLR0913 - each is a fact of the record; bundling them would only move the list to both callers (cli, tui)
        store: RecordStore, session_id: str, proposal: Proposal, chosen: list[ChosenAct] | None, table: CcamTable, *, by: str,
) -> dict[str, Any]:
    """Record the clinician's billing for a session: the proposal as it stood and what was chosen
    (None: the proposal as it is). Returns the recorded payload."""
    if chosen is None:
        chosen = [ChosenAct(a.code, a.association_code) for a in proposal.acts]
    acts = []
    for c in chosen:
        entry = table.get(c.code)
        rate = table.rule.rate(c.association_code)
        amount = entry.amount(rate)
        acts.append({"code": c.code, "association_code": c.association_code, "rate": str(rate), "label": entry.text,
                     "verified": entry.fully_verified, "tariff_eur": _plain(entry.tariff_eur), "amount_eur": _plain(amount)})
    changed = [(a["code"], a["association_code"]) for a in acts] != [(a.code, a.association_code) for a in proposal.acts]
    payload = {"proposed": proposal.as_record(), "chosen": acts, "changed": changed, "by": by,
               "reimbursement_requested": bool(acts), "aesthetic_lesions": proposal.aesthetic_lesions}
    store.append("billing_confirmed", payload, session_id)
    return payload
