"""`givre run`: one lesion's whole protocol, headless, for scripts and CI. Prints one JSON object.

Virtual time (`--scale N`) only where the device runs on that same time: manual mode (a cotton tip,
timed by the host on real time) refuses it outright, and with --port connect() measures the
device's clock and refuses a device that does not run N times faster than the wall
(controller/procedure/recovery.py says why that can never pass a real-time device). Either refusal
is one line, before anything is recorded; a scaled session says its time_scale in the record.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.cli.options import (
    TRIGGERS,
    UsageError,
    add_config,
    add_db,
    add_json,
    add_port,
    add_profiles,
    add_scale,
    add_trigger,
    check_scale,
    open_store,
)
from controller.config import Config, ConfigError, load_config
from controller.errors import RecordError
from controller.practice.billing import BillingError, CcamTable, acts_of, load_table, propose
from controller.procedure.dose import BelowMinimumOverride
from controller.procedure.driver import Procedure, StartRefused
from controller.procedure.recovery import Recovered, TimeScaleMismatch, connect, connect_and_recover, recover
from controller.procedure.treatment import Treatment
from controller.records.history import view_of
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.photo import load_photo
from controller.records.pseudonym import PseudonymRefused, Role, check_pseudonym
from controller.records.store import RecordStore
from controller.records.text import printable
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from profiles.library import LoadedProfile, ProfileError, load_library
from profiles.schema import TimingStart

HELP = "one lesion's whole protocol, headless (scripts, CI)"
INPUT_FLAGS = {"region": "--site", "side": "--side", "detail": "--site-detail", "size_mm": "--size-mm", "photo": "--photo",
               "description": "--description", "patient": "--patient", "operator": "--operator"}
REGIONS = ", ".join(r.value for r in Region)


@dataclass(frozen=True)
class Plan:
    """The run the command line asks for, checked before anything connects or freezes."""

    config: Config
    table: CcamTable
    profile: LoadedProfile
    lesion: Lesion
    info: SessionInfo
    warnings: list[str]  # ids that look like a surname: said on stderr, not refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    add_port(where, required=False)
    where.add_argument("--manual", action="store_true", help="no device: a cotton-tip applicator, Givre only times it")
    parser.add_argument("--profile", required=True, help="lesion profile id (givre profiles list)")
    parser.add_argument("--site", required=True, help=f"body region: {REGIONS}")
    parser.add_argument("--side", choices=["left", "right", "midline"])
    parser.add_argument("--site-detail", default="", help="free text, e.g. 'second metatarsal head'")
    parser.add_argument("--description", default=None, help="short description (the record needs it or a photo)")
    parser.add_argument("--photo", type=Path, help="photo file (JPEG, PNG, WebP, TIFF), taken into the record store without its "
                                                   "EXIF/GPS, with its SHA-256")
    parser.add_argument("--size-mm", type=float)
    parser.add_argument("--patient", default="anonymous", help="pseudonymous patient id (never a name)")
    parser.add_argument("--operator", default="operator", help="pseudonymous operator id")
    parser.add_argument("--aesthetic", action="store_true",
                        help="an aesthetic act: not reimbursable, left out of the billing proposal")
    parser.add_argument("--cycles", type=int, help="fewer cycles than the profile plans")
    parser.add_argument("--freeze-s", type=float, help="freeze seconds per cycle, within the profile's range")
    parser.add_argument("--below-minimum-why", metavar="TEXT",
                        help="deliver less than the profile's minimum when a limit (device cap, clinic maximum) leaves less; "
                             "recorded with --operator as who and TEXT as why")
    add_trigger(parser)
    parser.add_argument("--mark-halo-after", type=float, metavar="S", help="halo profiles: mark the halo S seconds into each freeze")
    add_db(parser)
    add_profiles(parser)
    add_config(parser)
    add_scale(parser)
    parser.add_argument("--yes", action="store_true", help="confirm the patient is ready: required")
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (UsageError, ConfigError, ProfileError, RecordError, BillingError, TimeScaleMismatch, PseudonymRefused) as exc:
        print(f"givre run: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if not args.yes:
        raise UsageError("a run freezes for real, and --yes was not given", "Add --yes to confirm the patient and site are ready")
    check_scale(args.scale)
    if args.manual and args.scale != 1:
        raise UsageError(f"--scale {args.scale:g} with --manual: a cotton-tip applicator is timed on real time, never scaled",
                         "Leave --scale out in manual mode; virtual time is only for a simulator running at that scale (--port)")
    plan = _plan(args)
    for warning in plan.warnings:
        print(f"givre run: warning: {warning}", file=sys.stderr)
    clock = Clock(args.scale)
    with open_store(args.db, clock=clock) as store:
        link, recovered = (None, recover(store, None)) if args.manual else connect_and_recover(args.port, store, clock)
        try:
            return _treat(args, plan, store, link, recovered)
        finally:
            if link is not None:
                link.close()


def _plan(args: argparse.Namespace) -> Plan:
    config = load_config(args.config)
    table = load_table(config.billing_table)  # a bad table is reported before anything freezes
    ids: tuple[tuple[str, str, Role], ...] = (("--operator", args.operator, "operator"), ("--patient", args.patient, "patient"))
    warnings = [warning for flag, value, role in ids if (warning := check_pseudonym(flag, value, role, config.pseudonym_pattern))]
    library = load_library(args.profiles)
    loaded = library.get(args.profile)
    if loaded.profile.timing_start is TimingStart.HALO and args.mark_halo_after is None:
        raise UsageError(f"profile {loaded.profile.id} counts from the halo, which no one marks in a headless run",
                         "Give --mark-halo-after S (a scripted mark: simulator or bench only), or treat it from the UI")
    try:
        site = Site(region=args.site, side=args.side, detail=args.site_detail)
        description = args.description if args.description is not None else f"{loaded.profile.name_fr} ({loaded.profile.name_en})"
        lesion = Lesion(profile_id=args.profile, site=site, size_mm=args.size_mm, description=description, photo=args.photo,
                        reimbursable=not args.aesthetic)
        info = SessionInfo(operator=args.operator, patient=args.patient)
    except ValidationError as exc:
        raise _input_error(exc) from None
    if lesion.photo is not None:
        load_photo(lesion.photo, config.max_photo_bytes)  # refused here, before anything is recorded; stored by the treatment
    return Plan(config, table, loaded, lesion, info, warnings)


def _input_error(exc: ValidationError) -> UsageError:
    """The first bad input, named by its flag, with what is allowed."""
    first = exc.errors()[0]
    name = str(first["loc"][-1]) if first["loc"] else ""
    flag = INPUT_FLAGS.get(name, "--description/--photo")
    value = f" {first.get('input')!r}" if name else ""
    if name == "region":
        return UsageError(f"{flag}{value}: not a body region", f"Allowed: {REGIONS}")
    if name in ("patient", "operator"):  # never the value: it may be a name (check_pseudonym said the rest)
        return UsageError(f"{flag}: not a pseudonymous id: letters, digits, '.', '_' or '-' (1-40, no spaces)",
                          f"Use the practice's pseudonymous {name} number")
    return UsageError(f"{flag}{value}: {str(first['msg']).removeprefix('Value error, ')}", "See `givre run --help`")


def _treat(args: argparse.Namespace, plan: Plan, store: RecordStore, link: Link | None, recovered: list[Recovered]) -> int:
    treatment = Treatment(store, plan.config, store.clock, plan.info, link)
    treatment.start()
    reconnect = (lambda: connect(args.port, store.clock)) if link is not None else None
    procedure = treatment.lesion(plan.lesion, plan.profile, requested_freeze_s=args.freeze_s, cycles=args.cycles,
                                 trigger=TRIGGERS[args.trigger], auto=True, reconnect=reconnect,
                                 below_minimum=BelowMinimumOverride(plan.info.operator, args.below_minimum_why)
                                 if args.below_minimum_why else None)
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
    result = {"status": status, **_result(treatment, procedure, recovered, refused)}
    result["billing"] = propose(acts_of(view_of(store, treatment.session_id)), plan.table).as_record()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        _print_human(result)
    return 0 if status == "completed" else 1


def _from_t0(halo_to_off_ms: int | None) -> str:
    """A halo- or target-timed cycle's clinical dose beside the spray (gas) time; nothing for a timed spray."""
    return "" if halo_to_off_ms is None else f"of which {halo_to_off_ms} ms from T0 (clinical dose), "


