"""`givre conformance`: the protocol conformance kit against a device (docs/conformance.md).

One line per check, then a summary; ``--json`` prints one object instead. Exit 0 when no check
failed, 1 on any failure, 2 when the kit could not run (bad usage, a port that cannot be opened,
no device answering): one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from controller.cli.options import add_json, add_port
from firmware_bridge.conformance import SECTIONS, Report, UnknownSection, run_conformance

HELP = "protocol conformance kit for device firmware: PASS / FAIL per rule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_port(parser)
    add_json(parser, "print one JSON object (the contract for scripts and CI)")
    parser.add_argument("--only", metavar="SECTION[,SECTION...]", help=f"run only these sections: {', '.join(SECTIONS)}")


def run(args: argparse.Namespace) -> int:
    only = None if args.only is None else {name.strip() for name in args.only.split(",") if name.strip()}
    try:
        report = run_conformance(args.port, only)  # a port or device error reaches `givre` as one line, exit 2
    except UnknownSection as exc:
        print(f"givre conformance: --only {args.only}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        _print_human(report)
    return 1 if report.result == "FAIL" else 0


def _print_human(report: Report) -> None:
    for note in report.notes:
        print(f"note  {note}")
    for check in report.checks:
        print(check.line())
    for problem in report.left_problems:
        print(f"FAIL  leaving the device: {problem}")
    device, counts = report.device, report.counts()
    print(f"conformance {report.result} for {device['serial']} ({str(device['kind']).lower()}, {device['cryogen']}, "
          f"protocol {device['protocol']}, firmware {device['firmware']}) on {device['port']}: {counts['PASS']} PASS, "
          f"{counts['FAIL']} FAIL, {counts['NOT_APPLICABLE']} NOT APPLICABLE in {report.duration_s:.1f} s")
