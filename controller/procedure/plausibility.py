"""Device figures are checked before they are believed: pure functions, plain numbers in, a verdict out.

No I/O, no clock read, no link. The driver passes what it read (telemetry, a FREEZE_DONE or the
COUNTERS' last-freeze record, its own clock's readings) and acts on the verdict: a HIGH alarm, the
cycle recorded with the device's figure AND marked implausible (not complete, not billed), and the
cartridge ledger charged the bounded value this module returns.

Every bound says where it comes from: physics, docs/protocol.md (§ numbers), the device's declared
cap, or a tolerance stated and justified here. Constants marked GIVRE are Givre's own choices,
illustrative like the simulator's model (docs/simulator.md): a device maker's measured figures
(thermocouple time constant, timer tick) should replace them.

Temperatures
    ``check_temperature``     physical bounds of one channel, and its rate of change since the
                              previous reading of that channel;
    ``check_target_reached``  a tissue target "reached": the fall since the freeze started must be
                              one a tissue can make in that time (otherwise no hold may start);
    ``check_tip_cooling``     a tip in the cryogen's flow for seconds must be cold.
Durations
    ``check_freeze_duration`` a device-reported valve-open time against what was asked, the
                              device's cap, the end reason and the host's own elapsed time;
                              returns the value the cartridge ledger charges.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware_bridge.messages import Cryogen, EndReason, FreezeMode
from profiles.schema import CRYOGEN_FLOOR_C

# ---- temperatures ----------------------------------------------------------------------------

# Physics: nothing is colder than absolute zero. Named in the reason when a reading is below it.
ABSOLUTE_ZERO_C = -273.15
# Physics (profiles.schema.CRYOGEN_FLOOR_C, domain notes §1.1): a tip, and the tissue it cools,
# cannot get colder than the boiling point at 1 atm of the cryogen that cools them (N2O -89 C,
# LN2 -196 C). A device of unknown cryogen is bounded by the coldest, LN2.
# Tolerance: IEC 60584-1 tolerance class 3, the class for thermocouples below -40 C, allows
# +/-2.5 C or +/-1.5 % of the reading (+/-2.9 C at -196 C); doubled to 5 C for a calibration that
# drifts within its interval.
THERMOCOUPLE_TOLERANCE_C = 5.0
# GIVRE (carried over from the driver's PLAUSIBLE_C): no skin and no probe in a clinic is hotter;
# the highest fevers are about 42 C. A reading above it is a sensor error.
CEILING_C = 60.0
# GIVRE, rate of change. A tip cools by the cryogen's flow: the simulator's fastest slope is 155 C/s
# (LN2: 233 C over tau = 1.5 s) and its warming slope 47 C/s; 300 C/s is about twice the fastest.
# A tissue thermocouple sits under the lesion and is cooled only by conduction through tissue from
# that tip: the simulator's fastest tissue slope is 7.7 C/s (115 C over tau = 15 s); 10 C/s. At that
# rate a tissue needs at least 8.7 s to fall from 37 C to a -50 C target. The real figures come
# from the probe maker (thermocouple time constant, probe geometry).
MAX_RATE_C_PER_S = {"tip": 300.0, "tissue": 10.0}
# Two readings may differ by their noise even with no time between them (telemetry frames can
# arrive bunched): the simulator's noise is N(0, 0.1 C), so a difference has sigma 0.14 C; 1 C is
# 7 sigma, and 100 times the wire's 0.01 C resolution (§4.3 centi-degrees).
READING_NOISE_C = 1.0
# GIVRE (carried over from the driver's COOLING_EXPECTED_*): a tip in the cryogen's flow for 5 s is
# well below 0 C (the simulator's tip is within 4 % of the cryogen's temperature after 3.3 tau).
COOLING_EXPECTED_MS = 5000
COOLING_EXPECTED_C = 0.0


class Channel(enum.Enum):
    TIP = "tip"
    TISSUE = "tissue"


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of one channel. ``at_s`` is when it was measured, in seconds on one clock for
    every reading compared: the device's (TELEMETRY uptime_ms / 1000) is best, since the link's
    latency and bunching do not touch it."""

    value_c: float
    at_s: float


@dataclass(frozen=True, slots=True)
class Verdict:
    plausible: bool
    reason: str = ""  # one line naming the channel, the value and the bound; empty when plausible


