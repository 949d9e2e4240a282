"""Exports of the record: JSON (the read-back view), CSV (one row per cycle), FHIR R4 Bundles.

An export is refused when the hash chain does not verify: a tampered record must not leave the
practice looking sound. Files are written 0600 and atomically, so a failed export leaves nothing
half-written. The patient appears only by the pseudonymous id Givre holds. Every export says the
session's time scale (`time_scale`: 1 for real time, N for a simulator's session on virtual time).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from controller.errors import RecordError
from controller.practice.billing import CcamTable
from controller.practice.fhir import BundleBuilder, PhotoReader, fr_document, validate_bundle
from controller.records.history import ChainBroken, SessionView, verified_sessions
from controller.records.store import RecordStore

CSV_COLUMNS = (
    "session_id", "session_started", "patient", "operator", "device_serial", "time_scale", "lesion_id", "site", "description",
    "photo_file", "photo_sha256", "zone", "profile",
    "technique", "reimbursable", "lesion_status", "cycle", "freeze_ms_requested", "freeze_ms_effective", "freeze_ms_device",
    "measured_by", "certainty", "end_reason", "limited_by", "thaw_ms", "halo_to_off_ms", "min_tissue_c", "cartridge_id",
    "cartridge_seconds", "result_at",
)
FORMATS = ("fhir", "csv", "json")
# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): = + - @, and tab or CR before them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportRefused(RecordError):
    """The record cannot be exported as it stands (tampered chain, unknown session)."""


def checked_sessions(store: RecordStore, session_id: str | None = None, since: date | None = None) -> list[SessionView]:
    """The sessions to export, read by history's verified_sessions: a broken chain or a session that
    is not there refuses the export (ExportRefused)."""
    try:
        sessions = verified_sessions(store, session_id, since)
    except ChainBroken as exc:
        raise ExportRefused(f"{store.path}: refusing to export: {exc.finding}", exc.action) from exc
    if session_id is not None and not sessions:
        raise ExportRefused(f"{store.path}: no session {session_id!r}; see `givre records list`")
    return sessions


def to_json(sessions: list[SessionView], store: RecordStore) -> str:
    count, head = store.head()
    return json.dumps({"record": {"events": count, "head": head}, "sessions": [s.as_dict() for s in sessions]},
                      ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def csv_rows(sessions: list[SessionView]) -> list[dict[str, Any]]:
    """One row per cycle; `time_scale` repeats the session's on each of its rows."""
    rows = []
    for s in sessions:
        for lesion in s.lesions:
            for c in lesion.cycles:
                rows.append({
                    "session_id": s.session_id, "session_started": s.started, "patient": s.patient, "operator": s.operator,
                    "device_serial": (s.device or {}).get("serial", ""), "time_scale": f"{s.time_scale:g}",
                    "lesion_id": lesion.lesion_id, "site": lesion.site_text, "description": lesion.description,
                    "photo_file": (lesion.photo or {}).get("file"), "photo_sha256": (lesion.photo or {}).get("sha256"),
                    "zone": lesion.zone, "profile": lesion.profile_id, "technique": lesion.technique,
                    "reimbursable": "yes" if lesion.reimbursable else "no", "lesion_status": lesion.status, "cycle": c.cycle,
                    "freeze_ms_requested": c.freeze_ms_requested, "freeze_ms_effective": c.freeze_ms_effective,
                    "freeze_ms_device": c.freeze_ms_device, "measured_by": c.measured_by, "certainty": c.certainty,
                    "end_reason": c.end_reason, "limited_by": c.limited_by, "thaw_ms": c.thaw_ms, "halo_to_off_ms": c.halo_to_off_ms,
                    "min_tissue_c": c.min_tissue_c, "cartridge_id": c.cartridge_id, "cartridge_seconds": c.cartridge_seconds,
                    "result_at": c.result_at,
                })
    return rows


def to_csv(sessions: list[SessionView], bom: bool = False) -> str:
    """One row per cycle; empty cells where a figure is unknown; ISO 8601 times (UTC)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in csv_rows(sessions):
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return ("\ufeff" if bom else "") + out.getvalue()


def csv_cell(value: object) -> object:
    """One cell: empty for an unknown figure; a text that a spreadsheet would run as a formula (a
    device serial '=HYPERLINK(...)', a site detail '@SUM(...)') behind a single quote, so it is shown
    as text. Numbers stay numbers: a -89.5 °C tip is a figure, not a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True, slots=True)
class FhirOptions:
    """How the FHIR export is shaped (the CLI's options)."""

    validate: bool = False  # each Bundle against the official R4 JSON schema
    single: bool = False  # one Bundle as a JSON document (--session) instead of NDJSON
    embed_photos: bool = False  # each Media carries its image (base64), read decrypted from the store
    fr_document: bool = False  # an FR Document Core-shaped document Bundle (fhir.fr_document)


def to_fhir(sessions: list[SessionView], table: CcamTable, photos: PhotoReader | None, options: FhirOptions = FhirOptions()) -> str:
    """single: the Bundle as one JSON document. Otherwise one Bundle per line (NDJSON, as FHIR bulk
    data), however many sessions there are, so scripts read one shape."""
    builder = BundleBuilder(table, photos, embed_photos=options.embed_photos)
    bundles = [builder.bundle(s) for s in sessions]
    if options.fr_document:
        bundles = [fr_document(b, s, builder.terms) for b, s in zip(bundles, sessions, strict=True)]
    if options.validate:
        for bundle in bundles:
            validate_bundle(bundle)
    if options.single:
        return json.dumps(bundles[0], ensure_ascii=False, indent=1) + "\n"
    return "".join(json.dumps(b, ensure_ascii=False, separators=(",", ":")) + "\n" for b in bundles)
