"""`givre cartridge load|status`: the gas cartridge in the ledger."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from controller.cli.options import add_config, add_db, add_json, local_day, open_store
from controller.config import ConfigError, load_config
from controller.errors import RecordError
from controller.records.ledger import CartridgeLedger, LedgerError

HELP = "the gas cartridge: load, status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="register a new cartridge")
    load.add_argument("--size", required=True, help="8g, 16g or 23g (or a size from the config)")
    load.add_argument("--opened", type=local_day, default=None, help="YYYY-MM-DD (default: today)")
    status = actions.add_parser("status", help="remaining seconds, estimated lesions left, keeping time")
    for sub in (load, status):
        add_db(sub)
        add_config(sub)
        add_json(sub)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        with open_store(args.db, writer=args.action == "load") as store:  # status reads while the UI writes
            ledger = CartridgeLedger(store, config)
            status = ledger.load(args.size, args.opened or date.today()) if args.action == "load" else ledger.status()
    except (RecordError, ConfigError, LedgerError) as exc:
        print(f"givre cartridge: {exc}", file=sys.stderr)
        return 2
    if status is None:
        print(json.dumps(None) if args.json else "no cartridge registered: givre cartridge load --size 23g")
        return 1
    if args.json:
        print(json.dumps(status.as_dict(), sort_keys=True))
        return 0
    print(f"cartridge {status.size} ({status.cartridge_id}), opened {status.opened}, {status.age_days} day(s) ago")
    print(f"  {status.remaining_s:g} s left of {status.capacity_s:g} s ({status.capacity_basis}); used {status.used_s:g} s, "
          f"reserved {status.reserved_s:g} s")
    print(f"  about {status.estimated_lesions_left} lesions left; {status.cost_per_lesion_eur:.2f} EUR per lesion")
    if status.past_keeping_time:
        print(f"  WARNING: past its keeping time of {status.keeping_days} days: load a new cartridge")
    print(f"  {status.reminder}")
    return 0
