"""`givre selftest`: the pre-use self-test of a device, PASS / WARN / FAIL per check with the fix."""

from __future__ import annotations

import argparse
import json

from controller.cli.options import add_db, add_json, add_port, open_store
from controller.device.selftest import Verdict, overall, run_selftest
from controller.procedure.recovery import connect_and_recover
from controller.records.text import printable

HELP = "pre-use self-test of a device: PASS / WARN / FAIL with the fix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_port(parser)
    add_db(parser, ": the result is recorded and any gas used is counted")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 1 on any FAIL; what an earlier host left open on this device is settled first."""
    with open_store(args.db) as store:
        link, recovered = connect_and_recover(args.port, store)
        with link:
            checks = run_selftest(link, store)
            assert link.identity is not None  # connect handshakes before it returns
            serial = link.identity.serial
    verdict = overall(checks)
    if args.json:
        print(json.dumps({"device": serial, "result": verdict.value, "checks": [c.as_dict() for c in checks],
                          "recovered": [r.line() for r in recovered]}))
    else:
        for line in (*(r.line() for r in recovered), *(c.line() for c in checks), f"self-test {verdict.value} for device {serial}"):
            print(printable(line))
    return 1 if verdict is Verdict.FAIL else 0
