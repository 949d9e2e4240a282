"""`givre bench`: registered as a command group through the `givre.commands` entry point, so
controller/ never imports bench/. Light to import: the measuring code loads only when it runs."""

from __future__ import annotations

import argparse
import json

from controller.cli.options import UsageError, add_json

HELP = "measure speed and latencies against the simulator"
ONE_DAY_EVENTS = 1000  # about one replayed clinic day (bench/aged_store.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json(parser, "print one JSON object (the contract for scripts and CI)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run every measurement with N busy processes (pure CPU loops) competing for the cores")
    parser.add_argument("--store-events", type=int, nargs="+", default=[], metavar="N",
                        help="also build record stores aged to N events (replayed clinic days) and time the readers, ARM and "
                             "`givre run` on each, e.g. --store-events 10000 100000 1000000 (the 'store' key)")
    parser.add_argument("--store-only", action="store_true", help="with --store-events: measure the stores alone")


def run(args: argparse.Namespace) -> int:
    from bench.run import measure  # noqa: PLC0415 - the UI toolkit and the simulator cost every other command's start

    if args.load < 0:
        raise UsageError(f"--load {args.load}: must be 0 or more", "Give the number of busy processes to run beside the bench")
    if any(n < ONE_DAY_EVENTS for n in args.store_events):
        raise UsageError(f"--store-events {min(args.store_events)}: a store needs at least one clinic day ({ONE_DAY_EVENTS} events)",
                         "Give sizes such as 10000 100000 1000000")
    results = measure(quick=args.quick, load=args.load, store_events=args.store_events, store_only=args.store_only)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        for key, value in sorted(results.items()):
            print(f"{key:28} {value}")
    return 0
