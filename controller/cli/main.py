"""The `givre` command. Errors reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from controller.errors import GivreError
from firmware_bridge.errors import BridgeError
from profiles.library import ProfileError


def build_parser() -> argparse.ArgumentParser:
    from controller.cli import calibrate as calibrate_cli
    from controller.cli import conformance as conformance_cli
    from controller.cli import demo
    from controller.cli import records as records_cli
    from controller.cli import run as run_cli
    from controller.cli import ui as tui_launch
    from profiles import cli as profiles_cli
    from sim import cli as sim_cli

    parser = argparse.ArgumentParser(
        prog="givre", description="Controller for GP cryotherapy devices. With no command: the terminal UI."
    )
    tui_launch.add_arguments(parser)
    parser.set_defaults(handler=lambda args: tui_launch.run_app(tui_launch.build_clinic(args)))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, add: Callable[[argparse.ArgumentParser], None] | None,
                handler: Callable[[argparse.Namespace], int]) -> None:
        sub = commands.add_parser(name, help=help_text)
        if add is not None:
            add(sub)
        sub.set_defaults(handler=handler)

    command("demo", "the terminal UI on the embedded simulator (--headless: a printed run)", demo.add_arguments, demo.run)
    command("sim", "serve a simulated device on a pty or TCP", sim_cli.add_arguments, sim_cli.run)
    command("profiles", "lesion profiles: list, show, check", profiles_cli.add_arguments, profiles_cli.run)
    command("run", "one lesion's whole protocol, headless (scripts, CI)", run_cli.add_arguments, run_cli.run)
    command("records", "sessions in the record store: list, show, verify, export, bill", records_cli.add_records_arguments,
            records_cli.run_records)
    command("report", "the day report: sessions, acts and codes, cartridge use and cost, alarms, devices (--html FILE)",
            records_cli.add_report_arguments, records_cli.run_report)
    command("cartridge", "the gas cartridge: load, status", records_cli.add_cartridge_arguments, records_cli.run_cartridge)
    command("calibrate", "technician calibration, one step: timer, valve, flow or thermocouple", calibrate_cli.add_arguments,
            calibrate_cli.run)
    command("selftest", "pre-use self-test of a device: PASS / WARN / FAIL with the fix", selftest_arguments, run_selftest_cli)
    command("conformance", "protocol conformance kit for device firmware: PASS / FAIL per rule", conformance_cli.add_arguments, conformance_cli.run)
    command("ports", "list serial ports with their USB description and serial number", None, _ports)
    command("info", "connect to a device and show its identity, counters and calibration", _info_arguments,
            lambda args: _info(args.port, args.json, args.db))
    for plugin in entry_points(group="givre.commands"):  # e.g. `givre bench` (bench/ depends on controller, never the reverse)
        module = plugin.load()
        command(plugin.name, module.HELP, module.add_arguments, module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # patient data: every file Givre creates is private to its user
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (BridgeError, GivreError, ProfileError) as exc:
        print(f"givre: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("givre: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `givre profiles list | head`
        sys.stderr.close()
        return 0


def selftest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="device path, pty path or socket://HOST:PORT")
    parser.add_argument("--db", help="record store: the result is recorded and any gas used is counted")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_selftest_cli(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from controller.config import default_db
    from controller.device.selftest import Verdict, overall, run_selftest
    from controller.procedure.recovery import connect_and_recover
    from controller.records.store import RecordStore

    with RecordStore(Path(args.db) if args.db else default_db()) as store:
        link, recovered = connect_and_recover(args.port, store)
        with link:
            checks = run_selftest(link, store)
            assert link.identity is not None
            serial = link.identity.serial
    verdict = overall(checks)
    if args.json:
        print(json.dumps({"device": serial, "result": verdict.value, "checks": [c.as_dict() for c in checks],
                          "recovered": [r.line() for r in recovered]}))
    else:
        for line in recovered:
            print(line)
        for check in checks:
            print(check.line())
        print(f"self-test {verdict.value} for device {serial}")
    return 1 if verdict is Verdict.FAIL else 0


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="device path, pty path or socket://HOST:PORT")
    parser.add_argument("--db", help="record store: what an earlier host left open on this device is settled first")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _ports(args: argparse.Namespace) -> int:
    from firmware_bridge.transport import list_ports

    for port in list_ports():
        print(f"{port.device}\t{port.description}\tserial={port.serial_number or '-'}")
    return 0


def _info(port: str, as_json: bool, db: str | None) -> int:
    """Identity, counters, calibration; first, what an earlier host left open on this device is
    settled from it (a record store another Givre is writing is left alone, and said so)."""
    import json
    from pathlib import Path

    from controller.config import default_db
    from controller.procedure.recovery import connect, recover
    from controller.records.store import RecordStore, StoreUnavailable

    with connect(port) as link:
        try:
            with RecordStore(Path(db) if db else default_db()) as store:
                recovered = [r.line() for r in recover(store, link)]
        except StoreUnavailable as exc:
            recovered = [f"not settled here: {exc}"]
        report: dict[str, object] = {
            "identity": _plain(link.identity),
            "counters": _plain(link.counters()),
            "calibration": _plain(link.read_calibration()),
        }
    if as_json:
        print(json.dumps({**report, "recovered": recovered}, sort_keys=True))
    else:
        for line in recovered:
            print(line)
        for section, values in report.items():
            print(f"[{section}]")
            for key, value in values.items():  # type: ignore[attr-defined]
                print(f"  {key:24} {value}")
    return 0


def _plain(record: object) -> dict[str, object]:
    """A dataclass as JSON-ready values, enums by name."""
    import dataclasses
    import enum

    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}  # type: ignore[arg-type]
    return {k: v.name if isinstance(v, enum.Enum) else v for k, v in values.items()}
