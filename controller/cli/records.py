"""`givre records list|show|verify|export|bill` and `givre cartridge load|status`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.config import ConfigError, default_db, load_config
from controller.practice.billing import BillingError, acts_of, confirm, load_table, parse_choice, propose
from controller.practice.export import FORMATS, ExportRefused, checked_sessions, to_csv, to_fhir, to_json
from controller.practice.fhir import FhirError
from controller.practice.report import build_report, report_html, report_text
from controller.records.history import ChainBroken, load_sessions
from controller.records.ledger import CartridgeLedger, LedgerError
from controller.records.lesion import SessionInfo
from controller.records.store import RecordError, RecordStore, write_private


def add_records_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sessions, newest last")
    show = actions.add_parser("show", help="one session's events")
    show.add_argument("session_id")
    verify = actions.add_parser("verify", help="walk the hash chain; exit 1 and name the first bad event if tampered")
    export = actions.add_parser("export", help="sessions as FHIR R4, CSV (one row per cycle) or JSON; refused if the chain is broken")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--session", metavar="ID", help="one session (default: all)")
    export.add_argument("--since", type=_day, metavar="DATE", help="sessions started on or after this local day (YYYY-MM-DD)")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (0600, atomically) instead of standard output")
    export.add_argument("--bom", action="store_true", help="CSV: start with a UTF-8 byte-order mark (older spreadsheets)")
    export.add_argument("--validate", action="store_true", help="FHIR: check each Bundle with fhir.resources (pip install 'givre[fhir]')")
    export.add_argument("--config", type=Path, help="clinic config file (TOML): its billing table names the CCAM acts")
    bill = actions.add_parser("bill", help="a session's proposed CCAM acts; --accept or --code records the clinician's choice")
    bill.add_argument("session_id")
    choice = bill.add_mutually_exclusive_group()
    choice.add_argument("--accept", action="store_true", help="record the proposal as it is")
    choice.add_argument("--code", nargs="+", metavar="CODE[:ASSOC]", help="record these acts instead, e.g. QZNP012:1 QANP007:2")
    choice.add_argument("--no-billing", action="store_true", help="record that nothing is billed for this session")
    bill.add_argument("--by", default="operator", help="pseudonymous id of the clinician confirming")
    bill.add_argument("--config", type=Path, help="clinic config file (TOML)")
    for sub in (listing, show, verify, export, bill):
        sub.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
    for sub in (listing, show, verify, bill):
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
        if args.action == "bill":
            return _bill(args)
        with RecordStore(args.db or default_db(), writer=False) as store:
            if args.action == "verify":
                return _verify(store, args.json)
            if args.action == "export":
                return _export(store, args)
            sessions = summarise(store)
            if args.action == "list":
                return _list(sessions, args.json)
            return _show(store, sessions, args.session_id, args.json)
    except ExportRefused as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 1
    except (RecordError, ConfigError, BillingError, FhirError, OSError) as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 2


def _export(store: RecordStore, args: argparse.Namespace) -> int:
    sessions = checked_sessions(store, args.session, args.since)
    if args.format == "csv":
        text = to_csv(sessions, bom=args.bom)
    elif args.format == "json":
        text = to_json(sessions, store)
    else:
        table = load_table(load_config(args.config).billing_table)
        text = to_fhir(sessions, table, store.photos_dir, validate=args.validate, single=args.session is not None)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_private(args.out, text.encode("utf-8"))
        print(f"{len(sessions)} session(s) exported as {args.format} to {args.out}", file=sys.stderr)
    return 0


def _bill(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    table = load_table(config.billing_table)
    writing = bool(args.accept or args.code or args.no_billing)
    with RecordStore(args.db or default_db(), writer=writing) as store:
        views = load_sessions(store, args.session_id)
        if not views:
            raise ExportRefused(f"{store.path}: no session {args.session_id!r}; see `givre records list`")
        (view,) = views
        proposal = propose(acts_of(view), table)
        recorded = view.billing
        if writing:
            try:
                SessionInfo(operator=args.by, patient=view.patient)  # the same pseudonymous-id rule as the operator's
            except ValidationError:
                raise BillingError(f"--by {args.by!r}: must be a pseudonymous id (letters, digits, '.', '_', '-'; "
                                   "no spaces, never a name)") from None
            chosen = None if args.accept else ([] if args.no_billing else parse_choice(args.code, table))
            recorded = confirm(store, view.session_id, proposal, chosen, table, by=args.by)
    if args.json:
        print(json.dumps({"session_id": view.session_id, "proposal": proposal.as_record(), "confirmed": recorded}, ensure_ascii=False))
        return 0
    print(f"session {view.session_id}: proposed {proposal.line()}")
    for act in proposal.acts:
        print(f"  {act.code}: {act.label} ({act.lesions} lesion(s))")
    for line in (*proposal.not_billed, *proposal.warnings):
        print(f"  ! {line}")
    if recorded is None:
        print("  not confirmed yet: --accept, --code CODE[:ASSOC] ... or --no-billing")
    else:
        acts = ", ".join(f"{a['code']}" + (f" (assoc. {a['association_code']})" if a["association_code"] else "") for a in recorded["chosen"])
        print(f"  confirmed by {recorded['by']}: {acts or 'nothing billed'}{' (changed from the proposal)' if recorded['changed'] else ''}")
    return 0


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
    """One line of facts per session (the `records list` contract)."""
    sessions: dict[str, dict[str, Any]] = {}
    for view in load_sessions(store):
        sessions[view.session_id] = {
            "session_id": view.session_id, "started": view.started, "patient": view.patient, "operator": view.operator,
            "device": (view.device or {}).get("serial"), "status": view.status, "lesions": [lesion.profile_id for lesion in view.lesions],
            "cycles": len(view.cycles), **({"ended": view.ended} if view.ended else {}),
        }
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


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=_day, default=None, metavar="YYYY-MM-DD", help="the local day (default: today)")
    parser.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write a standalone web page with a chart of cartridge use")
    parser.add_argument("--config", type=Path, help="clinic config file (TOML): its billing table prices the acts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_report(args: argparse.Namespace) -> int:
    try:
        table = load_table(load_config(args.config).billing_table)
        with RecordStore(args.db or default_db(), writer=False) as store:
            report = build_report(store, args.date or date.today(), table)
        if args.html is not None:
            write_private(args.html, report_html(report).encode("utf-8"))
    except ChainBroken as exc:
        print(f"givre report: {exc}", file=sys.stderr)
        return 1
    except (RecordError, ConfigError, BillingError, OSError) as exc:
        print(f"givre report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True))
    else:
        sys.stdout.write(report_text(report))
        if args.html is not None:
            print(f"web page: {args.html}")
    return 0
