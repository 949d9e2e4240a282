"""`givre run`: one lesion's whole protocol, headless, for scripts and CI. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.config import Config, ConfigError, default_db, load_config
from controller.errors import GivreError
from controller.practice.billing import BillingError, CcamTable, acts_of, load_table, propose
from controller.procedure.driver import Procedure, StartRefused
from controller.procedure.recovery import connect, connect_and_recover, recover
from controller.procedure.treatment import Treatment
from controller.records.history import view_of
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordError, RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import TriggerMode
from profiles.library import ProfileError, default_clinic_dir, load_library

INPUT_FLAGS = {"region": "--site", "side": "--side", "detail": "--site-detail", "size_mm": "--size-mm", "photo": "--photo",
               "description": "--description", "patient": "--patient", "operator": "--operator"}
TRIGGERS = {"host": TriggerMode.HOST, "trigger": TriggerMode.TRIGGER_START, "dead-man": TriggerMode.DEAD_MAN}


class UsageError(GivreError):
    """Bad input for the run: one line saying what is allowed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="device path, pty path or socket://HOST:PORT")
    where.add_argument("--manual", action="store_true", help="no device: a cotton-tip applicator, Givre only times it")
    parser.add_argument("--profile", required=True, help="lesion profile id (givre profiles list)")
    parser.add_argument("--site", required=True, help=f"body region: {', '.join(r.value for r in Region)}")
    parser.add_argument("--side", choices=["left", "right", "midline"])
    parser.add_argument("--site-detail", default="", help="free text, e.g. 'second metatarsal head'")
    parser.add_argument("--description", default=None, help="short description (the record needs it or a photo)")
    parser.add_argument("--photo", type=Path, help="photo file, copied into the record store with its SHA-256")
    parser.add_argument("--size-mm", type=float)
    parser.add_argument("--patient", default="anonymous", help="pseudonymous patient id (never a name)")
    parser.add_argument("--operator", default="operator", help="pseudonymous operator id")
    parser.add_argument("--aesthetic", action="store_true",
                        help="an aesthetic act: not reimbursable, left out of the billing proposal")
    parser.add_argument("--cycles", type=int, help="fewer cycles than the profile plans")
    parser.add_argument("--freeze-s", type=float, help="freeze seconds per cycle, within the profile's range")
    parser.add_argument("--trigger", choices=sorted(TRIGGERS), default="host", help="who opens the valve (default: host)")
    parser.add_argument("--mark-halo-after", type=float, metavar="S", help="halo profiles: mark the halo S seconds into each freeze")
    parser.add_argument("--db", type=Path, help=f"record store (default: {default_db()})")
    parser.add_argument("--profiles", type=Path, metavar="DIR", help="clinic profiles directory")
    parser.add_argument("--config", type=Path, help="clinic config file (TOML)")
    parser.add_argument("--scale", type=float, default=1.0, help="virtual time for tests: this many times faster than the wall")
    parser.add_argument("--yes", action="store_true", help="confirm the patient is ready: required")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (UsageError, ConfigError, ProfileError, RecordError, BillingError) as exc:
        print(f"givre run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("add --yes to confirm the patient and site are ready: a run freezes for real")
    if args.scale <= 0:
        raise UsageError(f"--scale {args.scale}: must be > 0")
    config = load_config(args.config)
    table = load_table(config.billing_table)  # a bad table is reported before anything freezes
    library = load_library(args.profiles if args.profiles is not None else default_clinic_dir())
    loaded = library.get(args.profile)
    lesion, info = _inputs(args, loaded.profile.name_fr, loaded.profile.name_en)
    clock = Clock(args.scale)
    db = args.db or default_db()
    with RecordStore(db, clock=clock) as store:
        link, recovered = (None, recover(store, None)) if args.manual else connect_and_recover(args.port, store, clock)
        try:
            return _treat(args, config, store, clock, link, info, lesion, loaded, recovered, db, table)
        finally:
            if link is not None:
                link.close()


def _inputs(args: argparse.Namespace, name_fr: str, name_en: str) -> tuple[Lesion, SessionInfo]:
    try:
        site = Site(region=args.site, side=args.side, detail=args.site_detail)
        description = args.description if args.description is not None else f"{name_fr} ({name_en})"
        lesion = Lesion(profile_id=args.profile, site=site, size_mm=args.size_mm, description=description, photo=args.photo,
                        reimbursable=not args.aesthetic)
        info = SessionInfo(operator=args.operator, patient=args.patient)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first["loc"] else ""
        flag = INPUT_FLAGS.get(name, "--description/--photo")
        if name == "region":
            message = f"not a body region; allowed: {', '.join(r.value for r in Region)}"
        elif name in ("patient", "operator"):
            message = "must be a pseudonymous id (letters, digits, '.', '_', '-'; no spaces, never a name)"
        else:
            message = str(first["msg"]).removeprefix("Value error, ")
        value = f" {first.get('input')!r}" if name else ""
        raise UsageError(f"{flag}{value}: {message}") from None
    return lesion, info


def _treat(args: argparse.Namespace, config: Config, store: RecordStore, clock: Clock, link: Link | None,
           info: SessionInfo, lesion: Lesion, loaded: Any, recovered: list[Any], db: Path, table: CcamTable) -> int:
    treatment = Treatment(store, config, clock, info, link)
    treatment.start()
    reconnect = (lambda: connect(args.port, clock)) if link is not None else None
    procedure = treatment.lesion(lesion, loaded, requested_freeze_s=args.freeze_s, cycles=args.cycles,
                                 trigger=TRIGGERS[args.trigger], auto=True, reconnect=reconnect)
    previous = {sig: signal.signal(sig, lambda *_: procedure.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    refused: list[str] = []
    try:
        procedure.arm()
        while not procedure.finished:
            procedure.tick()
            _maybe_mark_halo(procedure, args.mark_halo_after)
    except StartRefused as exc:
        refused = exc.reasons
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if procedure.link is not None and procedure.link is not link:
        procedure.link.close()  # a link the procedure opened to reconnect: ended with BYE like ours
    status = treatment.end()
    result = _result(status, treatment, procedure, recovered, refused, store, db)
    result["billing"] = propose(acts_of(view_of(store, treatment.session_id)), table).as_record()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        _print_human(result)
    return 0 if status == "completed" else 1


def _maybe_mark_halo(procedure: Procedure, after_s: float | None) -> None:
    """The headless stand-in for the clinician's halo key."""
    if after_s is None or procedure.profile.target is not None or procedure.halo_marked:
        return
    elapsed = procedure.freeze_elapsed_s()
    if elapsed is not None and elapsed >= after_s:
        procedure.mark_halo()


def _result(status: str, treatment: Treatment, procedure: Procedure, recovered: list[Any], refused: list[str],
            store: RecordStore, db: Path) -> dict[str, Any]:
    ident = treatment.link.identity if treatment.link is not None else None
    count, head = store.head()
    return {
        "status": status,
        "session_id": treatment.session_id,
        "device": {"serial": ident.serial, "kind": ident.kind.name.lower(), "firmware": ident.firmware} if ident else None,
        "profile": procedure.profile.id,
        "cycles": [c.summary() for c in procedure.cycles],
        "cartridge_seconds_used": round(procedure.cartridge_seconds_used, 3),
        "alarms": [{"code": a.code, "priority": a.priority.name, "text": a.text, "detail": a.detail} for a in procedure.alarms.history],
        "refused": refused,
        "warnings": procedure.warnings,
        "recovered": [r.line() for r in recovered],
        "record": {"db": str(db), "events": count, "head": head},
    }


def _print_human(result: dict[str, Any]) -> None:
    for line in result["recovered"]:
        print(line)
    device = result["device"]
    print(f"session {result['session_id']}: {result['status'].upper()} ({result['profile']}"
          f"{', device ' + device['serial'] if device else ', manual'})")
    for reason in result["refused"]:
        print(f"  refused: {reason}")
    for warning in result["warnings"]:
        print(f"  warning: {warning}")
    for c in result["cycles"]:
        print(f"  cycle {c['cycle']}: requested {c['freeze_ms_requested']} ms (limited by {c['limited_by']}), "
              f"{'device' if c['measured_by'] == 'device' else 'host'} measured {c['freeze_ms_device']} ms, "
              f"ended {c['end_reason']}, thaw {'-' if c['thaw_ms'] is None else c['thaw_ms']} ms")
    for alarm in result["alarms"]:
        print(f"  alarm {alarm['priority']}: {alarm['text']}")
    billing = result["billing"]
    print(f"  proposed billing: {', '.join(a['code'] for a in billing['acts']) or 'none'}"
          f"{' (aesthetic act: not reimbursable)' if billing['aesthetic_lesions'] else ''}; "
          f"confirm with `givre records bill {result['session_id']} --accept`")
    print(f"  cartridge seconds used: {result['cartridge_seconds_used']}; record {result['record']['db']} "
          f"({result['record']['events']} events, head {result['record']['head'][:16]})")
