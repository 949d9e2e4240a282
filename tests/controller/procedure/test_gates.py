"""The start gate on plain values: every reason at once, the alarms it calls for, the dose."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from controller.config import Config
from controller.procedure.dose import BelowMinimumOverride
from controller.procedure.gates import Readiness, StartRequest, device_readiness, start_gate
from firmware_bridge.link import DeviceIdentity
from firmware_bridge.messages import CalData, Capability, Cryogen, DeviceKind, DeviceState, Fault, Telemetry, TriggerMode
from firmware_bridge.units import day_number
from profiles.library import load_builtins

LIBRARY = load_builtins()
TODAY = date(2026, 11, 26)
SPRAY = DeviceIdentity("/dev/pts/9", DeviceKind.SPRAY, Cryogen.N2O, "1.0.0", "SN-1", "1.1", 3, 60_000, 250,
                       Capability.PRESSURE_SENSOR | Capability.TIP_THERMOCOUPLE, 0, 77, 1)
IN_DATE = CalData(0, 900, 0, 0, 0, 0, 20, 20, day_number(TODAY) - 30, day_number(TODAY) + 300)


def telemetry(fault_flags: int = 0) -> Telemetry:
    return Telemetry(1000, 3, DeviceState.READY, 0, 0, 0, 0, 0, 300, 2100, 0x7FFF, fault_flags)


def request(profile_id: str = "common-wart", **changes: Any) -> StartRequest:
    base = StartRequest(LIBRARY.get(profile_id).profile, 1, SPRAY, Readiness(()), IN_DATE, TriggerMode.HOST, None, None, False,
                        Config(), TODAY)
    return dataclasses.replace(base, **changes)


def test_a_fitting_profile_on_a_ready_in_date_device_starts_with_its_dose() -> None:
    verdict = start_gate(request())
    assert verdict.allowed and verdict.reasons == [] and verdict.dose is not None and verdict.dose.effective_ms == 10_000


def test_every_reason_comes_at_once() -> None:
    verdict = start_gate(request("superficial-bcc", cycles=3, readiness=device_readiness(None, None), calibration=None,
                                 trigger=TriggerMode.TRIGGER_START, high_alarm_unacknowledged=True,
                                 config=Config(calibration_overdue="block")))
    text = "\n".join(verdict.reasons)
    for expected in ("runs on probe, not on a spray device", "--cycles 3", "needs LN2", "tissue thermocouple",
                     "counts from the", "no hand trigger or foot switch", "STALE", "never been calibrated (config: block)",
                     "a HIGH alarm is not acknowledged"):
        assert expected in text
    assert not verdict.allowed and ("calibration_overdue", "the device has never been calibrated") in verdict.alarms


def test_an_overdue_calibration_warns_unless_the_config_blocks() -> None:
    overdue = dataclasses.replace(IN_DATE, due_on_day=day_number(TODAY) - 1)
    verdict = start_gate(request(calibration=overdue))
    assert verdict.allowed and verdict.warnings == ["the device was due for calibration on 2026-11-25"]


@pytest.mark.parametrize(("flags", "age_s", "reason", "alarms"), [
    (0, 0.1, None, ()),
    (0, 1.5, "STALE", ()),
    (int(Fault.NO_FLOW), 0.1, "latched fault (NO_FLOW)", ("no_flow",)),
    (int(Fault.WATCHDOG_TRIP), 0.1, "latched fault (WATCHDOG_TRIP)", ()),  # a trip is the host's silence: its own path
    (int(Fault.CARTRIDGE_EMPTY), 0.1, "cartridge empty", ()),
])
def test_device_readiness(flags: int, age_s: float, reason: str | None, alarms: tuple[str, ...]) -> None:
    readiness = device_readiness(telemetry(flags), age_s)
    assert (reason is None) == (readiness.reasons == ()) and readiness.alarms == alarms
    assert reason is None or reason in readiness.reasons[0]


def test_manual_mode_needs_no_device_readiness_and_no_calibration() -> None:
    verdict = start_gate(request("common-wart", identity=None, calibration=None, readiness=device_readiness(None, None)))
    assert verdict.allowed and verdict.alarms == [] and verdict.warnings == []
    refused = start_gate(request("superficial-bcc", identity=None))
    assert refused.reasons == ["profile superficial-bcc runs on probe, not on a manual device"]


def test_a_dose_below_the_minimum_is_a_reason_unless_overridden() -> None:
    capped = dataclasses.replace(SPRAY, max_freeze_ms=8000)
    assert any("below profile common-wart's minimum of 10 s" in r for r in start_gate(request(identity=capped)).reasons)
    verdict = start_gate(request(identity=capped, below_minimum=BelowMinimumOverride("dr-a", "only device")))
    assert verdict.allowed
    assert verdict.warnings == ["8 s per cycle is below the profile's minimum of 10 s: overridden by dr-a (only device)"]