def _maybe_mark_halo(procedure: Procedure, after_s: float | None) -> None:
    """The headless stand-in for the clinician's halo key."""
    if after_s is None or procedure.profile.target is not None or procedure.halo_marked:
        return
    elapsed = procedure.freeze_elapsed_s()
    if elapsed is not None and elapsed >= after_s:
        procedure.mark_halo()


def _result(treatment: Treatment, procedure: Procedure, recovered: list[Recovered], refused: list[str]) -> dict[str, Any]:
    """The `--json` contract, but for its status and billing."""
    ident = treatment.link.identity if treatment.link is not None else None
    count, head = treatment.store.head()
    return {
        "session_id": treatment.session_id,
        "time_scale": treatment.clock.scale,
        "device": {"serial": ident.serial, "kind": ident.kind.name.lower(), "firmware": ident.firmware} if ident else None,
        "profile": procedure.profile.id,
        "cycles": [c.summary() for c in procedure.cycles],
        "cartridge_seconds_used": round(procedure.cartridge_seconds_used, 3),
        "alarms": [{"code": a.code, "priority": a.priority.name, "text": a.text, "detail": a.detail} for a in procedure.alarms.history],
        "refused": refused,
        "warnings": procedure.warnings,
        "recovered": [r.line() for r in recovered],
        "record": {"db": str(treatment.store.path), "events": count, "head": head},
    }


