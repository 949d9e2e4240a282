"""The options several commands share, declared once: the same flag has the same name, type,
default and help wherever it appears (flags are a contract with scripts and the README)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from controller.config import default_db
from controller.errors import GivreError
from controller.procedure.recovery import MIN_VIRTUAL_SCALE
from controller.records.private_files import folder_warning
from controller.records.store import RecordStore
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.messages import TriggerMode
from profiles.library import default_clinic_dir

TRIGGERS = {"host": TriggerMode.HOST, "trigger": TriggerMode.TRIGGER_START, "dead-man": TriggerMode.DEAD_MAN}


class UsageError(GivreError):
    """A command-line value that cannot be used: what is wrong with it, and what is allowed."""


def add_port(parser: argparse._ActionsContainer, *, required: bool = True, note: str = "") -> None:
    """--port: where the device is (a parser, or a group when --port is one of several choices)."""
    parser.add_argument("--port", required=required, help=f"device path, pty path or socket://HOST:PORT{note}")


def add_db(parser: argparse.ArgumentParser, purpose: str = "", default: str = "") -> None:
    """--db: the record store; `default` says what happens without it when that is not default_db()."""
    parser.add_argument("--db", type=Path, help=f"record store{purpose} (default: {default or default_db()})")


def open_store(db: Path | None, *, writer: bool = True, clock: Clock = SYSTEM_CLOCK,
               warn: Callable[[str], None] | None = None) -> RecordStore:
    """The record store a command or the UI opens (--db, else the default): all of them open it here,
    so a store folder other accounts can write is said once, in one line: on stderr, or to ``warn``
    (the UI, whose screen hides stderr). Looked at before RecordStore creates a missing folder 0700."""
    path = db or default_db()
    warning = folder_warning(path.parent)
    if warning is not None:
        (warn or _to_stderr)(warning)
    store = RecordStore(path, clock=clock, writer=writer)
    if (missing := store.key_store_warning()) is not None:  # the patients' fields read as unreadable: said once, here
        (warn or _to_stderr)(missing)
    return store


def _to_stderr(line: str) -> None:
    print(f"givre: {line}", file=sys.stderr)


def add_config(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    parser.add_argument("--config", type=Path, help=f"clinic config file (TOML){purpose}")


def add_profiles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", type=Path, metavar="DIR", help=f"clinic profiles directory (default: {default_clinic_dir()})")


def add_trigger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trigger", choices=sorted(TRIGGERS), default="host", help="who opens the valve (default: host)")


def add_json(parser: argparse.ArgumentParser, what: str = "print one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def add_scale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"virtual time, this many times faster than the wall: 1, or >= {MIN_VIRTUAL_SCALE:g} with a simulator "
                             "running at that same scale (measured at connect); refused with a real-time device and --manual")


def local_day(text: str) -> date:
    """An argparse type: a local day as YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date as YYYY-MM-DD") from None


def check_scale(scale: float) -> None:
    """--scale runs virtual time this many times faster than the wall: 1 (real time), or at least
    MIN_VIRTUAL_SCALE, so that connect() can always tell a real-time device from a simulator at that
    scale (controller/procedure/recovery.py); a device is then measured at connect."""
    if scale <= 0:
        raise UsageError(f"--scale {scale}: must be > 0", "Use 1 for real time, or e.g. 20 to run twenty times faster")
    if scale != 1 and scale < MIN_VIRTUAL_SCALE:
        raise UsageError(f"--scale {scale:g}: must be 1 (real time) or at least {MIN_VIRTUAL_SCALE:g} (virtual time, a simulator only)",
                         "Leave it out for a device, or use e.g. 20 with a simulator running at that same scale")
