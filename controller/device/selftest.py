"""The pre-use self-test: seconds long, no technician needed, each line PASS / WARN / FAIL with the
fix to try. The UI runs it on connect; `givre selftest --port URL [--json]` runs it headless.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from datetime import date

from controller.config import Config
from controller.device.calibration import CalibrationError, measure_drift_ppm
from controller.procedure.treatment import calibration_record
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordStore
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import Link
from firmware_bridge.messages import Capability, DeviceKind, EventCode, Fault
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.transport import list_ports
from firmware_bridge.units import available_u16, celsius

CLOCK_WINDOW_S = 1.5  # 10 Hz idle telemetry: about 15 frames
CLOCK_TOLERANCE_PPM = 5000  # 0.5 %, the calibration tolerance's default
VALVE_CLICK_MS = 150
PRESSURE_DROP_FRACTION = 0.9  # while the valve is open the pressure must fall below 90 % of its rest value
ROOM_RANGE_C = (5.0, 45.0)  # a thermocouple at rest, in the room or on skin


class Verdict(enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.verdict.value:4}  {self.name:22} {self.detail}" + (f"  -> {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "verdict": self.verdict.value, "detail": self.detail, "fix": self.fix}


def run_selftest(link: Link, store: RecordStore | None = None, config: Config | None = None, today: date | None = None) -> list[Check]:
    """Every check in order; with a store, the result is recorded and the test spray charged to the loaded cartridge."""
    config = config or Config()
    ident = link.identity
    assert ident is not None
    spray = ident.kind is DeviceKind.SPRAY
    checks = [_port_identity(link), Check("protocol and firmware", Verdict.PASS, f"protocol {ident.protocol}, firmware {ident.firmware}")]
    checks.append(_device_clock(link))
    checks.append(_watchdog(link))
    if spray and ident.capabilities & Capability.PRESSURE_SENSOR:
        checks.append(_valve_click(link, store, config))
    if ident.capabilities & (Capability.TIP_THERMOCOUPLE | Capability.TISSUE_THERMOCOUPLE):
        checks.append(_thermocouples(link))
    checks.append(_calibration(link, today))
    if spray and store is not None:
        checks.append(_cartridge(store, config, today))
    if store is not None:
        store.append("selftest", {"device": ident.serial, "checks": [c.as_dict() for c in checks]})
    return checks


def overall(checks: list[Check]) -> Verdict:
    verdicts = {c.verdict for c in checks}
    return Verdict.FAIL if Verdict.FAIL in verdicts else Verdict.WARN if Verdict.WARN in verdicts else Verdict.PASS


def _port_identity(link: Link) -> Check:
    ident = link.identity
    assert ident is not None
    usb = next((p for p in list_ports() if p.device == link.port), None)
    if usb is None or not usb.serial_number:
        return Check("port identity", Verdict.WARN, f"handshake serial {ident.serial}; the port reports no USB serial number",
                     "Fine for a simulator or an adapter without one; otherwise check the cable")
    if usb.serial_number != ident.serial:
        return Check("port identity", Verdict.FAIL, f"USB serial {usb.serial_number} but the device says {ident.serial}",
                     "Another device answers on this port: check which port belongs to the cryotherapy device")
    return Check("port identity", Verdict.PASS, f"USB and handshake serial {ident.serial}")


def _device_clock(link: Link) -> Check:
    """The calibration's robust drift estimate (Theil-Sen over every telemetry frame) on a short
    window: one frame a busy host read late no longer fails a good device."""
    try:
        ppm, samples = measure_drift_ppm(link, CLOCK_WINDOW_S)
    except CalibrationError as exc:
        return Check("device clock", Verdict.FAIL, str(exc), "Check the link, then retry")
    detail = f"{ppm:+.0f} ppm against the host clock ({samples} telemetry frames over {CLOCK_WINDOW_S:g} s; a coarse check)"
    if abs(ppm) > CLOCK_TOLERANCE_PPM:
        return Check("device clock", Verdict.FAIL, detail,
                     "Calibrate the timer (givre calibrate --step timer) or send the device for service")
    return Check("device clock", Verdict.PASS, detail)


def _watchdog(link: Link) -> Check:
    """Fall silent on a closed valve: the device must trip its watchdog, then clear it."""
    ident = link.identity
    assert ident is not None
    silence_s = ident.watchdog_ms / 1000 * 2 + 0.2
    link.clock.sleep(silence_s)  # the test itself: no frame at all for twice the timeout
    tripped = any(isinstance(e, DeviceEventReceived) and not e.earlier_session and e.event.code is EventCode.WATCHDOG_TRIP
                  for e in link.heartbeat_for(0.3))
    latest = link.wait_for_telemetry()
    tripped = tripped or bool(latest and latest.telemetry.fault_flags & Fault.WATCHDOG_TRIP)
    if not tripped:
        return Check("watchdog", Verdict.FAIL,
                     f"host silent {silence_s:.1f} s and the device did not trip its {ident.watchdog_ms} ms watchdog",
                     "Do not treat with this device: it would not close its valve if the host hung; send it for service")
    try:
        link.clear_fault()
    except BridgeError as exc:
        return Check("watchdog", Verdict.FAIL, f"tripped, but would not clear: {exc.problem}", "Restart the device")
    return Check("watchdog", Verdict.PASS, f"tripped after host silence (timeout {ident.watchdog_ms} ms) and cleared")


def _valve_click(link: Link, store: RecordStore | None, config: Config) -> Check:
    """A short device-timed spray: the pressure behind the valve must fall while it is open."""
    rest = link.wait_for_telemetry()
    rest_kpa = available_u16(rest.telemetry.pressure_kpa) if rest is not None else None
    if rest_kpa is None:
        return Check("valve and pressure", Verdict.WARN, "no pressure reading at rest", "Check the pressure sensor")
    lowest = rest_kpa
    try:
        link.freeze(VALVE_CLICK_MS)
    except BridgeError as exc:
        return Check("valve and pressure", Verdict.FAIL, f"the device refused a {VALVE_CLICK_MS} ms spray: {exc.problem}", exc.action)
    deadline = link.clock.monotonic() + VALVE_CLICK_MS / 1000 + 0.5
    while link.clock.monotonic() < deadline:
        link.heartbeat(0)
        link.next_event(0.01)
        latest = link.latest_telemetry()
        kpa = available_u16(latest.telemetry.pressure_kpa) if latest is not None else None
        if kpa is not None:
            lowest = min(lowest, kpa)
    counters = link.counters()
    if store is not None and counters.last_valve_open_ms:
        ledger = CartridgeLedger(store, config)  # the clinic's cartridge sizes, not the sheet's defaults
        status = ledger.status()
        if status is not None:
            ledger.commit("selftest", status.cartridge_id, counters.last_valve_open_ms / 1000, False)
    if counters.fault_flags & Fault.NO_FLOW or lowest > rest_kpa * PRESSURE_DROP_FRACTION:
        with contextlib.suppress(BridgeError):  # the FAIL below says what to do either way
            link.clear_fault()
        return Check("valve and pressure", Verdict.FAIL,
                     f"valve opened {counters.last_valve_open_ms} ms, pressure stayed at {lowest / 100:.1f} bar",
                     "Nozzle blocked or cartridge empty: clear the nozzle, check the cartridge, retry")
    return Check("valve and pressure", Verdict.PASS,
                 f"{counters.last_valve_open_ms} ms spray, pressure {rest_kpa / 100:.1f} -> {lowest / 100:.1f} bar")


def _thermocouples(link: Link) -> Check:
    latest = link.wait_for_telemetry()
    if latest is None:
        return Check("thermocouples", Verdict.FAIL, "no telemetry", "Check the link")
    t = latest.telemetry
    by_sensor = {"tip": celsius(t.tip_cdeg), "tissue": celsius(t.tissue_cdeg)}
    readings = {name: c for name, c in by_sensor.items() if c is not None}
    if t.fault_flags & (Fault.SENSOR_OPEN | Fault.SENSOR_SHORT) or not readings:
        return Check("thermocouples", Verdict.FAIL, "sensor fault reported", "Check the thermocouple plugs and cables")
    odd = {k: v for k, v in readings.items() if not ROOM_RANGE_C[0] <= v <= ROOM_RANGE_C[1]}
    shown = ", ".join(f"{k} {v:.1f} C" for k, v in readings.items())
    if odd:
        return Check("thermocouples", Verdict.FAIL, f"{shown}: implausible at rest",
                     "Calibrate the thermocouples (givre calibrate --step thermocouple)")
    return Check("thermocouples", Verdict.PASS, f"{shown} at rest")


def _calibration(link: Link, today: date | None) -> Check:
    cal = calibration_record(link.read_calibration(), today)
    if cal["status"] == "valid":
        return Check("calibration", Verdict.PASS, f"valid until {cal['due_on']}")
    return Check("calibration", Verdict.WARN, f"{cal['status']}" + (f" (due {cal['due_on']})" if cal["due_on"] else ""),
                 "Have a technician calibrate the device (givre calibrate)")


def _cartridge(store: RecordStore, config: Config, today: date | None) -> Check:
    status = CartridgeLedger(store, config).status(today=today)
    if status is None:
        return Check("cartridge", Verdict.WARN, "none registered", "givre cartridge load --size 23g")
    if status.past_keeping_time:
        verdict = Verdict.FAIL if config.cartridge_past_keeping == "block" else Verdict.WARN
        return Check("cartridge", verdict, f"opened {status.age_days} days ago (keeping time {status.keeping_days} days)",
                     "Load a new cartridge")
    return Check("cartridge", Verdict.PASS, f"{status.size}, {status.remaining_s:.0f} s left, opened {status.age_days} day(s) ago")