def _print_human(result: dict[str, Any]) -> None:
    """The result for a person; every line through printable(): a device's or the record's text is data, never terminal commands."""
    device = result["device"]
    lines = [*result["recovered"], f"session {result['session_id']}: {result['status'].upper()} ({result['profile']}"
                                   f"{', device ' + device['serial'] if device else ', manual'})"]
    if result["time_scale"] != 1:
        lines.append(f"  time scale: virtual time x{result['time_scale']:g} (a simulator; recorded as such, not a clinical session)")
    lines += [f"  refused: {reason}" for reason in result["refused"]]
    lines += [f"  warning: {warning}" for warning in result["warnings"]]
    lines += [f"  cycle {c['cycle']}: requested {c['freeze_ms_requested']} ms (limited by {c['limited_by']}), "
              f"{'device' if c['measured_by'] == 'device' else 'host'} measured {c['freeze_ms_device']} ms, "
              f"{_from_t0(c['halo_to_off_ms'])}"
              f"ended {c['end_reason']}, thaw {'-' if c['thaw_ms'] is None else c['thaw_ms']} ms" for c in result["cycles"]]
    lines += [f"  alarm {alarm['priority']}: {alarm['text']}" for alarm in result["alarms"]]
    billing = result["billing"]
    lines.append(f"  proposed billing: {', '.join(a['code'] for a in billing['acts']) or 'none'}"
                 f"{' (aesthetic act: not reimbursable)' if billing['aesthetic_lesions'] else ''}; "
                 f"confirm with `givre records bill {result['session_id']} --accept`")
    lines.append(f"  cartridge seconds used: {result['cartridge_seconds_used']}; record {result['record']['db']} "
                 f"({result['record']['events']} events, head {result['record']['head'][:16]})")
    for line in lines:
        print(printable(line))
