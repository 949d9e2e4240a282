"""`givre bench`: registered as a command group through the `givre.commands` entry point, so
controller/ never imports bench/. Light to import: the measuring code loads only when it runs."""

from __future__ import annotations

import argparse
import json

from controller.cli.options import UsageError, add_json

HELP = "measure speed and latencies against the simulator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json(parser, "print one JSON object (the contract for scripts and CI)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="run every measurement with N busy processes (pure CPU loops) competing for the cores")


def run(args: argparse.Namespace) -> int:
    from bench.run import measure  # noqa: PLC0415 - the UI toolkit and the simulator cost every other command's start

    if args.load < 0:
        raise UsageError(f"--load {args.load}: must be 0 or more", "Give the number of busy processes to run beside the bench")
    results = measure(quick=args.quick, load=args.load)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        for key, value in sorted(results.items()):
            print(f"{key:28} {value}")
    return 0
