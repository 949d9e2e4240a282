"""`givre records list|show|verify` and `givre cartridge load|status`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from controller.config import ConfigError, default_db, load_config
from controller.ledger import CartridgeLedger, LedgerError
from controller.records import RecordError, RecordStore


def add_records_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sessions, newest last")
    show = actions.add_parser("show", help="one session's events")
    show.add_argument("session_id")
    verify = actions.add_parser("verify", help="walk the hash chain; exit 1 and name the first bad event if tampered")
    for sub in (listing, show, verify):
        sub.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
        sub.add_argument("--json", action="store_true")


def add_cartridge_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser("load", help="register a new cartridge")
    load.add_argument("--size", required=True, help="8g, 16g or 23g (or a size from the config)")
    load.add_argument("--opened", type=_day, default=None, help="YYYY-MM-DD (default: today)")
    status = actions.add_parser("status", help="remaining seconds, estimated lesions left, keeping time")
    for sub in (load, status):
        sub.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
        sub.add_argument("--config", type=Path, help="clinic config file (TOML)")
        sub.add_argument("--json", action="store_true")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date as YYYY-MM-DD") from None


def run_records(args: argparse.Namespace) -> int:
    try:
        with RecordStore(args.db or default_db(), writer=False) as store:
            if args.action == "verify":
                return _verify(store, args.json)
            sessions = summarise(store)
            if args.action == "list":
                return _list(sessions, args.json)
            return _show(store, sessions, args.session_id, args.json)
    except RecordError as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 2


def run_cartridge(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        with RecordStore(args.db or default_db()) as store:
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


def summarise(store: RecordStore) -> dict[str, dict[str, Any]]:
    sessions: dict[str, dict[str, Any]] = {}
    for event in store.events():
        sid = event.session_id
        if sid is None:
            continue
        p = event.payload
        if event.kind == "session_started":
            sessions[sid] = {"session_id": sid, "started": event.ts_utc, "patient": p["patient"], "operator": p["operator"],
                             "device": (p.get("device") or {}).get("serial"), "status": "in progress", "lesions": [], "cycles": 0}
        elif sid not in sessions:
            continue
        elif event.kind == "lesion_recorded":
            sessions[sid]["lesions"].append(p["profile"]["id"])
        elif event.kind == "freeze_result":
            sessions[sid]["cycles"] += 1
        elif event.kind == "session_ended":
            sessions[sid]["status"] = p["status"]
            sessions[sid]["ended"] = event.ts_utc
    return sessions


def _list(sessions: dict[str, dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(list(sessions.values()), ensure_ascii=False))
        return 0
    for s in sessions.values():
        print(f"{s['session_id']}  {s['started'][:19]}  {s['status']:11} patient {s['patient']:12} "
              f"{', '.join(s['lesions']) or '-'} ({s['cycles']} cycles) device {s['device'] or 'manual'}")
    return 0


def _show(store: RecordStore, sessions: dict[str, dict[str, Any]], session_id: str, as_json: bool) -> int:
    if session_id not in sessions:
        print(f"givre records: no session {session_id!r} in {store.path}; see `givre records list`", file=sys.stderr)
        return 1
    events = list(store.events(session_id))
    if as_json:
        print(json.dumps({"session": sessions[session_id], "events": [
            {"seq": e.seq, "ts_utc": e.ts_utc, "kind": e.kind, "payload": e.payload} for e in events]}, ensure_ascii=False))
        return 0
    for e in events:
        print(f"{e.seq:6} {e.ts_utc}  {e.kind:22} {json.dumps(e.payload, ensure_ascii=False)}")
    return 0


def _verify(store: RecordStore, as_json: bool) -> int:
    bad = store.verify()
    count, head = store.head()
    if as_json:
        print(json.dumps({"ok": bad is None, "events": count, "head": head,
                          "first_bad_event": None if bad is None else {"seq": bad.seq, "kind": bad.kind, "ts_utc": bad.ts_utc}}))
    elif bad is None:
        print(f"ok: {count} events, the chain is intact; head {head}")
    else:
        print(f"TAMPERED: event {bad.seq} ({bad.kind}, {bad.ts_utc}) does not follow the chain; "
              "everything from it on is untrustworthy")
    return 0 if bad is None else 1
