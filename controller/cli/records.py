"""`givre records list|show|verify|export|bill`: the record store read back, exported and billed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.cli.options import add_config, add_db, add_json, local_day, open_store
from controller.config import ConfigError, load_config
from controller.practice.billing import BillingError, acts_of, confirm, load_table, parse_choice, propose
from controller.practice.export import FORMATS, ExportRefused, checked_sessions, to_csv, to_fhir, to_json
from controller.practice.fhir import FhirError
from controller.records.history import load_sessions
from controller.records.private_files import write_private
from controller.records.pseudonym import PseudonymRefused, check_pseudonym
from controller.records.store import RecordError, RecordStore
from controller.records.text import printable

HELP = "sessions in the record store: list, show, verify, export, bill"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sessions, newest last")
    show = actions.add_parser("show", help="one session's events")
    show.add_argument("session_id")
    verify = actions.add_parser("verify", help="walk the hash chain; exit 1 and name the first bad event if tampered")
    export = actions.add_parser("export", help="sessions as FHIR R4, CSV (one row per cycle) or JSON; refused if the chain is broken")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--session", metavar="ID", help="one session (default: all)")
    export.add_argument("--since", type=local_day, metavar="DATE", help="sessions started on or after this local day (YYYY-MM-DD)")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (0600, atomically) instead of standard output")
    export.add_argument("--bom", action="store_true", help="CSV: start with a UTF-8 byte-order mark (older spreadsheets)")
    export.add_argument("--validate", action="store_true", help="FHIR: check each Bundle with fhir.resources (pip install 'givre[fhir]')")
    add_config(export, ": its billing table names the CCAM acts")
    bill = actions.add_parser("bill", help="a session's proposed CCAM acts; --accept or --code records the clinician's choice")
    bill.add_argument("session_id")
    choice = bill.add_mutually_exclusive_group()
    choice.add_argument("--accept", action="store_true", help="record the proposal as it is")
    choice.add_argument("--code", nargs="+", metavar="CODE[:ASSOC]", help="record these acts instead, e.g. QZNP012:1 QANP007:2")
    choice.add_argument("--no-billing", action="store_true", help="record that nothing is billed for this session")
    bill.add_argument("--by", default="operator", help="pseudonymous id of the clinician confirming")
    add_config(bill)
    for sub in (listing, show, verify, export, bill):
        add_db(sub)
    add_json(listing, "print a JSON list")
    for sub in (show, verify, bill):
        add_json(sub)


def run(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.action](args)
    except ExportRefused as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 1
    except (RecordError, ConfigError, BillingError, FhirError, PseudonymRefused, OSError) as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 2


def _reader(args: argparse.Namespace) -> RecordStore:
    return open_store(args.db, writer=False)


def summarise(store: RecordStore) -> dict[str, dict[str, Any]]:
    """One line of facts per session (the `records list` contract)."""
    sessions: dict[str, dict[str, Any]] = {}
    for view in load_sessions(store):
        sessions[view.session_id] = {
            "session_id": view.session_id, "started": view.started, "patient": view.patient, "operator": view.operator,
            "device": (view.device or {}).get("serial"), "status": view.status, "lesions": [lesion.profile_id for lesion in view.lesions],
            "cycles": len(view.cycles), "time_scale": view.time_scale, **({"ended": view.ended} if view.ended else {}),
        }
    return sessions


def _list(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        sessions = summarise(store)
    if args.json:
        print(json.dumps(list(sessions.values()), ensure_ascii=False))
        return 0
    for s in sessions.values():
        print(printable(f"{s['session_id']}  {s['started'][:19]}  {s['status']:11} patient {s['patient']:12} "
                        f"{', '.join(s['lesions']) or '-'} ({s['cycles']} cycles) device {s['device'] or 'manual'}"))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        sessions = summarise(store)
        if args.session_id not in sessions:
            print(f"givre records: no session {args.session_id!r} in {store.path}; see `givre records list`", file=sys.stderr)
            return 1
        events = list(store.events(args.session_id))
    if args.json:
        print(json.dumps({"session": sessions[args.session_id], "events": [
            {"seq": e.seq, "ts_utc": e.ts_utc, "kind": e.kind, "payload": e.payload} for e in events]}, ensure_ascii=False))
        return 0
    scale = sessions[args.session_id]["time_scale"]
    print(f"session {args.session_id}: time_scale {scale:g}"
          + (" (virtual time: recorded against a simulator, not a clinical session)" if scale != 1 else " (real time)"))
    for e in events:
        print(printable(f"{e.seq:6} {e.ts_utc}  {e.kind:22} {json.dumps(e.payload, ensure_ascii=False)}"))
    return 0


def _verify(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        bad = store.verify()
        count, head = store.head()
    if args.json:
        print(json.dumps({"ok": bad is None, "events": count, "head": head,
                          "first_bad_event": None if bad is None else {"seq": bad.seq, "kind": bad.kind, "ts_utc": bad.ts_utc}}))
    elif bad is None:
        print(f"ok: {count} events, the chain is intact; head {head}")
    else:
        print(f"TAMPERED: event {bad.seq} ({bad.kind}, {bad.ts_utc}) does not follow the chain; "
              "everything from it on is untrustworthy")
    return 0 if bad is None else 1


def _export(args: argparse.Namespace) -> int:
    with _reader(args) as store:
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
    if writing and (warning := check_pseudonym("--by", args.by, "operator", config.pseudonym_pattern)) is not None:
        print(f"givre records: warning: {warning}", file=sys.stderr)
    with open_store(args.db, writer=writing) as store:
        views = load_sessions(store, args.session_id)
        if not views:
            raise ExportRefused(f"{store.path}: no session {args.session_id!r}", "See `givre records list`")
        (view,) = views
        proposal = propose(acts_of(view), table)
        recorded = view.billing
        if writing:
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
        acts = ", ".join(a["code"] + (f" (assoc. {a['association_code']})" if a["association_code"] else "") for a in recorded["chosen"])
        changed = " (changed from the proposal)" if recorded["changed"] else ""
        print(printable(f"  confirmed by {recorded['by']}: {acts or 'nothing billed'}{changed}"))
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list, "show": _show, "verify": _verify, "export": _export, "bill": _bill,
}
