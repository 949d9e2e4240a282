"""The `givre` command. Errors reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points
from typing import Protocol

from controller.cli import (
    calibrate,
    cartridge,
    conformance,
    demo,
    info,
    ports,
    records,
    report,
    run,
    selftest,
    ui,
)
from controller.errors import GivreError
from firmware_bridge.errors import BridgeError
from profiles import cli as profiles_cli
from profiles.library import ProfileError
from sim import cli as sim_cli


class Command(Protocol):
    """What a command group's module provides (bench/cli.py, registered by entry point, too)."""

    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# Every command group, in the order `givre --help` lists them; groups that live above controller/
# (bench/) come after them, from the `givre.commands` entry point.
COMMANDS: dict[str, Command] = {
    "demo": demo,
    "sim": sim_cli,
    "profiles": profiles_cli,
    "run": run,
    "records": records,
    "report": report,
    "cartridge": cartridge,
    "calibrate": calibrate,
    "selftest": selftest,
    "conformance": conformance,
    "ports": ports,
    "info": info,
}


def plugin_commands() -> dict[str, Command]:
    """Command groups registered by the `givre.commands` entry point (bench/). A plugin never
    replaces a built-in command, and one that cannot load costs only itself, said in one line."""
    loaded: dict[str, Command] = {}
    for plugin in entry_points(group="givre.commands"):
        if plugin.name in COMMANDS:
            print(f"givre: ignoring the plugin command {plugin.name!r} ({plugin.value}): a built-in command has that name. "
                  "Uninstall the package that registers it", file=sys.stderr)
            continue
        try:
            loaded[plugin.name] = plugin.load()
        except Exception as exc:  # a broken plugin must not take the clinical commands down with it
            print(f"givre: the command {plugin.name!r} could not be loaded ({exc}). Reinstall givre: pip install -e .",
                  file=sys.stderr)
    return loaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="givre", description=f"Controller for GP cryotherapy devices. With no command: {ui.HELP}.")
    ui.add_arguments(parser)
    parser.set_defaults(handler=ui.run)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in {**COMMANDS, **plugin_commands()}.items():
        sub = commands.add_parser(name, help=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
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