PLAUSIBLE = Verdict(True)


@dataclass(frozen=True, slots=True)
class ChannelBounds:
    floor_c: float
    ceiling_c: float
    max_rate_c_per_s: float
    floor_why: str


def channel_bounds(channel: Channel, cryogen: Cryogen | None) -> ChannelBounds:
    """The physical bounds of one channel on a device of this cryogen (HELLO_ACK's; None: unknown)."""
    name = (cryogen or Cryogen.LN2).name
    boiling_c = CRYOGEN_FLOOR_C[name.lower()]
    floor_why = f"{name} boils at {boiling_c:g} C, {THERMOCOUPLE_TOLERANCE_C:g} C thermocouple tolerance"
    return ChannelBounds(boiling_c - THERMOCOUPLE_TOLERANCE_C, CEILING_C, MAX_RATE_C_PER_S[channel.value], floor_why)


def _within_bounds(channel: Channel, value_c: float, bounds: ChannelBounds) -> Verdict:
    what = f"{channel.value} reads {value_c:g} C"
    if value_c < ABSOLUTE_ZERO_C:
        return Verdict(False, f"{what}, below absolute zero ({ABSOLUTE_ZERO_C:g} C)")
    if value_c < bounds.floor_c:
        return Verdict(False, f"{what}, below {bounds.floor_c:g} C ({bounds.floor_why})")
    if value_c > bounds.ceiling_c:
        return Verdict(False, f"{what}, above {bounds.ceiling_c:g} C (no skin or probe in a clinic is that hot)")
    return PLAUSIBLE


def _change_allowed_c(bounds: ChannelBounds, dt_s: float) -> float:
    return bounds.max_rate_c_per_s * max(0.0, dt_s) + READING_NOISE_C


def check_temperature(channel: Channel, value_c: float, at_s: float, previous: Reading | None, cryogen: Cryogen | None) -> Verdict:
    """A reading of one channel: within its physical bounds, and no faster a change since the
    previous reading of that channel (None: the first) than the channel can make.

    Allowed change = max rate x (at_s - previous.at_s) + READING_NOISE_C; a reading not later than
    the previous one is allowed only the noise."""
    bounds = channel_bounds(channel, cryogen)
    verdict = _within_bounds(channel, value_c, bounds)
    if not verdict.plausible or previous is None:
        return verdict
    dt_s = at_s - previous.at_s
    change_c = abs(value_c - previous.value_c)
    if change_c <= _change_allowed_c(bounds, dt_s):
        return PLAUSIBLE
    return Verdict(False, f"{channel.value} went from {previous.value_c:g} C to {value_c:g} C in {max(0.0, dt_s):g} s; "
                          f"a {channel.value} changes at most {bounds.max_rate_c_per_s:g} C/s (+{READING_NOISE_C:g} C noise)")


def check_target_reached(value_c: float, at_s: float, freeze_start: Reading, target_c: float, cryogen: Cryogen | None) -> Verdict:
    """A tissue reading at or below its target: believable only if the tissue can have fallen that
    far since the freeze started. ``freeze_start`` is the last tissue reading at or before the valve
    opened, on the same clock as ``at_s``; an implausible verdict means no hold may start from it."""
    bounds = channel_bounds(Channel.TISSUE, cryogen)
    verdict = _within_bounds(Channel.TISSUE, value_c, bounds)
    if not verdict.plausible:
        return Verdict(False, f"tissue target {target_c:g} C not believed: {verdict.reason}")
    dt_s = at_s - freeze_start.at_s
    fall_c = freeze_start.value_c - value_c
    if fall_c <= _change_allowed_c(bounds, dt_s):
        return PLAUSIBLE
    least_s = max(0.0, fall_c - READING_NOISE_C) / bounds.max_rate_c_per_s
    return Verdict(False, f"tissue target {target_c:g} C reached {max(0.0, dt_s):g} s into the freeze, from {freeze_start.value_c:g} C "
                          f"to {value_c:g} C; a tissue cools at most {bounds.max_rate_c_per_s:g} C/s, so at least {least_s:.1f} s")


