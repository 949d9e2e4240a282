"""`givre info`: a device's identity, counters and calibration."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json

from controller.cli.options import add_db, add_json, add_port, open_store
from controller.procedure.recovery import connect, recover
from controller.records.store import StoreUnavailable
from controller.records.text import printable
from firmware_bridge.units import available_u32, date_of_day, fault_names

HELP = "connect to a device and show its identity, counters and calibration"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_port(parser)
    add_db(parser, ": what an earlier host left open on this device is settled first")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    """Identity, counters, calibration; first, what an earlier host left open on this device is
    settled from it (a record store another Givre is writing is left alone, and said so)."""
    with connect(args.port) as link:
        try:
            with open_store(args.db) as store:
                recovered = [r.line() for r in recover(store, link)]
        except StoreUnavailable as exc:
            recovered = [f"not settled here: {exc}"]
        report = {
            "identity": _plain(link.identity),
            "counters": _plain(link.counters()),
            "calibration": _plain(link.read_calibration()),
        }
    if args.json:
        print(json.dumps({**report, "recovered": recovered}, sort_keys=True))
    else:
        for line in recovered:
            print(printable(line))
        for section, values in report.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(printable(f"  {key:24} {readable(key, value)}"))
    return 0


def readable(key: str, value: object) -> str:
    """A wire value as a technician reads it (the JSON keeps the wire's): day numbers as dates, the
    protocol's "not available" and "never" as words, fault flags by name, centi-degrees in degrees."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "-" if value == "NONE" else str(value)
    if key.endswith("_day"):
        day = date_of_day(value)
        return day.isoformat() if day else "never"
    if key == "fault_flags":
        return fault_names(value) if value else "none"
    if key.endswith("_cdeg"):
        return f"{value / 100:+.2f} °C"
    return "n/a" if available_u32(value) is None else str(value)


def _plain(record: object) -> dict[str, object]:
    """A dataclass as JSON-ready values, enums by name."""
    if not dataclasses.is_dataclass(record):
        raise TypeError(f"not a dataclass: {record!r}")
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return {k: v.name if isinstance(v, enum.Enum) else v for k, v in values.items()}
