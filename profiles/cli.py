"""`givre profiles list|show|check`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from profiles.library import (
    InvalidProfiles,
    Library,
    LoadedProfile,
    UnknownProfile,
    add_files,
    default_clinic_dir,
    load_builtins,
    load_library,
)
from profiles.schema import TimingStart

HELP = "lesion profiles: list, show, check"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every profile: id, names, device kinds, freeze range, cycles, origin")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    show = actions.add_parser("show", help="one profile in full, with the source of every figure")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    check = actions.add_parser("check", help="validate profile files; exit 0 when all are valid")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    for sub in (listing, show):
        sub.add_argument("--profiles", type=Path, metavar="DIR", help=f"clinic profiles directory (default: {default_clinic_dir()})")


def run(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _check(args.files)
    try:
        library = load_library(args.profiles)
    except InvalidProfiles as exc:
        print("givre profiles: the clinic profiles are not valid; fix these, or check them with `givre profiles check`:")
        print(exc)
        return 1
    if args.action == "list":
        return _list(library, args.json)
    try:
        loaded = library.get(args.id)
    except UnknownProfile as exc:
        print(f"givre profiles: {exc}")
        return 1
    print(json.dumps(summary(loaded, full=True), ensure_ascii=False, indent=2) if args.json else describe(loaded, library))
    return 0


def summary(loaded: LoadedProfile, full: bool = False) -> dict[str, object]:
    p = loaded.profile
    data: dict[str, object] = {
        "id": p.id,
        "name_fr": p.name_fr,
        "name_en": p.name_en,
        "indication": p.indication.value,
        "act_family": p.act_family,
        "device_kinds": [k.value for k in p.device_kinds],
        "freeze_s": {"min": p.freeze_s.min, "default": p.freeze_s.default, "max": p.freeze_s.max},
        "cycles": p.cycles,
        "timing_start": p.timing_start.value,
        "timing_start_source": p.timing_start_source,
        "caution": list(p.caution),
        "origin": loaded.origin,
        "overrides_builtin": loaded.overrides_builtin,
    }
    if full:
        data["profile"] = p.model_dump(mode="json")
    return data


def _list(library: Library, as_json: bool) -> int:
    items = sorted(library.profiles.values(), key=lambda item: item.profile.id)
    if as_json:
        print(json.dumps([summary(item) for item in items], ensure_ascii=False))
        return 0
    print(f"{'id':28} {'devices':14} {'freeze s':>10} {'cycles':>6}  origin")
    for item in items:
        p = item.profile
        span = f"{p.freeze_s.min:g}" if p.freeze_s.min == p.freeze_s.max else f"{p.freeze_s.min:g}-{p.freeze_s.max:g}"
        origin = item.origin + (" (overrides built-in)" if item.overrides_builtin else "")
        print(f"{p.id:28} {','.join(k.value for k in p.device_kinds):14} {span:>10} {p.cycles:>6}  {origin}")
        print(f"{'':28} {p.name_en} / {p.name_fr}")
    return 0


# What each convention makes of the two durations a cycle records: the spray (gas) and the clinical dose.
TIMING_WORDS = {
    TimingStart.SPRAY_START: "spray start: the seconds are the spray itself (gas time = clinical dose)",
    TimingStart.HALO: "halo (T0, marked by the clinician): clinical dose = T0 -> spray off; the spray (gas) also "
                      "covers spray on -> T0, under the whole-spray cap",
    TimingStart.TISSUE_TARGET: "tissue target (T0, the thermocouple reading it): clinical dose = the hold, T0 -> spray off; "
                               "the spray (gas) also covers the cooling to the target, under the whole-spray cap",
}


def describe(loaded: LoadedProfile, library: Library) -> str:
    p = loaded.profile
    lines = [
        f"{p.id}: {p.name_en} / {p.name_fr}",
        f"  origin        {loaded.origin}{' (overrides the built-in profile)' if loaded.overrides_builtin else ''}",
        f"  indication    {p.indication.value} (act family for billing: {p.act_family})",
        f"  devices       {', '.join(k.value for k in p.device_kinds)}; cryogen {p.cryogen}"
        + ("; needs a tissue thermocouple" if p.requires_tissue_thermocouple else ""),
        f"  freeze        {p.freeze_s.min:g} / {p.freeze_s.default:g} / {p.freeze_s.max:g} s (min / default / max), "
        f"counted from {p.timing_start.value.replace('_', ' ')}",
        f"                source: {library.cite(p.freeze_s.source)}",
        f"  timing start  {TIMING_WORDS[p.timing_start]}",
        f"                source: {library.cite(p.timing_start_source) if p.timing_start_source else 'none given'}",
        f"  cycles        {p.cycles}; source: {library.cite(p.cycles_source)}",
    ]
    if p.thaw is not None:
        parts = [f"at least {p.thaw.min_s:g} s"] if p.thaw.min_s else []
        if p.thaw.until_above_c is not None:
            parts.append(f"until the tissue reads above {p.thaw.until_above_c:g} C")
        rule = " and ".join(parts) or "no minimum"
        lines += [f"  thaw          {rule}; complete before the next cycle", f"                source: {library.cite(p.thaw.source)}"]
    if p.target is not None:
        lines += [f"  target        tissue at or below {p.target.tissue_c:g} C", f"                source: {library.cite(p.target.source)}"]
    if p.halo is not None:
        lines += [
            f"  margin        {p.halo.margin_mm_min:g}-{p.halo.margin_mm_max:g} mm of ice beyond the lesion",
            f"                source: {library.cite(p.halo.source)}",
        ]
    lines += [f"  CAUTION       {item}" for item in p.caution]
    lines.append(f"  notes         {p.notes}")
    lines += [f"  uncertain     {item}" for item in p.uncertain]
    return "\n".join(lines)


def _check(files: list[Path]) -> int:
    issues = add_files(load_builtins(), files)
    for issue in issues:
        print(issue)
    if issues:
        return 1
    for path in files:
        print(f"{path}: ok")
    return 0