def check_tip_cooling(tip_c: float, elapsed_ms: int) -> Verdict:
    """A tip that has had the cryogen's flow for COOLING_EXPECTED_MS (TELEMETRY elapsed_ms, valve
    open) and is still above COOLING_EXPECTED_C is lying, or no cryogen comes out."""
    if elapsed_ms >= COOLING_EXPECTED_MS and tip_c > COOLING_EXPECTED_C:
        return Verdict(False, f"tip still at {tip_c:g} C after {elapsed_ms / 1000:g} s of cryogen "
                              f"(expected below {COOLING_EXPECTED_C:g} C after {COOLING_EXPECTED_MS / 1000:g} s)")
    return PLAUSIBLE


# ---- durations -------------------------------------------------------------------------------

# §6.2: valve_open_ms "may exceed duration_ms by the device's timer resolution"; a device SHOULD end
# within 1 ms. Givre tolerates up to 10 ms either way (a 100 Hz tick, the coarsest common RTOS
# tick, plus the report's rounding to the nearest ms).
TIMER_RESOLUTION_MS = 10
# §7.5: a device stores a clock correction |timer_ppm| <= 10 000 ppm and every device time runs on
# the corrected clock. A device may therefore count up to 1 % more than real time (a calibration as
# wrong as the protocol lets it store) before it is broken; a crystal is good to ~100 ppm.
CLOCK_TOLERANCE_PPM = 10_000
NOT_AVAILABLE_MS = 0xFFFF_FFFF  # §4.2: "not available" in a u32; never a valve-open time in a report
# End reasons that run a freeze to its timer: their valve-open time is what was asked.
RAN_TO_TIMER = frozenset({EndReason.COMPLETED, EndReason.CAP})


@dataclass(frozen=True, slots=True)
class FreezeAsked:
    """What the host asked. ``requested_ms`` is the FREEZE's duration_ms: TIMED, the dose; HALO, the
    whole-spray cap (§6.3). ``end_in_ms`` is END_IN's remaining_ms (HALO, once the halo is marked)."""

    mode: FreezeMode
    requested_ms: int
    end_in_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FreezeReported:
    """What the device reported: FREEZE_DONE's fields (or COUNTERS' last_* after a reconnection).
    ``halo_to_off_ms`` None where the device said "not available"."""

    valve_open_ms: int
    end_reason: EndReason
    halo_to_off_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DurationVerdict:
    plausible: bool
    reasons: tuple[str, ...]  # every bound broken, each one line; empty when plausible
    max_possible_ms: int  # the longest the valve can have been open: the FREEZE, the cap and the host's clock allow no more
    ledger_ms: int  # what the cartridge ledger charges: the device's figure if plausible, else max_possible_ms

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def host_bound_ms(host_elapsed_ms: float) -> int:
    """The most a device can measure in ``host_elapsed_ms`` of the host's clock.

    The host's elapsed time runs from (any instant before) the FREEZE's first byte was written to
    (any instant after) its FREEZE_DONE was received, or the COUNTERS that reported it. The valve
    opened after the device received that FREEZE and closed before it reported the end, so the
    freeze lies inside that interval: an UPPER bound, whatever the link's latency, retransmissions
    or repeated events. It proves no lower bound: the device may have received the FREEZE late and
    reported the end late. The device's clock may run fast by CLOCK_TOLERANCE_PPM, and its figure
    be late by TIMER_RESOLUTION_MS."""
    return int(max(0.0, host_elapsed_ms) * (1 + CLOCK_TOLERANCE_PPM / 1e6)) + TIMER_RESOLUTION_MS


