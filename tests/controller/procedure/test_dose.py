"""The minimum-dose rule on plain numbers: a limit chain that ends below the profile's minimum
refuses to start unless the clinician overrides it, and the record keeps who and why."""

from __future__ import annotations

import pytest

from controller.procedure.dose import BelowMinimumOverride, DoseRefused, decide, limit_chain
from profiles.library import load_builtins

LIBRARY = load_builtins()
WART = LIBRARY.get("common-wart").profile  # 10 s, practice sheet
PLANTAR = LIBRARY.get("plantar-wart").profile  # 20-30 s


Limits = tuple[float | None, float | None, int]  # requested s, clinic maximum s, device cap ms


@pytest.mark.parametrize(("profile_id", "limits", "expected"), [
    ("common-wart", (None, None, 60_000), (10_000, "requested")),
    ("plantar-wart", (30, 25, 60_000), (25_000, "clinic")),
    ("plantar-wart", (30, None, 22_000), (22_000, "device")),
])
def test_within_the_limits_the_dose_starts(profile_id: str, limits: Limits, expected: tuple[int, str]) -> None:
    dose = decide(LIBRARY.get(profile_id).profile, *limits)
    assert (dose.effective_ms, dose.limited_by, dose.below_minimum, dose.override) == (*expected, False, None)
    assert "below_minimum" not in dose.as_record()


@pytest.mark.parametrize(("profile_id", "clinic_max_s", "device_cap_ms", "why"), [
    ("common-wart", None, 8000, "the device's own cap (handshake)"),  # the case: 8 s cap, 10 s minimum
    ("plantar-wart", 15, 60_000, "clinic maximum (config)"),
])
def test_limits_below_the_minimum_refuse_with_the_reason_and_the_way_out(profile_id: str, clinic_max_s: float | None,
                                                                         device_cap_ms: int, why: str) -> None:
    with pytest.raises(DoseRefused) as info:
        decide(LIBRARY.get(profile_id).profile, None, clinic_max_s, device_cap_ms)
    assert why in info.value.problem and f"below profile {profile_id}'s minimum" in info.value.problem
    assert "choose another profile or device, or override it explicitly with who and why" in info.value.action


def test_an_override_lets_it_start_and_is_recorded_with_the_minimum() -> None:
    override = BelowMinimumOverride(by="dr-a", why="only device at hand")
    dose = decide(WART, None, None, 8000, override)
    assert (dose.effective_ms, dose.below_minimum) == (8000, True)
    assert dose.as_record()["below_minimum"] == {"minimum_ms": 10_000, "by": "dr-a", "why": "only device at hand"}


def test_an_override_is_not_recorded_when_nothing_is_below_the_minimum() -> None:
    dose = decide(WART, None, None, 60_000, BelowMinimumOverride(by="dr-a", why="habit"))
    assert dose.override is None and "below_minimum" not in dose.as_record()


def test_the_screen_sees_the_chain_without_a_refusal() -> None:
    dose = limit_chain(PLANTAR, None, None, 8000)
    assert (dose.effective_ms, dose.below_minimum, dose.minimum_ms) == (8000, True, 20_000)


def test_a_request_below_the_minimum_is_refused_even_with_room_to_spare() -> None:
    with pytest.raises(DoseRefused, match="below profile common-wart's minimum of 10 s"):
        limit_chain(WART, 5, None, 60_000)
