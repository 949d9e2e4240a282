"""`givre report`: the day report (sessions, acts and codes, cartridge use and cost, alarms, devices)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from controller.cli.options import add_config, add_db, add_json, local_day, open_store
from controller.config import ConfigError, load_config
from controller.errors import RecordError
from controller.practice.billing import BillingError, load_table
from controller.practice.report import build_report, report_html, report_text
from controller.records.history import ChainBroken
from controller.records.private_files import write_private
from controller.records.text import printable

HELP = "the day report: sessions, acts and codes, cartridge use and cost, alarms, devices (--html FILE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=local_day, default=None, metavar="YYYY-MM-DD", help="the local day (default: today)")
    add_db(parser)
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write a standalone web page with a chart of cartridge use")
    add_config(parser, ": its billing table prices the acts")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    try:
        table = load_table(load_config(args.config).billing_table)
        with open_store(args.db, writer=False) as store:
            report = build_report(store, args.date or date.today(), table)
        if args.html is not None:
            write_private(args.html, report_html(report).encode("utf-8"))
    except ChainBroken as exc:  # the day report reads history.verified_sessions: a broken chain is exit 1, like an export
        print(f"givre report: {exc}", file=sys.stderr)
        return 1
    except (RecordError, ConfigError, BillingError, OSError) as exc:
        print(f"givre report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True))
    else:
        sys.stdout.write(printable(report_text(report), keep_newlines=True))
        if args.html is not None:
            print(f"web page: {args.html}")
    return 0