def check_freeze_duration(
    asked: FreezeAsked, reported: FreezeReported, device_cap_ms: int | None, host_elapsed_ms: float | None
) -> DurationVerdict:
    """A device-reported freeze against what was asked, the device's declared cap (HELLO_ACK's
    max_freeze_ms; None: unknown), its end reason and the host's elapsed time (host_bound_ms; None:
    not measured, e.g. a host that crashed). Every broken bound is a reason; the ledger's value is
    never more than the FREEZE, the cap and the host's clock allow.

    An implausible report charges the ledger the most the valve can have been open, not the
    device's figure: a ledger that under-counts gas lets a cartridge run dry mid-freeze (a 0 ms
    COMPLETED freeze sprayed for its whole time), and one that counts more than possible puts
    impossible seconds on it (4 294 967 294 ms on a 350 s cartridge)."""
    ms, tol = reported.valve_open_ms, TIMER_RESOLUTION_MS
    limits = [("the FREEZE asked (the device's timer ends it there, §6.2)", asked.requested_ms + tol)]
    if device_cap_ms is not None:
        limits.append(("the device's own cap (HELLO_ACK max_freeze_ms, §6.1)", device_cap_ms + tol))
    if host_elapsed_ms is not None:
        limits.append((f"what the host's clock allows ({host_elapsed_ms:.0f} ms from FREEZE sent to its report, "
                       f"+{CLOCK_TOLERANCE_PPM / 1e4:g} % device clock)", host_bound_ms(host_elapsed_ms)))
    max_possible = max(0, min(limit for _, limit in limits))
    reasons: list[str] = []
    if ms == NOT_AVAILABLE_MS:
        reasons.append("valve-open time reported as 'not available' (0xFFFFFFFF) for a freeze that ended")
    else:
        reasons += [f"valve open {ms} ms, more than {why}: {limit} ms" for why, limit in limits if ms > limit]
    reasons += _end_reason_reasons(asked, reported)
    reasons += _halo_reasons(asked, reported)
    if reasons:
        return DurationVerdict(False, tuple(reasons), max_possible, max_possible)
    return DurationVerdict(True, (), max_possible, ms)


def _end_reason_reasons(asked: FreezeAsked, reported: FreezeReported) -> list[str]:
    """What the end reason says the valve-open time must be (§4.3, §6.2, §6.3)."""
    ms, end, tol = reported.valve_open_ms, reported.end_reason, TIMER_RESOLUTION_MS
    if end is EndReason.NONE:
        return ["a freeze's report with end reason NONE (a FREEZE_DONE always says how the freeze ended, §4.3)"]
    if end is EndReason.CAP and asked.mode is FreezeMode.TIMED:
        return ["end reason CAP for a TIMED freeze (only a halo freeze ends at its cap, §6.3)"]
    if end in RAN_TO_TIMER and ms == 0:
        return [f"end reason {end.name} at 0 ms (a freeze that ran to its timer had its valve open, §6.2)"]
    if ms == NOT_AVAILABLE_MS:
        return []  # already a reason
    runs_to_requested = end is EndReason.CAP or (end is EndReason.COMPLETED and asked.mode is FreezeMode.TIMED)
    if runs_to_requested and ms < asked.requested_ms - tol:
        return [f"end reason {end.name} at {ms} ms, short of the {asked.requested_ms} ms asked (it ends at its timer, §6.2)"]
    # STOPPED, WATCHDOG, TRIGGER_RELEASED, CARTRIDGE_EMPTY, FAULT, RESET, NEW_SESSION: may be short, 0 included
    # (STOP before the trigger opened the valve, §6.4); the upper bounds apply. HALO COMPLETED: _halo_reasons.
    return []


def _halo_reasons(asked: FreezeAsked, reported: FreezeReported) -> list[str]:
    """halo_to_off_ms: only in a halo freeze that was marked, within its valve-open time, and for a
    COMPLETED one, the END_IN asked (§5.5, §6.3)."""
    halo, tol = reported.halo_to_off_ms, TIMER_RESOLUTION_MS
    if asked.mode is FreezeMode.TIMED:
        return [] if halo is None else [f"halo-to-off {halo} ms reported for a TIMED freeze (it has no halo, §5.5)"]
    if halo is None:
        if reported.end_reason is EndReason.COMPLETED:
            return ["end reason COMPLETED for a halo freeze with no halo mark (it completes only at END_IN's deadline, §6.3)"]
        return []
    reasons = []
    if reported.valve_open_ms != NOT_AVAILABLE_MS and halo > reported.valve_open_ms + tol:
        reasons.append(f"halo-to-off {halo} ms, longer than the valve was open ({reported.valve_open_ms} ms)")
    if asked.end_in_ms is not None:
        if halo > asked.end_in_ms + tol:
            reasons.append(f"halo-to-off {halo} ms, more than the END_IN asked ({asked.end_in_ms} ms)")
        elif reported.end_reason is EndReason.COMPLETED and halo < asked.end_in_ms - tol:
            reasons.append(f"end reason COMPLETED with halo-to-off {halo} ms, short of the END_IN asked ({asked.end_in_ms} ms)")
    return reasons
