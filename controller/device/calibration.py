"""Technician calibration: timer, valve latency, flow rate, thermocouples.

Each step measures against the host (or the technician's scale and reference baths), decides
PASS/FAIL against its tolerance (flow has none: the weighed rate is recorded as measured) and
writes the corrected values to the device's calibration store only if it passed; `certify` then sets
the next due date and writes the certificate to the record. Bad technician input is refused before
anything is written.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from controller.errors import GivreError
from controller.records.store import RecordStore
from firmware_bridge.link import Link
from firmware_bridge.messages import CalData, CalWrite, Cryogen, EventCode
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.units import celsius, day_number

TIMER_TOLERANCE_PPM = 5000  # +-0.5 %
FREEZE_TOLERANCE_MS = 20
VALVE_LATENCY_LIMIT_MS = 100
REFERENCE_RANGE_C = (-200.0, 50.0)
REFERENCE_POINTS = 2  # a two-point fit: offset and gain
MIN_REFERENCE_SPREAD_C = 20.0  # closer baths leave the gain to the readings' noise
PLAUSIBLE_GAIN = (0.5, 1.5)  # a fitted gain outside this fails the step and is not written
MIN_DRIFT_SAMPLES = 10  # fewer telemetry frames than this cannot give a drift
DUE_AFTER_DAYS = 365  # 12 months


class CalibrationError(GivreError):
    """A step that cannot go on (bad technician input, or too little from the device to measure): nothing is written."""


@dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    passed: bool
    measurements: dict[str, Any]
    tolerance: str
    written: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _write(link: Link, **changes: int) -> CalData:
    current = link.read_calibration()
    updated = dataclasses.replace(current, **changes)
    link.write_calibration(CalWrite(*dataclasses.astuple(updated)))
    return updated


def measure_drift_ppm(link: Link, window_s: float) -> tuple[float, int]:
    """Slope of device uptime against host arrival time over the window, as the median of the slopes
    between frames at least half the window apart (Theil-Sen): a frame delayed by a busy host moves
    the median little, where it would drag a least-squares fit. Returns (drift ppm, samples)."""
    samples: list[tuple[float, int]] = []
    previous = link.on_telemetry
    link.on_telemetry = lambda item: samples.append((item.received_at, item.telemetry.uptime_ms))
    try:
        link.heartbeat_for(window_s)
    finally:
        link.on_telemetry = previous
    if len(samples) < MIN_DRIFT_SAMPLES:
        raise CalibrationError(f"{link.port}: only {len(samples)} telemetry frames in {window_s:g} s; check the link")
    span = samples[-1][0] - samples[0][0]
    slopes = sorted(
        (y2 - y1) / (x2 - x1)  # device ms per host s
        for i, (x1, y1) in enumerate(samples)
        for x2, y2 in samples[i + 1 :]
        if x2 - x1 >= span / 2
    )
    return (slopes[len(slopes) // 2] / 1000 - 1) * 1e6, len(samples)


def timed_freezes(link: Link, count: int, freeze_ms: int) -> tuple[list[int], list[float]]:
    """A series of device-timed freezes (closed nozzle or dry run). Returns, per freeze,
    |device-measured - requested| ms, and host-observed duration minus device-measured ms (the
    host sees both ends through the link, so that figure carries its jitter)."""
    errors, host_minus_device = [], []
    for _ in range(count):
        txn = link.freeze(freeze_ms)
        started = None
        deadline = link.clock.monotonic() + freeze_ms / 1000 + 2.0
        while link.clock.monotonic() < deadline:
            link.heartbeat(0)
            item = link.next_event(link.heartbeat_period_s)
            if not isinstance(item, DeviceEventReceived) or item.earlier_session or item.event.freeze_txn != txn:
                continue
            if item.event.code is EventCode.FREEZE_STARTED:
                started = item.received_at
            elif item.event.code is EventCode.FREEZE_DONE:
                errors.append(abs(item.event.valve_open_ms - freeze_ms))
                if started is not None:
                    host_minus_device.append(round((item.received_at - started) * 1000 - item.event.valve_open_ms, 1))
                break
        else:
            raise CalibrationError(f"{link.port}: a {freeze_ms} ms test freeze never reported its end; check the device")
    return errors, host_minus_device


def timer(link: Link, window_s: float = 10.0, freezes: int = 3, freeze_ms: int = 1000) -> StepResult:
    """Device clock against the host's monotonic clock over a long window (drift in ppm), and a
    series of device-timed freezes (per-freeze error)."""
    drift_ppm, samples = measure_drift_ppm(link, window_s)
    errors, host_check = timed_freezes(link, freezes, freeze_ms) if freezes else ([], [])
    current = link.read_calibration().timer_ppm
    # The device's clock already includes the current correction: fold it into the new one.
    correction = round((1 + current / 1e6) / (1 + drift_ppm / 1e6) * 1e6 - 1e6)
    passed = abs(drift_ppm) <= TIMER_TOLERANCE_PPM and all(e <= FREEZE_TOLERANCE_MS for e in errors)
    written = {"timer_ppm": correction} if passed else {}
    if passed:
        _write(link, timer_ppm=correction)
    return StepResult("timer", passed, {"drift_ppm": round(drift_ppm, 1), "window_s": window_s, "samples": samples,
                                        "per_freeze_error_ms": errors, "host_minus_device_ms": host_check},
                      f"|drift| <= {TIMER_TOLERANCE_PPM} ppm, per-freeze error <= {FREEZE_TOLERANCE_MS} ms", written)


def valve(link: Link, spray_ms: int = 300) -> StepResult:
    """Command-to-open and close-to-closed latencies, from the device's own timestamps in telemetry."""
    link.freeze(spray_ms)
    opened_at = closed_at = None
    start = link.wait_for_telemetry()
    assert start is not None
    commanded_at = start.telemetry.uptime_ms - start.telemetry.elapsed_ms
    deadline = link.clock.monotonic() + spray_ms / 1000 + 1.0
    while link.clock.monotonic() < deadline:
        link.heartbeat(0)
        link.next_event(0.005)
        latest = link.latest_telemetry()
        if latest is None:
            continue
        t = latest.telemetry
        if opened_at is None and t.valve & 0b10:
            opened_at = t.uptime_ms
        if opened_at is not None and closed_at is None and not t.valve & 0b10:
            closed_at = t.uptime_ms
            break
    if opened_at is None or closed_at is None:
        return StepResult("valve", False, {"open_latency_ms": None, "close_latency_ms": None,
                                           "opened": opened_at is not None, "closed": closed_at is not None},
                          f"latency <= {VALVE_LATENCY_LIMIT_MS} ms", {})
    open_latency = max(0, opened_at - commanded_at)
    close_latency = max(0, closed_at - (commanded_at + spray_ms))
    passed = open_latency <= VALVE_LATENCY_LIMIT_MS and close_latency <= VALVE_LATENCY_LIMIT_MS
    written = {"valve_open_latency_ms": open_latency, "valve_close_latency_ms": close_latency} if passed else {}
    if passed:
        _write(link, **written)
    return StepResult("valve", passed, {"open_latency_ms": open_latency, "close_latency_ms": close_latency,
                                        "resolution_ms": "one telemetry period (20 ms)"}, f"<= {VALVE_LATENCY_LIMIT_MS} ms", written)


