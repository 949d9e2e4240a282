"""controller/procedure/plausibility.py on plain numbers: the issue's item-4 cases come out
implausible, the normal ones plausible, and the ledger never takes more than the FREEZE, the cap
and the host's clock allow."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.procedure.plausibility import (
    CLOCK_TOLERANCE_PPM,
    TIMER_RESOLUTION_MS,
    Channel,
    FreezeAsked,
    FreezeReported,
    Reading,
    channel_bounds,
    check_freeze_duration,
    check_target_reached,
    check_temperature,
    check_tip_cooling,
    host_bound_ms,
)
from firmware_bridge.messages import Cryogen, EndReason, FreezeMode

LN2, N2O = Cryogen.LN2, Cryogen.N2O
TIMED, HALO = FreezeMode.TIMED, FreezeMode.HALO
E = EndReason

# ---- temperatures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TempCase:
    name: str
    channel: Channel
    value_c: float
    at_s: float
    previous: Reading | None
    cryogen: Cryogen | None
    plausible: bool
    says: str = ""  # a fragment the reason must contain


TEMPERATURE_CASES = [
    # item 4: a probe reporting -327.67 C tissue (raw -32767 cdeg), the first reading of the freeze
    TempCase("tissue -327.67 C", Channel.TISSUE, -327.67, 0.003, Reading(37.0, 0.0), LN2, False,
             "tissue reads -327.67 C, below absolute zero"),
    TempCase("tissue -327.67 C, no previous", Channel.TISSUE, -327.67, 0.003, None, None, False, "below absolute zero"),
    TempCase("tip colder than LN2", Channel.TIP, -210.0, 10.0, None, LN2, False, "tip reads -210 C, below -201 C (LN2 boils at -196 C"),
    TempCase("tip colder than N2O", Channel.TIP, -120.0, 10.0, None, N2O, False, "below -94 C (N2O boils at -89 C"),
    TempCase("tissue colder than N2O", Channel.TISSUE, -100.0, 30.0, None, N2O, False, "tissue reads -100 C, below -94 C"),
    TempCase("tip too hot", Channel.TIP, 75.0, 1.0, None, LN2, False, "tip reads 75 C, above 60 C"),
    # rate of change: a plausible value reached impossibly fast
    TempCase("tip 37 -> -196 C in 20 ms", Channel.TIP, -196.0, 0.02, Reading(37.0, 0.0), LN2, False,
             "tip went from 37 C to -196 C in 0.02 s"),
    TempCase("tissue 37 -> -78.4 C in 20 ms", Channel.TISSUE, -78.4, 0.02, Reading(37.0, 0.0), LN2, False, "at most 10 C/s"),
    TempCase("tissue jumps 2 C in no time", Channel.TISSUE, 35.0, 5.0, Reading(37.0, 5.0), LN2, False, "in 0 s"),
    # normal readings
    TempCase("tip at LN2", Channel.TIP, -196.0, 30.0, Reading(-195.8, 29.98), LN2, True),
    TempCase("tip at N2O", Channel.TIP, -89.0, 30.0, Reading(-88.9, 29.98), N2O, True),
    TempCase("tip cooling at 150 C/s", Channel.TIP, 34.0, 0.02, Reading(37.0, 0.0), LN2, True),
    TempCase("tissue cooling at 7.7 C/s", Channel.TISSUE, 36.8, 0.02, Reading(37.0, 0.0), LN2, True),
    TempCase("tissue noise, readings bunched", Channel.TISSUE, -20.3, 5.0, Reading(-20.0, 5.0), LN2, True),
    TempCase("tissue -50 C after 20 s", Channel.TISSUE, -50.0, 20.0, Reading(-49.9, 19.98), LN2, True),
    TempCase("unknown cryogen: bounded by LN2", Channel.TISSUE, -150.0, 60.0, None, None, True),
    TempCase("a fever", Channel.TISSUE, 41.5, 1.0, None, LN2, True),
]


@pytest.mark.parametrize("case", TEMPERATURE_CASES, ids=lambda c: c.name)
def test_temperature(case: TempCase) -> None:
    verdict = check_temperature(case.channel, case.value_c, case.at_s, case.previous, case.cryogen)
    assert verdict.plausible is case.plausible, verdict.reason
    assert case.says in verdict.reason
    assert ("\n" not in verdict.reason) and (bool(verdict.reason) is not case.plausible)
    if not case.plausible:
        assert case.channel.value in verdict.reason and f"{case.value_c:g}" in verdict.reason


@dataclass(frozen=True)
class TargetCase:
    name: str
    value_c: float
    at_s: float
    start: Reading
    plausible: bool
    says: str = ""


TARGET_CASES = [
    # item 4: "target reached" 3 ms into the freeze by a probe reading -327.67 C
    TargetCase("-327.67 C at 3 ms", -327.67, 0.003, Reading(37.0, 0.0), False, "tissue target -50 C not believed: tissue reads -327.67 C"),
    # the same with a plausible figure: a tissue cannot fall 87 C in 3 ms
    TargetCase("-50 C at 3 ms", -50.0, 0.003, Reading(37.0, 0.0), False, "reached 0.003 s into the freeze, from 37 C to -50 C"),
    TargetCase("-78.4 C at 20 ms", -78.4, 0.02, Reading(37.0, 0.0), False, "so at least 11.4 s"),
    TargetCase("-50 C after 5 s", -50.0, 5.0, Reading(37.0, 0.0), False, "at most 10 C/s"),
    TargetCase("-50 C after 20 s", -50.0, 20.0, Reading(37.0, 0.0), True),
    TargetCase("-50 C after 9 s from 37 C", -50.0, 9.0, Reading(37.0, 0.0), True),
    TargetCase("-60 C after 40 s, start read before the valve opened", -60.0, 41.0, Reading(36.5, 0.9), True),
]


@pytest.mark.parametrize("case", TARGET_CASES, ids=lambda c: c.name)
def test_tissue_target_reached(case: TargetCase) -> None:
    verdict = check_target_reached(case.value_c, case.at_s, case.start, -50.0, LN2)
    assert verdict.plausible is case.plausible, verdict.reason
    assert case.says in verdict.reason


@pytest.mark.parametrize(
    ("tip_c", "elapsed_ms", "plausible"),
    [(20.0, 6000, False), (0.5, 5000, False), (-30.0, 6000, True), (20.0, 2000, True), (-85.0, 30_000, True)],
)
def test_tip_cooling(tip_c: float, elapsed_ms: int, plausible: bool) -> None:
    verdict = check_tip_cooling(tip_c, elapsed_ms)
    assert verdict.plausible is plausible
    assert not plausible or not verdict.reason
    if not plausible:
        assert f"tip still at {tip_c:g} C" in verdict.reason


def test_bounds_come_from_the_cryogen() -> None:
    assert channel_bounds(Channel.TIP, LN2).floor_c == -201.0
    assert channel_bounds(Channel.TISSUE, N2O).floor_c == -94.0
    assert channel_bounds(Channel.TIP, None) == channel_bounds(Channel.TIP, LN2)  # unknown: the coldest cryogen
    assert channel_bounds(Channel.TISSUE, LN2).max_rate_c_per_s < channel_bounds(Channel.TIP, LN2).max_rate_c_per_s


# ---- durations -----------------------------------------------------------------------------------

HUGE = 4_294_967_294  # item 4: the figure a lying device reported


@dataclass(frozen=True)
class DurationCase:
    name: str
    asked: FreezeAsked
    reported: FreezeReported
    cap_ms: int | None
    host_ms: float | None
    plausible: bool
    ledger_ms: int
    says: str = ""


DURATION_CASES = [
    # normal freezes: believed, the ledger takes the device's figure
    DurationCase("10 s timed, 10 003 ms, host 10 040 ms", FreezeAsked(TIMED, 10_000), FreezeReported(10_003, E.COMPLETED),
                 60_000, 10_040, True, 10_003),
    DurationCase("STOP at 2.8 s", FreezeAsked(TIMED, 10_000), FreezeReported(2_800, E.STOPPED), 60_000, 2_850, True, 2_800),
    DurationCase("STOP before the trigger opened the valve", FreezeAsked(TIMED, 10_000), FreezeReported(0, E.STOPPED),
                 60_000, 400, True, 0),
    DurationCase("halo freeze capped", FreezeAsked(HALO, 30_000, end_in_ms=20_000), FreezeReported(30_000, E.CAP, 15_000),
                 60_000, 30_120, True, 30_000),
    DurationCase("halo freeze completed", FreezeAsked(HALO, 60_000, end_in_ms=10_000), FreezeReported(14_000, E.COMPLETED, 10_001),
                 60_000, 14_090, True, 14_000),
    DurationCase("halo freeze never marked, capped", FreezeAsked(HALO, 30_000), FreezeReported(30_000, E.CAP), 60_000, 30_100,
                 True, 30_000),
    DurationCase("watchdog ends it early", FreezeAsked(TIMED, 20_000), FreezeReported(4_321, E.WATCHDOG), 60_000, 4_800, True, 4_321),
    DurationCase("device clock 0.4 % fast", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.COMPLETED), 60_000, 9_960, True, 10_000),
    DurationCase("device cap 8 s below the profile's minimum: the figure is fine", FreezeAsked(TIMED, 8_000),
                 FreezeReported(8_000, E.COMPLETED), 8_000, 8_050, True, 8_000),
    DurationCase("reconciled, no host time", FreezeAsked(TIMED, 10_000), FreezeReported(10_001, E.COMPLETED), 60_000, None, True, 10_001),
    # item 4: 4 294 967 294 ms for a freeze; the ledger takes what the FREEZE allows
    DurationCase("4 294 967 294 ms", FreezeAsked(TIMED, 10_000), FreezeReported(HUGE, E.COMPLETED), 350_000, 10_040, False, 10_010,
                 f"valve open {HUGE} ms, more than the FREEZE asked"),
    DurationCase("4 294 967 294 ms, the cap alone bounds it", FreezeAsked(HALO, 60_000), FreezeReported(HUGE, E.STOPPED), 45_000, None,
                 False, 45_010, "more than the device's own cap"),
    # item 4: a 0 ms COMPLETED freeze; the valve was open for up to the whole freeze: charged that
    DurationCase("0 ms COMPLETED", FreezeAsked(TIMED, 10_000), FreezeReported(0, E.COMPLETED), 60_000, 10_040, False, 10_010,
                 "end reason COMPLETED at 0 ms"),
    DurationCase("0 ms CAP", FreezeAsked(HALO, 30_000), FreezeReported(0, E.CAP), 60_000, 30_050, False, 30_010, "end reason CAP at 0 ms"),
    DurationCase("0 ms COMPLETED halo", FreezeAsked(HALO, 30_000, end_in_ms=0), FreezeReported(0, E.COMPLETED, 0), 60_000, 900,
                 False, int(900 * 1.01) + TIMER_RESOLUTION_MS, "end reason COMPLETED at 0 ms"),
    # other lies
    DurationCase("COMPLETED short of its duration", FreezeAsked(TIMED, 10_000), FreezeReported(5_000, E.COMPLETED), 60_000, 10_040,
                 False, 10_010, "short of the 10000 ms asked"),
    DurationCase("longer than the host's clock allows", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.COMPLETED), 60_000, 5_000,
                 False, 5_060, "more than what the host's clock allows (5000 ms"),
    DurationCase("above the device's cap", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.COMPLETED), 8_000, 10_040, False, 8_010,
                 "more than the device's own cap (HELLO_ACK max_freeze_ms, §6.1): 8010 ms"),
    DurationCase("not available", FreezeAsked(TIMED, 10_000), FreezeReported(0xFFFF_FFFF, E.STOPPED), 60_000, 3_000, False, 3_040,
                 "'not available'"),
    DurationCase("end reason NONE", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.NONE), 60_000, 10_040, False, 10_010,
                 "end reason NONE"),
    DurationCase("CAP ends a timed freeze", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.CAP), 60_000, 10_040, False, 10_010,
                 "end reason CAP for a TIMED freeze"),
    DurationCase("halo COMPLETED with no halo mark", FreezeAsked(HALO, 30_000), FreezeReported(12_000, E.COMPLETED), 60_000, 12_100,
                 False, 12_231, "no halo mark"),
    DurationCase("halo figure for a timed freeze", FreezeAsked(TIMED, 10_000), FreezeReported(10_000, E.COMPLETED, 4_000), 60_000,
                 10_040, False, 10_010, "for a TIMED freeze"),
    DurationCase("halo longer than the valve was open", FreezeAsked(HALO, 30_000, end_in_ms=20_000),
                 FreezeReported(5_000, E.STOPPED, 9_000), 60_000, 5_100, False, 5_161, "longer than the valve was open"),
    DurationCase("halo longer than END_IN asked", FreezeAsked(HALO, 60_000, end_in_ms=10_000), FreezeReported(25_000, E.STOPPED, 20_000),
                 60_000, 25_100, False, 25_361, "more than the END_IN asked (10000 ms)"),
    DurationCase("halo COMPLETED short of END_IN", FreezeAsked(HALO, 60_000, end_in_ms=10_000), FreezeReported(8_000, E.COMPLETED, 3_000),
                 60_000, 8_100, False, 8_191, "short of the END_IN asked"),
]


@pytest.mark.parametrize("case", DURATION_CASES, ids=lambda c: c.name)
def test_freeze_duration(case: DurationCase) -> None:
    verdict = check_freeze_duration(case.asked, case.reported, case.cap_ms, case.host_ms)
    assert verdict.plausible is case.plausible, verdict.reason
    assert verdict.ledger_ms == case.ledger_ms
    assert case.says in verdict.reason
    assert bool(verdict.reasons) is not case.plausible
    # The ledger never takes more than the FREEZE, the cap and the host's clock allow.
    assert verdict.ledger_ms <= verdict.max_possible_ms <= case.asked.requested_ms + TIMER_RESOLUTION_MS
    if case.cap_ms is not None:
        assert verdict.ledger_ms <= case.cap_ms + TIMER_RESOLUTION_MS
    if case.host_ms is not None:
        assert verdict.ledger_ms <= host_bound_ms(case.host_ms)


def test_every_broken_bound_is_a_reason() -> None:
    verdict = check_freeze_duration(FreezeAsked(TIMED, 10_000), FreezeReported(HUGE, E.COMPLETED), 60_000, 10_040)
    assert len(verdict.reasons) == 3  # the FREEZE, the cap, the host's clock
    assert verdict.reason == "; ".join(verdict.reasons)


def test_host_elapsed_is_only_an_upper_bound() -> None:
    """The link's latency only lengthens the host's interval: a long one never makes a short freeze implausible."""
    verdict = check_freeze_duration(FreezeAsked(TIMED, 10_000), FreezeReported(2_800, E.STOPPED), 60_000, 95_000)
    assert verdict.plausible
    assert host_bound_ms(10_000) == 10_000 + 10_000 * CLOCK_TOLERANCE_PPM // 1_000_000 + TIMER_RESOLUTION_MS
    assert host_bound_ms(-5) == TIMER_RESOLUTION_MS
