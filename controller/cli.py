"""The `givre` command. Errors reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import argparse
import os
import sys

from firmware_bridge.errors import BridgeError


def build_parser() -> argparse.ArgumentParser:
    from bench import run as bench_run
    from controller import demo, records_cli
    from controller.tui import launch as tui_launch
    from controller import run as run_cli
    from profiles import cli as profiles_cli
    from sim import cli as sim_cli

    parser = argparse.ArgumentParser(
        prog="givre", description="Controller for GP cryotherapy devices. With no command: the terminal UI."
    )
    tui_launch.add_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_arguments(commands.add_parser("demo", help="run freeze-thaw cycles on the embedded simulator"))
    sim_cli.add_arguments(commands.add_parser("sim", help="serve a simulated device on a pty or TCP"))
    bench_run.add_arguments(commands.add_parser("bench", help="measure codec speed and link latencies against the simulator"))
    profiles_cli.add_arguments(commands.add_parser("profiles", help="lesion profiles: list, show, check"))
    run_cli.add_arguments(commands.add_parser("run", help="one lesion's whole protocol, headless (scripts, CI)"))
    records_cli.add_records_arguments(commands.add_parser("records", help="sessions in the record store: list, show, verify"))
    records_cli.add_cartridge_arguments(commands.add_parser("cartridge", help="the gas cartridge: load, status"))
    commands.add_parser("ports", help="list serial ports with their USB description and serial number")
    info = commands.add_parser("info", help="connect to a device and show its identity, counters and calibration")
    info.add_argument("--port", required=True, help="device path, pty path or socket://HOST:PORT")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # patient data: every file Givre creates is private to its user
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BridgeError as exc:
        print(f"givre: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("givre: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `givre profiles list | head`
        sys.stderr.close()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command is None:
        from controller.tui import launch as tui_launch

        return tui_launch.run_app(tui_launch.build_clinic(args))
    if args.command == "demo":
        from controller import demo

        return demo.run(args)
    if args.command == "sim":
        from sim import cli as sim_cli

        return sim_cli.run(args)
    if args.command == "bench":
        from bench import run as bench_run

        return bench_run.run(args)
    if args.command == "run":
        from controller import run as run_cli

        return run_cli.run(args)
    if args.command == "records":
        from controller import records_cli

        return records_cli.run_records(args)
    if args.command == "cartridge":
        from controller import records_cli

        return records_cli.run_cartridge(args)
    if args.command == "profiles":
        from profiles import cli as profiles_cli

        return profiles_cli.run(args)
    if args.command == "ports":
        from firmware_bridge.transport import list_ports

        for port in list_ports():
            print(f"{port.device}\t{port.description}\tserial={port.serial_number or '-'}")
        return 0
    if args.command == "info":
        return _info(args.port, args.json)
    raise AssertionError(args.command)


def _info(port: str, as_json: bool) -> int:
    """Read-only: handshake, counters, calibration. Heartbeats are not needed for so short a visit."""
    import json

    from firmware_bridge.link import Link

    with Link.open(port) as link:
        report = {
            "identity": _plain(link.identity),
            "counters": _plain(link.counters()),
            "calibration": _plain(link.read_calibration()),
        }
    if as_json:
        print(json.dumps(report, sort_keys=True))
    else:
        for section, values in report.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"  {key:24} {value}")
    return 0


def _plain(record: object) -> dict[str, object]:
    """A dataclass as JSON-ready values, enums by name."""
    import dataclasses
    import enum

    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}  # type: ignore[arg-type]
    return {k: v.name if isinstance(v, enum.Enum) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
