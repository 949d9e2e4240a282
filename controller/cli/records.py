"""`givre records list|show|verify|setup-keys|export|bill|rebuild|erase`: the record store read back, exported,
billed, and one patient erased (their key destroyed: docs/records.md, "Erasure and encryption at rest")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from controller.cli import sealing
from controller.cli.options import UsageError, add_config, add_db, add_json, local_day, open_store
from controller.config import ConfigError, load_config
from controller.errors import RecordError
from controller.practice.billing import BillingError, acts_of, confirm, load_table, parse_choice, propose
from controller.practice.export import FORMATS, ExportRefused, FhirOptions, checked_sessions, to_csv, to_fhir, to_json
from controller.practice.fhir import FhirError
from controller.records.history import load_sessions, revealed
from controller.records.private_files import write_private
from controller.records.pseudonym import PseudonymRefused, check_pseudonym, personal_data_kind
from controller.records.seal import SealKeyError
from controller.records.store import RecordStore
from controller.records.text import printable

HELP = "sessions in the record store: list, show, verify, setup-keys, export, bill, rebuild, erase"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sessions, newest last")
    show = actions.add_parser("show", help="one session's events")
    show.add_argument("session_id")
    verify = sealing.add_verify(actions)
    sealing.add_setup_keys(actions)
    export = actions.add_parser("export", help="sessions as FHIR R4, CSV (one row per cycle) or JSON; refused if the chain is broken")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--session", metavar="ID", help="one session (default: all)")
    export.add_argument("--since", type=local_day, metavar="DATE", help="sessions started on or after this local day (YYYY-MM-DD)")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (0600, atomically) instead of standard output")
    export.add_argument("--bom", action="store_true", help="CSV: start with a UTF-8 byte-order mark (older spreadsheets)")
    export.add_argument("--validate", action="store_true",
                        help="FHIR: check each Bundle against the official R4 JSON schema (pip install 'givre[fhir]')")
    export.add_argument("--embed-photos", action="store_true",
                        help="FHIR: each Media carries the image itself (base64), not only its reference")
    export.add_argument("--fr-document", action="store_true",
                        help="FHIR: each session as an FR Document Core-shaped document Bundle (Composition first, meta.profile)")
    add_config(export, ": its billing table names the CCAM acts")
    rebuild = actions.add_parser("rebuild", help="rebuild the record's indexes (projections) from its event log; says if they differed")
    bill = actions.add_parser("bill", help="a session's proposed CCAM acts; --accept or --code records the clinician's choice")
    bill.add_argument("session_id")
    choice = bill.add_mutually_exclusive_group()
    choice.add_argument("--accept", action="store_true", help="record the proposal as it is")
    choice.add_argument("--code", nargs="+", metavar="CODE[:ASSOC]", help="record these acts instead, e.g. QZNP012:1 QANP007:2")
    choice.add_argument("--no-billing", action="store_true", help="record that nothing is billed for this session")
    bill.add_argument("--by", default="operator", help="pseudonymous id of the clinician confirming")
    add_config(bill)
    erase = actions.add_parser("erase", help="erase one patient: destroy their key, so their id, descriptions, site details and "
                                             "photos read 'erased'; recorded in the chain, which stays whole")
    erase.add_argument("--patient", required=True, metavar="ID", help="the patient's pseudonymous id, as typed at their sessions")
    erase.add_argument("--why", required=True, metavar="TEXT",
                       help="the ground, recorded in clear (e.g. 'GDPR art. 17 request', 'retention period over'); never who")
    erase.add_argument("--by", default="operator", help="pseudonymous id of the clinician erasing")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_config(erase, ": its pseudonym pattern checks --by")
    for sub in (listing, show, verify, export, bill, rebuild, erase):
        add_db(sub)
    add_json(listing, "print a JSON list")
    for sub in (show, verify, bill, rebuild):
        add_json(sub)


def run(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.action](args)
    except ExportRefused as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 1
    except (RecordError, SealKeyError, ConfigError, BillingError, FhirError, PseudonymRefused, OSError) as exc:
        print(f"givre records: {exc}", file=sys.stderr)
        return 2


def _reader(args: argparse.Namespace) -> RecordStore:
    return open_store(args.db, writer=False)


def _list(args: argparse.Namespace) -> int:
    """Each session printed as the store reads it, page by page (a large record is never held whole);
    --json writes the array as it goes, the same bytes as one json.dumps of the list."""
    with _reader(args) as store:
        if args.json:
            sys.stdout.write("[")
            for n, s in enumerate(store.session_summaries()):
                sys.stdout.write((", " if n else "") + json.dumps(s, ensure_ascii=False))
            sys.stdout.write("]\n")
            return 0
        for s in store.session_summaries():
            print(printable(f"{s['session_id']}  {s['started'][:19]}  {s['status']:11} patient {s['patient']:12} "
                            f"{', '.join(s['lesions']) or '-'} ({s['cycles']} cycles) device {s['device'] or 'manual'}"))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        session = next(store.session_summaries(args.session_id), None)
        if session is None:
            print(f"givre records: no session {args.session_id!r} in {store.path}; see `givre records list`", file=sys.stderr)
            return 1
        events = list(revealed(store, store.events(args.session_id)))
    if args.json:
        print(json.dumps({"session": session, "events": [
            {"seq": e.seq, "ts_utc": e.ts_utc, "kind": e.kind, "payload": e.payload} for e in events]}, ensure_ascii=False))
        return 0
    scale = session["time_scale"]
    print(f"session {args.session_id}: time_scale {scale:g}"
          + (" (virtual time: recorded against a simulator, not a clinical session)" if scale != 1 else " (real time)"))
    for e in events:
        print(printable(f"{e.seq:6} {e.ts_utc}  {e.kind:22} {json.dumps(e.payload, ensure_ascii=False)}"))
    return 0


def _export(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        sessions = checked_sessions(store, args.session, args.since)
        if args.format == "csv":
            text = to_csv(sessions, bom=args.bom)
        elif args.format == "json":
            text = to_json(sessions, store)
        else:
            table = load_table(load_config(args.config).billing_table)
            options = FhirOptions(validate=args.validate, single=args.session is not None, embed_photos=args.embed_photos,
                                  fr_document=args.fr_document)
            text = to_fhir(sessions, table, store.read_photo, options)
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


def _rebuild(args: argparse.Namespace) -> int:
    """The projections are derived: rebuilding them from the log is always safe. Tables that differ
    from their rebuild were wrong (a store edited outside Givre, or a Givre bug): said, and fixed."""
    with open_store(args.db) as store:
        before = store.projection_snapshot()
        folded = store.rebuild_projections()
        differed = [table for table, rows in store.projection_snapshot().items() if rows != before[table]]
    if args.json:
        print(json.dumps({"events": folded, "differed": differed}))
    elif differed:
        print(f"rebuilt from {folded} events; these indexes did not match the log and are now fixed: {', '.join(differed)}")
    else:
        print(f"rebuilt from {folded} events; every index matched the log")
    return 0


def _erase(args: argparse.Namespace) -> int:
    """Destroy one patient's key (and photos) and record it; asks first unless --yes. The patient id
    is never printed: it is what is being erased."""
    config = load_config(args.config)
    if (warning := check_pseudonym("--by", args.by, "operator", config.pseudonym_pattern)) is not None:
        print(f"givre records: warning: {warning}", file=sys.stderr)
    if not args.why.strip() or (kind := personal_data_kind(args.why)) is not None:
        raise UsageError(f"--why: the reason {'is empty' if not args.why.strip() else kind}; allowed: the ground for the "
                         "erasure, recorded in clear", "Say why, never who: e.g. 'GDPR art. 17 request' or 'retention period over'")
    with open_store(args.db) as store:
        key_id, sessions = store.patient_sessions(args.patient)
        if not args.yes and not _confirmed(f"Erase this patient for good: {len(sessions)} session(s); their id, descriptions, "
                                           "site details and photos become unreadable? [y/N] "):
            print("givre records: nothing erased", file=sys.stderr)
            return 1
        store.erase_patient(args.patient, args.why.strip(), args.by)
    print(f"erased: key {key_id}, {len(sessions)} session(s) {' '.join(sessions) or '-'}; recorded as patient_erased. "
          f"Backups of {store.personal.path.name} made before now still hold the key: apply the same erasure to them")
    return 0


def _confirmed(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:  # no terminal to answer: not confirmed
        return False


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list, "show": _show, "verify": sealing.verify, "setup-keys": sealing.setup_keys, "export": _export, "bill": _bill,
    "rebuild": _rebuild, "erase": _erase,
}
