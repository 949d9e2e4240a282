"""`givre` with no command: the terminal UI, its world built from the command line (the store, the
config, the profiles, the device; the embedded simulator offered on the connect screen)."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.clinic import Clinic, Simulator
from controller.config import default_db, load_config
from controller.practice.billing import load_table
from controller.procedure.recovery import connect
from controller.records.store import RecordStore
from controller.tui.app import GivreApp
from firmware_bridge.clock import Clock
from firmware_bridge.messages import TriggerMode
from profiles.library import default_clinic_dir, load_library
from sim.device import SimulatedDevice

TRIGGERS = {"host": TriggerMode.HOST, "trigger": TriggerMode.TRIGGER_START, "dead-man": TriggerMode.DEAD_MAN}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help="device path, pty path or socket://HOST:PORT (none: manual mode)")
    parser.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
    parser.add_argument("--profiles", type=Path, metavar="DIR", help="clinic profiles directory")
    parser.add_argument("--config", type=Path, help="clinic config file (TOML)")
    parser.add_argument("--trigger", choices=sorted(TRIGGERS), default="host", help="who opens the valve")
    parser.add_argument("--no-bell", action="store_true", help="no bell at freeze start and end")


def build_clinic(args: argparse.Namespace, *, device: Simulator | None = None, url: str | None = None, clock: Clock | None = None) -> Clinic:
    clock = clock or Clock()
    config = load_config(getattr(args, "config", None))
    table = load_table(config.billing_table)  # a bad clinic table is one line before the UI opens
    library = load_library(args.profiles if getattr(args, "profiles", None) is not None else default_clinic_dir())
    store = RecordStore(getattr(args, "db", None) or default_db(), clock=clock)
    port = url or getattr(args, "port", None)
    link = None
    try:
        if port:
            link = connect(port, clock)
    except BaseException:
        store.close()
        raise
    return Clinic(store, config, library, link, clock, device, TRIGGERS[getattr(args, "trigger", "host")],
                  not getattr(args, "no_bell", False), billing_table=table,
                  simulator_factory=embedded_simulator)


def embedded_simulator(kind: str, clock: Clock) -> Simulator:
    return SimulatedDevice(kind=kind, clock=clock)


def run_app(clinic: Clinic) -> int:
    try:
        GivreApp(clinic).run()
    finally:
        clinic.supervisor.close()
        if clinic.link is not None:
            clinic.link.close()
        clinic.store.close()
    return 0
