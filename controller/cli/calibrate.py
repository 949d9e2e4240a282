"""`givre calibrate --port URL --step timer|valve|flow|thermocouple [--json]`: one step, headless."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from controller.cli.options import add_db, add_json, add_port, open_store
from controller.device import calibration
from controller.procedure.recovery import connect_and_recover
from controller.records.private_files import write_private
from controller.records.text import printable
from firmware_bridge.link import Link

HELP = "technician calibration, one step: timer, valve, flow or thermocouple"
# A value that starts with a minus and a digit is a value, not an option: `--point -196:-199.1` (liquid
# nitrogen). Python 3.13's argparse reads it so; 3.11's only takes plain numbers like -196 as values.
NEGATIVE_VALUE = re.compile(r"-\.?\d")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = NEGATIVE_VALUE
    add_port(parser)
    parser.add_argument("--step", required=True, choices=["timer", "valve", "flow", "thermocouple"])
    parser.add_argument("--technician", default="technician", help="pseudonymous technician id")
    parser.add_argument("--window-s", type=float, default=10.0, help="timer: measuring window in seconds")
    parser.add_argument("--mass-before", type=float, help="flow: cartridge mass before the spray, grams")
    parser.add_argument("--mass-after", type=float, help="flow: cartridge mass after the spray, grams")
    parser.add_argument("--valve-open-ms", type=int, help="flow: the spray's device-measured valve-open time")
    parser.add_argument("--sensor", choices=["tip", "tissue"], default="tip", help="thermocouple: which one")
    parser.add_argument("--point", action="append", default=[], metavar="REF:READING",
                        help="thermocouple: reference bath C and the reading shown in it, twice")
    add_db(parser, ": the certificate is recorded there")
    parser.add_argument("--certificate", type=Path, metavar="FILE.html", help="also write the certificate as a web page")
    add_json(parser, "print the certificate as one JSON object")


def run(args: argparse.Namespace) -> int:
    try:
        points = [_point(text) for text in args.point]
        with open_store(args.db) as store:
            link, recovered = connect_and_recover(args.port, store)
            for report in recovered:
                print(report.line(), file=sys.stderr)
            with link:
                result = _step(args, link, points)
                certificate = calibration.certify(link, store, args.technician, [result])
    except calibration.CalibrationError as exc:
        print(f"givre calibrate: {exc}; nothing was written", file=sys.stderr)
        return 2
    if args.certificate is not None:
        write_private(args.certificate, calibration.certificate_html(certificate).encode("utf-8"))
    if args.json:
        print(json.dumps(certificate, sort_keys=True))
    else:
        print(f"{result.step}: {'PASS' if result.passed else 'FAIL'} (tolerance {result.tolerance})")
        for label, text in calibration.described(result.measurements):
            print(printable(f"  {label}: {text}"))
        written = calibration.described(result.written)
        print("written to the device: " + ("; ".join(f"{label} {text}" for label, text in written) or "nothing"))
        print(f"next due {certificate['next_due'] or '-'}")
    return 0 if result.passed else 1


def _point(text: str) -> tuple[float, float]:
    ref, _, reading = text.partition(":")
    try:
        return float(ref), float(reading)
    except ValueError:
        raise calibration.CalibrationError(
            f"--point {text!r}: not REF:READING", "Give the reference bath and the reading shown in it, in degrees C, e.g. --point 0:3.8"
        ) from None


def _step(args: argparse.Namespace, link: Link, points: list[tuple[float, float]]) -> calibration.StepResult:
    if args.step == "timer":
        return calibration.timer(link, args.window_s)
    if args.step == "valve":
        return calibration.valve(link)
    if args.step == "flow":
        if args.mass_before is None or args.mass_after is None or args.valve_open_ms is None:
            raise calibration.CalibrationError(
                "the flow step needs --mass-before, --mass-after and --valve-open-ms",
                "Weigh the cartridge before and after a spray, and give the valve-open time the device measured",
            )
        return calibration.flow(link, args.mass_before, args.mass_after, args.valve_open_ms)
    return calibration.thermocouple(link, args.sensor, points)