def flow(link: Link, mass_before_g: float, mass_after_g: float, valve_open_ms: int) -> StepResult:
    """Grams per second from the technician's weighings around a timed spray of an N2O cartridge (the
    ledger turns it into the cartridge's seconds); a liquid-nitrogen device has no cartridge to weigh."""
    identity = link.identity
    if identity is not None and identity.cryogen is not Cryogen.N2O:
        raise CalibrationError(f"--step flow: this device ({identity.serial}) runs on {identity.cryogen.name}, which has no cartridge; "
                               "the flow step calibrates an N2O cartridge's flow: use it on an N2O device")
    if mass_before_g <= 0 or mass_after_g < 0:
        raise CalibrationError(f"masses must be positive grams (got before {mass_before_g}, after {mass_after_g})")
    if mass_after_g >= mass_before_g:
        raise CalibrationError(f"the mass after the spray ({mass_after_g} g) must be less than before ({mass_before_g} g): weigh again")
    if valve_open_ms <= 0:
        raise CalibrationError("the spray's valve-open time must be > 0 ms")
    rate_mg_s = round((mass_before_g - mass_after_g) * 1000 / (valve_open_ms / 1000))
    written = {"flow_mg_per_s": rate_mg_s}
    _write(link, **written)
    return StepResult("flow", True, {"grams": round(mass_before_g - mass_after_g, 3), "valve_open_ms": valve_open_ms,
                                     "g_per_s": rate_mg_s / 1000}, "recorded (no tolerance: the ledger uses it)", written)


def thermocouple(link: Link, sensor: str, points: list[tuple[float, float]]) -> StepResult:
    """Two-point offset and gain from (reference C, reading C) pairs taken in reference baths."""
    if sensor not in ("tip", "tissue"):
        raise CalibrationError(f"sensor {sensor!r}: allowed values are 'tip' and 'tissue'")
    if len(points) != REFERENCE_POINTS:
        raise CalibrationError("give exactly two reference points (e.g. ice water 0 C and liquid nitrogen -196 C)")
    for ref, _ in points:
        if not REFERENCE_RANGE_C[0] <= ref <= REFERENCE_RANGE_C[1]:
            raise CalibrationError(f"reference {ref} C is outside {REFERENCE_RANGE_C[0]:g}..{REFERENCE_RANGE_C[1]:g} C")
    (r1, m1), (r2, m2) = points
    if abs(r1 - r2) < MIN_REFERENCE_SPREAD_C:
        raise CalibrationError(f"the two references ({r1} C, {r2} C) must be at least {MIN_REFERENCE_SPREAD_C:g} C apart")
    current = link.read_calibration()
    gain_now = getattr(current, f"{sensor}_gain_ppm") / 1e6
    offset_now = getattr(current, f"{sensor}_offset_cdeg") / 100
    raw1, raw2 = (m1 - offset_now) / gain_now, (m2 - offset_now) / gain_now  # undo the calibration in force
    gain = (r1 - r2) / (raw1 - raw2)
    offset = r1 - gain * raw1
    error_before = max(abs(m1 - r1), abs(m2 - r2))
    written = {f"{sensor}_gain_ppm": round(gain * 1e6), f"{sensor}_offset_cdeg": round(offset * 100)}
    passed = PLAUSIBLE_GAIN[0] <= gain <= PLAUSIBLE_GAIN[1]
    if passed:
        _write(link, **written)
    measured = {"sensor": sensor, "points": points, "error_before_c": round(error_before, 2), "gain": round(gain, 5),
                "offset_c": round(offset, 2)}
    tolerance = f"gain within {PLAUSIBLE_GAIN[0]:g}..{PLAUSIBLE_GAIN[1]:g}"
    return StepResult("thermocouple", passed, measured, tolerance, written if passed else {})


