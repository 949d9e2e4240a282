"""`givre demo`: the whole product on the embedded simulator (a spray on a real pty, a fresh store).

The UI by default; ``--headless`` runs one lesion's protocol through exactly the path `givre run`
takes (handshake, recovery, the procedure with device-timed freezes and controller-timed thaws,
the record, the billing proposal) and prints what the device says really happened.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

from controller.cli import run as run_cli
from controller.cli import ui
from controller.cli.options import UsageError, add_db, add_json, add_profiles, add_scale, check_scale
from controller.config import Config
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from profiles.schema import HARD_MAX_FREEZE_S, MAX_CYCLES
from sim.device import SimulatedDevice

HELP = "the terminal UI on the embedded simulator (--headless: a printed run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=["spray", "probe"], default="spray")
    parser.add_argument("--profile", help="headless: the lesion profile (default: common-wart for a spray, superficial-bcc for a probe)")
    parser.add_argument("--freeze-s", type=float, help="headless: freeze per cycle, within the profile's range (default: its own)")
    parser.add_argument("--cycles", type=int, help=f"headless: fewer cycles than the profile plans (1..{MAX_CYCLES})")
    parser.add_argument("--mark-halo-after", type=float, metavar="S",
                        help="headless, halo-timed profiles: mark the halo S seconds into each freeze (the clinician's 'h')")
    add_scale(parser)
    parser.add_argument("--headless", action="store_true", help="no UI: run one lesion's protocol and print what happened")
    add_json(parser, "headless: print `givre run`'s JSON object")
    add_db(parser, default="a fresh one in a temporary folder")
    add_profiles(parser)


def run(args: argparse.Namespace) -> int:
    if not args.headless:
        return run_tui(args)
    try:
        check_headless(args)
    except UsageError as exc:
        print(f"givre demo: {exc}", file=sys.stderr)
        return 2
    return run_headless(args)


def run_tui(args: argparse.Namespace) -> int:
    """The whole product on the embedded simulator: a spray on a pty, a fresh record store."""
    with tempfile.TemporaryDirectory(prefix="givre-demo-") as scratch, SimulatedDevice(kind=args.kind, clock=Clock(args.scale)) as device:
        url = device.serve_pty()
        args.db = args.db or Path(scratch) / "demo.sqlite"
        clinic = ui.build_clinic(args, device=device, url=url, clock=device.clock)
        if args.kind == "spray" and CartridgeLedger(clinic.store, clinic.config).status() is None:
            CartridgeLedger(clinic.store, clinic.config).load("23g", date.today())
        return ui.run_app(clinic)


def check_headless(args: argparse.Namespace) -> None:
    """The demo's own bounds, before a simulator starts (`givre run` then checks them against the profile)."""
    if args.freeze_s is not None and not 0 < args.freeze_s <= HARD_MAX_FREEZE_S:
        raise UsageError(f"--freeze-s {args.freeze_s}: must be > 0 and <= {HARD_MAX_FREEZE_S:g} s",
                         "Leave it out for the profile's own duration (`givre profiles show ID`)")
    if args.cycles is not None and not 1 <= args.cycles <= MAX_CYCLES:
        raise UsageError(f"--cycles {args.cycles}: must be from 1 to {MAX_CYCLES}", "Leave it out for the profile's own plan")
    check_scale(args.scale)


def run_headless(args: argparse.Namespace) -> int:
    profile = args.profile or ("common-wart" if args.kind == "spray" else "superficial-bcc")
    with tempfile.TemporaryDirectory(prefix="givre-demo-") as scratch, SimulatedDevice(kind=args.kind, clock=Clock(args.scale)) as device:
        db = args.db or Path(scratch) / "demo.sqlite"
        if args.kind == "spray":
            with RecordStore(db) as store:
                ledger = CartridgeLedger(store, Config())
                if ledger.status() is None:
                    ledger.load("23g", date.today())
        print(f"simulated {args.kind} device on {device.serve_pty()}; record store {db}", file=sys.stderr if args.json else sys.stdout)
        argv = ["--port", device.url, "--profile", profile, "--site", "hand", "--patient", "DEMO-1", "--operator", "demo",
                "--description", "demo lesion", "--db", str(db), "--scale", str(args.scale), "--yes"]
        argv += ["--freeze-s", str(args.freeze_s)] if args.freeze_s is not None else []
        argv += ["--cycles", str(args.cycles)] if args.cycles is not None else []
        argv += ["--mark-halo-after", str(args.mark_halo_after)] if args.mark_halo_after is not None else []
        argv += ["--profiles", str(args.profiles)] if args.profiles is not None else []
        argv += ["--json"] if args.json else []
        parser = argparse.ArgumentParser(prog="givre demo")
        run_cli.add_arguments(parser)
        return run_cli.run(parser.parse_args(argv))
