"""`givre` with no command: the terminal UI, its world built from the command line (the store, the
config, the profiles, the device; the embedded simulator offered on the connect screen)."""

from __future__ import annotations

import argparse

from controller.cli.options import TRIGGERS, add_config, add_db, add_port, add_profiles, add_trigger, open_store
from controller.clinic import Clinic, Simulator
from controller.config import load_config
from controller.practice.billing import load_table
from controller.procedure.recovery import connect
from firmware_bridge.clock import Clock
from profiles.library import load_library
from sim.device import SimulatedDevice

HELP = "the terminal UI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_port(parser, required=False, note=" (none: manual mode)")
    add_db(parser)
    add_profiles(parser)
    add_config(parser)
    add_trigger(parser)
    parser.add_argument("--no-bell", action="store_true", help="no bell at freeze start and end")


def run(args: argparse.Namespace) -> int:
    return run_app(build_clinic(args))


def build_clinic(args: argparse.Namespace, *, device: Simulator | None = None, url: str | None = None,
                 clock: Clock | None = None) -> Clinic:
    clock = clock or Clock()
    config = load_config(getattr(args, "config", None))
    table = load_table(config.billing_table)  # a bad clinic table is one line before the UI opens
    library = load_library(getattr(args, "profiles", None))
    notices: list[str] = []
    store = open_store(getattr(args, "db", None), clock=clock, warn=notices.append)
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
                  simulator_factory=embedded_simulator, notices=notices)


def embedded_simulator(kind: str, clock: Clock) -> Simulator:
    return SimulatedDevice(kind=kind, clock=clock)


def run_app(clinic: Clinic) -> int:
    """The UI until it quits; then the control loop, the link and the store are closed, in that order."""
    from controller.tui.app import GivreApp  # noqa: PLC0415 - textual costs ~140 ms: only the UI may pay it, not every command

    try:
        GivreApp(clinic).run()
    finally:
        clinic.supervisor.close()
        if clinic.link is not None:
            clinic.link.close()
        clinic.store.close()
    return 0
