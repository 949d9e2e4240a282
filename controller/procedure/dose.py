"""The dose-limit chain: each limit keeps its reason, the most limiting wins, the record says which."""

from __future__ import annotations

from dataclasses import dataclass

from controller.errors import GivreError
from profiles.schema import HARD_MAX_FREEZE_S, Profile


class DoseRefused(GivreError):
    pass


@dataclass(frozen=True, slots=True)
class BelowMinimumOverride:
    """The clinician's explicit choice to deliver less than the profile's minimum (recorded with the dose)."""

    by: str  # pseudonymous id of the clinician
    why: str


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # requested | profile | clinic | hard | device
    ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class DoseDecision:
    requested_ms: int
    effective_ms: int
    limited_by: str
    chain: tuple[Limit, ...]
    minimum_ms: int  # the profile's minimum per cycle
    override: BelowMinimumOverride | None = None  # set only when the effective dose is below the minimum

    @property
    def below_minimum(self) -> bool:
        return self.effective_ms < self.minimum_ms

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "requested_ms": self.requested_ms,
            "effective_ms": self.effective_ms,
            "limited_by": self.limited_by,
            "chain": [{"limit": limit.name, "ms": limit.ms, "reason": limit.reason} for limit in self.chain],
        }
        if self.override is not None:
            record["below_minimum"] = {"minimum_ms": self.minimum_ms, "by": self.override.by, "why": self.override.why}
        return record


def decide(profile: Profile, requested_s: float | None, clinic_max_s: float | None, device_cap_ms: int | None,
           override: BelowMinimumOverride | None = None) -> DoseDecision:
    """The dose a lesion may get: refused when the limits leave less than the profile's minimum,
    unless the clinician overrides it explicitly (who and why go into the record)."""
    dose = limit_chain(profile, requested_s, clinic_max_s, device_cap_ms)
    if not dose.below_minimum:
        return dose
    winner = next(limit for limit in dose.chain if limit.name == dose.limited_by)
    if override is None:
        raise DoseRefused(
            f"the limits leave {dose.effective_ms / 1000:g} s per cycle ({winner.reason}), below profile {profile.id}'s minimum "
            f"of {dose.minimum_ms / 1000:g} s",
            "choose another profile or device, or override it explicitly with who and why (givre run --below-minimum-why TEXT)",
        )
    return DoseDecision(dose.requested_ms, dose.effective_ms, dose.limited_by, dose.chain, dose.minimum_ms, override)


def limit_chain(profile: Profile, requested_s: float | None, clinic_max_s: float | None, device_cap_ms: int | None) -> DoseDecision:
    """Per-cycle freeze time after every limit, in ms (pure: what a screen shows before arming); refuses
    only a request below the profile's minimum. Whether the result may start is decide()'s question."""
    f = profile.freeze_s
    requested_ms = round((f.default if requested_s is None else requested_s) * 1000)
    if requested_ms < round(f.min * 1000):
        raise DoseRefused(
            f"{requested_ms / 1000:g} s is below profile {profile.id}'s minimum of {f.min:g} s (allowed {f.min:g}-{f.max:g} s)"
        )
    chain = [
        Limit("requested", requested_ms, "the profile's default" if requested_s is None else "asked for this lesion"),
        Limit("profile", round(f.max * 1000), f"profile {profile.id} maximum ({f.source})"),
    ]
    if clinic_max_s is not None:
        chain.append(Limit("clinic", round(clinic_max_s * 1000), "clinic maximum (config)"))
    chain.append(Limit("hard", round(HARD_MAX_FREEZE_S * 1000), "Givre's hard maximum per cycle"))
    if device_cap_ms is not None:
        chain.append(Limit("device", device_cap_ms, "the device's own cap (handshake)"))
    winner = min(chain, key=lambda limit: limit.ms)  # first of equals: a request within limits is 'requested'
    return DoseDecision(requested_ms, winner.ms, winner.name, tuple(chain), round(f.min * 1000))