def read_sensor(link: Link, sensor: str, settle_s: float = 2.0) -> float:
    """The calibrated reading now (the probe sits in a bath)."""
    link.heartbeat_for(settle_s)
    latest = link.wait_for_telemetry()
    reading = celsius(getattr(latest.telemetry, f"{sensor}_cdeg")) if latest else None
    if reading is None:
        raise CalibrationError(f"{link.port}: the {sensor} thermocouple gives no reading")
    return reading


def certify(link: Link, store: RecordStore, technician: str, results: list[StepResult], today: date | None = None) -> dict[str, Any]:
    """Set the next due date on the device and record the certificate."""
    today = today or date.today()
    passed = all(r.passed for r in results)
    due = today + timedelta(days=DUE_AFTER_DAYS)
    if passed:
        _write(link, calibrated_on_day=day_number(today), due_on_day=day_number(due))
    ident = link.identity
    assert ident is not None
    certificate = {"device": ident.serial, "firmware": ident.firmware, "technician": technician, "date": today.isoformat(),
                   "next_due": due.isoformat() if passed else None, "passed": passed, "steps": [r.as_dict() for r in results]}
    store.append("calibration_certificate", certificate)
    return certificate


UNITS = (("mg_per_s", " mg/s"), ("g_per_s", " g/s"), ("ppm", " ppm"), ("ms", " ms"), ("s", " s"), ("c", " °C"), ("kpa", " kPa"))
NAMES = {"grams": ("mass sprayed", " g"), "g_per_s": ("flow", " g/s")}  # keys whose words are not their own

def described(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Measured or written figures as a technician reads them: ("open latency", "20 ms"), lists
    joined, never a Python dict."""
    lines = []
    for key, value in values.items():
        label, unit = NAMES.get(key, (key, ""))
        for suffix, shown in UNITS if key not in NAMES else ():
            if key.endswith(f"_{suffix}"):
                label, unit = key.removesuffix(f"_{suffix}"), shown
                break
        text = ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        lines.append((label.replace("_", " ").strip(), text if isinstance(value, str) else f"{text}{unit}"))
    return lines


def certificate_html(certificate: dict[str, Any]) -> str:
    """A standalone page a technician can print or share: the device and who, then each step with
    its result, tolerance, what was measured and what was written to the device."""
    e = {k: html.escape(str(v)) for k, v in certificate.items() if k != "steps"}

    def rows(values: dict[str, Any]) -> str:
        return "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>" for label, text in described(values)) \
            or "<tr><td colspan=2>nothing</td></tr>"

    steps = "".join(
        f"<section><h2>{html.escape(s['step'])}: <span class={'pass' if s['passed'] else 'fail'}>{'PASS' if s['passed'] else 'FAIL'}"
        f"</span></h2><p>tolerance {html.escape(s['tolerance'])}</p>"
        f"<h3>measured</h3><table>{rows(s['measurements'])}</table>"
        f"<h3>written to the device</h3><table>{rows(s['written'])}</table></section>"
        for s in certificate["steps"]
    )
    style = ("body{font-family:sans-serif;max-width:42em;margin:2em auto}table{border-collapse:collapse;margin-bottom:1em}"
             "th,td{border:1px solid #999;padding:.2em .6em;text-align:left}th{font-weight:normal;color:#444}"
             ".pass{color:#070}.fail{color:#b00}")
    return (f"<!doctype html><meta charset='utf-8'><title>Calibration {e['device']}</title><style>{style}</style>"
            f"<h1>Givre calibration certificate</h1><table><tr><th>device</th><td>{e['device']}</td></tr>"
            f"<tr><th>firmware</th><td>{e['firmware']}</td></tr><tr><th>technician</th><td>{e['technician']}</td></tr>"
            f"<tr><th>date</th><td>{e['date']}</td></tr>"
            f"<tr><th>result</th><td><b>{'PASS' if certificate['passed'] else 'FAIL'}</b></td></tr>"
            f"<tr><th>next due</th><td>{e['next_due']}</td></tr></table>{steps}")
