"""FHIR R4 export: one Bundle (type collection) per session, built from the record read back.

Patient carries the pseudonymous id only (security label PSEUDED) and nothing else; Practitioner
the operator's pseudonymous id; Device the serial, firmware and calibration; one Procedure per lesion
(SNOMED CT + the CCAM act as a second coding, bodySite, performedPeriod, reason where a code is
sourced, the cycles in a note); one Observation per measured figure in UCUM units (the hold at the
tissue target beside the valve-open time); Media for the photo (the image itself on request). Codes
come from terminology.toml, each with its source; what has no sourced code goes out as text, and a
display is only an official label or a sourced display. Resource ids are UUIDv5 of the session and
the item, so exporting twice gives the same Bundle. A session recorded on virtual time (time_scale
!= 1, a simulator's) says so in a note on each Procedure and each Observation; a real-time session's
Bundle carries no such note. fr_document reshapes a Bundle as an FR Document Core document;
validate_bundle checks against the official R4 JSON schema.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import html
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controller.config import read_toml
from controller.errors import GivreError
from controller.practice.billing import CcamTable, acts_of, propose
from controller.records.history import CycleView, LesionView, SessionView
from controller.records.lesion import FACE_REGIONS

UCUM = "http://unitsofmeasure.org"
SECURITY = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_ABSENT_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
XHTML = "http://www.w3.org/1999/xhtml"
# Givre's own extension, on a CCAM coding whose official label is not verified (the coding then has no display).
LABEL_UNVERIFIED = "urn:givre:fhir:extension:ccam-label-unverified"
PhotoReader = Callable[[str], bytes | None]  # a stored photo's file name -> its image bytes, None if gone or erased
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:givre:fhir-export")
PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".heic": "image/heic", ".webp": "image/webp",
               ".tif": "image/tiff", ".tiff": "image/tiff"}
LESION_STATUS = {"completed": "completed", "aborted": "stopped", "faulted": "stopped", "interrupted": "stopped",
                 "uncertain": "stopped", "in progress": "in-progress"}


class FhirError(GivreError):
    """The export cannot be built or does not validate; the message says which resource and why."""


class Code(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[0-9]{6,18}$")
    display: str
    source: str = Field(min_length=3)
    text: str | None = None


class FrDocument(BaseModel):
    """The URLs and codes the French document shape uses, each read where `source` says; `unverified`
    lists what is not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle_profile: str
    composition_profile: str
    patient_profile: str
    identity_reliability: str
    identity_status_system: str
    identity_status_code: str
    identity_status_display: str
    source: str = Field(min_length=3)
    unverified: list[str]


class Terminology(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    snomed_system: str
    ccam_system: str
    ccam_source: str
    cid_4029: str
    uncertain: list[str]
    procedure: dict[str, Code]
    reason: dict[str, Code]
    body_site: dict[str, Code]
    fr_document: FrDocument


def load_terminology() -> Terminology:
    with resources.as_file(resources.files("controller.practice").joinpath("terminology.toml")) as path:
        return read_toml(path, Terminology, FhirError)


def _ref(session_id: str, item: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{session_id}/{item}')}"


def _seconds(ms: int) -> float:
    return ms / 1000


class BundleBuilder:
    """Builds one session's Bundle; the photos are read (RecordStore.read_photo: decrypted) to hash the files referenced."""

    def __init__(self, table: CcamTable, photos: PhotoReader | None = None, terminology: Terminology | None = None, *,
                 embed_photos: bool = False) -> None:
        self.table = table
        self.photos = photos
        self.terms = terminology or load_terminology()
        self.embed_photos = embed_photos  # the image itself in Media.content.data (base64), not only its reference

    def bundle(self, session: SessionView) -> dict[str, Any]:
        sid = session.session_id
        self.entries: list[dict[str, Any]] = []
        self.patient = self._add(sid, "patient", {
            "resourceType": "Patient",
            "meta": {"security": [{"system": SECURITY, "code": "PSEUDED", "display": "pseudonymized"}]},
            "identifier": [{"type": {"text": "pseudonymous patient id (Givre)"}, "value": session.patient}],
        })
        self.practitioner = self._add(sid, "practitioner", {
            "resourceType": "Practitioner",
            "identifier": [{"type": {"text": "pseudonymous operator id (Givre)"}, "value": session.operator}],
        })
        self.device = self._add(sid, "device", self._device(session))
        codes = self._ccam_by_lesion(session)
        self.time_note = [{"text": time_scale_note(session)}] if session.scaled else []
        self.time_scale = session.time_scale
        for lesion in session.lesions:
            self._lesion(sid, lesion, codes.get(lesion.lesion_id))
        return {"resourceType": "Bundle", "type": "collection", "timestamp": session.ended or session.started,
                "identifier": {"type": {"text": "Givre session id"}, "value": sid}, "entry": self.entries}

    def _add(self, sid: str, item: str, resource: dict[str, Any]) -> dict[str, str]:
        url = _ref(sid, item)
        self.entries.append({"fullUrl": url, "resource": resource})
        return {"reference": url}

    def _device(self, session: SessionView) -> dict[str, Any]:
        cal = session.calibration
        calibration = f"calibration: {cal.get('status', 'unknown')}" + "".join(
            f", {key.replace('_', ' ')} {cal[key]}" for key in ("calibrated_on", "due_on") if cal.get(key))
        if session.device is None:
            return {"resourceType": "Device", "deviceName": [{"name": "cotton-tip applicator (manual; Givre timed it on the host)",
                                                             "type": "user-friendly-name"}], "note": [{"text": calibration}]}
        d = session.device
        return {
            "resourceType": "Device",
            "identifier": [{"type": {"text": "device serial number"}, "value": d["serial"]}],
            "serialNumber": d["serial"],
            "deviceName": [{"name": f"cryotherapy {d.get('kind', 'device')} ({d.get('cryogen', '?')}), driven by Givre",
                            "type": "user-friendly-name"}],
            "version": [{"type": {"text": "firmware"}, "value": str(d.get("firmware"))},
                        {"type": {"text": "wire protocol"}, "value": str(d.get("protocol"))}],
            "note": [{"text": calibration}],
        }

    def _ccam_by_lesion(self, session: SessionView) -> dict[str, str]:
        """The CCAM act each lesion was billed under: the clinician's confirmed choice if recorded,
        else the proposal. Aesthetic and unfinished lesions get none."""
        proposal = propose(acts_of(session), self.table)
        by_lesion = {lesion_id: act.code for act in proposal.acts for lesion_id in act.lesion_ids}
        if session.billing is None or not session.billing.get("changed"):
            return by_lesion
        chosen = [self.table.get(a["code"]) for a in session.billing["chosen"]]
        return {lesion.lesion_id: code.code for lesion in session.lesions if lesion.completed and lesion.reimbursable
                for code in chosen if code.fits(lesion.zone, lesion.technique)}

    def _ccam_coding(self, code: str) -> dict[str, Any]:
        """The CCAM act: `display` only with the official label; an unverified label is said in an
        extension of its own, never as display text."""
        entry = self.table.get(code)
        coding: dict[str, Any] = {"system": self.terms.ccam_system, "code": code}
        if entry.display is not None:
            coding["display"] = entry.display
        else:
            coding["extension"] = [{"url": LABEL_UNVERIFIED, "valueString": entry.text}]
        return coding

    def _body_site(self, lesion: LesionView) -> dict[str, Any]:
        region = lesion.site.get("region", "")
        key = region if region in self.terms.body_site else ("face" if region in {r.value for r in FACE_REGIONS} else "default")
        code = self.terms.body_site[key]
        return {"coding": [{"system": self.terms.snomed_system, "code": code.code, "display": code.display}], "text": lesion.site_text}

    def _lesion(self, sid: str, lesion: LesionView, ccam: str | None) -> None:
        procedure_code = self.terms.procedure[lesion.technique]
        coding = [{"system": self.terms.snomed_system, "code": procedure_code.code, "display": procedure_code.display}]
        if ccam is not None:
            coding.append(self._ccam_coding(ccam))
        reason_code = self.terms.reason.get(lesion.profile_id)
        reason: dict[str, Any] = {"text": lesion.profile_name_en or lesion.profile_name_fr}
        if reason_code is not None:
            reason["coding"] = [{"system": self.terms.snomed_system, "code": reason_code.code, "display": reason_code.display}]
        body_site = self._body_site(lesion)
        period = performed_period(lesion, self.time_scale)
        notes = [{"text": f"lesion {lesion.lesion_id}, profile {lesion.profile_id}: {lesion.description}".rstrip(": ")},
                 {"text": cycles_note(lesion)}]
        if not lesion.reimbursable:
            notes.append({"text": "aesthetic act: not reimbursable (no 'remboursement demandé')"})
        notes += self.time_note
        procedure: dict[str, Any] = {
            "resourceType": "Procedure",
            "status": LESION_STATUS.get(lesion.status, "unknown"),
            "code": {"coding": coding, "text": procedure_code.text or procedure_code.display},
            "subject": self.patient,
            "performedPeriod": period,
            "performer": [{"actor": self.practitioner}],
            "reasonCode": [reason],
            "bodySite": [body_site],
            "note": notes,
            "usedReference": [self.device],
        }
        if procedure["status"] == "stopped":
            procedure["statusReason"] = {"text": f"the protocol ended {lesion.status}"}
        ref = self._add(sid, f"{lesion.lesion_id}/procedure", procedure)
        for cycle in lesion.cycles:
            self._cycle(sid, lesion, cycle, ref)
        if lesion.photo is not None:
            self._add(sid, f"{lesion.lesion_id}/photo", self._media(lesion, ref, body_site))

    def _cycle(self, sid: str, lesion: LesionView, cycle: CycleView, procedure: dict[str, str]) -> None:
        who = "device-measured" if cycle.measured_by == "device" else "host-measured (manual)"
        figures: list[tuple[str, str, float | None, str]] = [
            ("freeze", f"Freeze time, cycle {cycle.cycle} (valve open, {who})",
             None if cycle.freeze_ms_device is None else _seconds(cycle.freeze_ms_device), "s"),
        ]
        target_c = lesion.tissue_targets.get(cycle.cycle)
        if target_c is not None and cycle.halo_to_off_ms is not None:  # the clinically meaningful figure beside the spray time
            figures.append(("hold", f"Hold at the tissue target ({target_c:g} Cel), cycle {cycle.cycle} (from the tissue reaching "
                                    f"the target to spray off, {who})", _seconds(cycle.halo_to_off_ms), "s"))
        if cycle.thaw_ms is not None:
            figures.append(("thaw", f"Thaw time after cycle {cycle.cycle}", _seconds(cycle.thaw_ms), "s"))
        if cycle.min_tissue_c is not None:
            figures.append(("tissue", f"Lowest tissue temperature, cycle {cycle.cycle}", cycle.min_tissue_c, "Cel"))
        for item, text, value, unit in figures:
            observation: dict[str, Any] = {
                "resourceType": "Observation",
                "status": "final" if value is not None else "unknown",
                "code": {"text": text},
                "subject": self.patient,
                "partOf": [procedure],
                "effectiveDateTime": cycle.result_at,
                "device": self.device,
                "note": [{"text": f"requested {cycle.freeze_ms_requested} ms, limited by {cycle.limited_by}; ended {cycle.end_reason}; "
                                  f"certainty {cycle.certainty}"}, *self.time_note],
            }
            if value is None:
                observation["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "unknown", "display": "Unknown"}],
                                                   "text": "the device could not say how long the valve was open"}
            else:
                observation["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
            self._add(sid, f"{lesion.lesion_id}/{cycle.cycle}/{item}", observation)

    def _media(self, lesion: LesionView, procedure: dict[str, str], body_site: dict[str, Any]) -> dict[str, Any]:
        assert lesion.photo is not None
        name = lesion.photo["file"]
        content: dict[str, Any] = {"contentType": PHOTO_TYPES.get(Path(name).suffix.lower(), "application/octet-stream"),
                                   "url": name, "title": f"lesion {lesion.lesion_id} ({lesion.site_text})"}
        data = self.photos(name) if self.photos is not None else None
        if data is not None:
            if hashlib.sha256(data).hexdigest() != lesion.photo["sha256"]:
                raise FhirError(f"photo {name}: no longer matches the SHA-256 recorded at capture; restore it from a backup")
            content["size"] = len(data)
            content["hash"] = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")  # FHIR asks for SHA-1 here
            if self.embed_photos:
                content["data"] = base64.b64encode(data).decode("ascii")
        return {"resourceType": "Media", "status": "completed", "subject": self.patient, "partOf": [procedure],
                "bodySite": body_site, "createdDateTime": lesion.recorded_at, "content": content,
                "note": [{"text": f"SHA-256 at capture: {lesion.photo['sha256']}"}]}


def performed_period(lesion: LesionView, time_scale: float) -> dict[str, str]:
    """From the first freeze request (or the lesion's recording) to the end of its protocol. The start is
    the recorded wall time; the end is that start plus the time the host's monotonic clock measured
    between the two events (wall seconds: virtual time divided by the scale), so a wall clock stepped
    back in between (daylight saving, NTP) can never end a lesion before it started."""
    start = lesion.first_freeze_at or lesion.recorded_at
    start_mono_ms = lesion.first_freeze_mono_ms if lesion.first_freeze_at else lesion.recorded_mono_ms
    if lesion.ended_mono_ms is None or start_mono_ms is None:
        return {"start": start}
    elapsed_s = max(0.0, lesion.ended_mono_ms - start_mono_ms) / 1000 / time_scale
    end = datetime.fromisoformat(start) + timedelta(seconds=elapsed_s)
    return {"start": start, "end": end.isoformat(timespec="milliseconds")}


def time_scale_note(session: SessionView) -> str:
    """What a scaled session's resources say: its figures are on a simulator's virtual time."""
    return (f"time_scale {session.time_scale:g}: recorded on virtual time, {session.time_scale:g} times faster than the wall, "
            "against a simulator; not a clinical session, and its durations are virtual seconds")


def cycles_note(lesion: LesionView) -> str:
    if not lesion.cycles:
        return "no freeze was delivered"
    parts = []
    for c in lesion.cycles:
        freeze = "unknown" if c.freeze_ms_device is None else f"{_seconds(c.freeze_ms_device):g} s"
        thaw = "" if c.thaw_ms is None else f", thaw {_seconds(c.thaw_ms):g} s"
        parts.append(f"cycle {c.cycle}: freeze {freeze} ({c.measured_by}-measured, requested {_seconds(c.freeze_ms_requested or 0):g} s, "
                     f"ended {c.end_reason}){thaw}")
    return "; ".join(parts)


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Check a Bundle against the official FHIR R4 (4.0) JSON schema (fhir-r4.schema.json.gz, see
    r4_schema), each entry's resource against its own definition first so that the one line names it."""
    try:
        from jsonschema import Draft6Validator  # noqa: PLC0415 - the optional `fhir` extra: only --validate pays it
        from jsonschema.exceptions import best_match  # noqa: PLC0415
    except ImportError as exc:
        raise FhirError("validation needs the optional JSON-schema library: pip install 'givre[fhir]'") from exc
    schema = r4_schema()
    for index, entry in enumerate(bundle.get("entry", [])):
        kind = entry.get("resource", {}).get("resourceType", "?")
        if kind not in schema["definitions"]:
            raise FhirError(f"entry {index}: {kind!r} is not an R4 resource type")
        own = Draft6Validator({"$ref": f"#/definitions/{kind}", "definitions": schema["definitions"]})
        _refuse(best_match(own.iter_errors(entry["resource"])), f"entry {index} ({kind} {entry.get('fullUrl', '')})")
    _refuse(best_match(Draft6Validator(schema).iter_errors(bundle)), "the Bundle")


def _refuse(error: Any, where: str) -> None:
    """One line naming the resource, the element and what is wrong (jsonschema's own words, cut short)."""
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path) or "(root)"
        raise FhirError(f"the FHIR export does not validate against R4: {where}: {path}: {error.message[:300]}")


@cache
def r4_schema() -> dict[str, Any]:
    """The FHIR R4 JSON schema (id http://hl7.org/fhir/json-schema/4.0), from hl7.org/fhir/R4/fhir.schema.json.zip
    as mirrored by github.com/phtal-org/fhir-schema-json (schema.json, 2021-07-24), with that mirror's one
    patch undone (additionalProperties back to false on Patient, Appointment and Encounter, as in the
    official schema); this machine could not download hl7.org itself. Gzipped: 0.27 MB instead of 2.8."""
    with resources.files("controller.practice").joinpath("fhir-r4.schema.json.gz").open("rb") as packed:
        schema: dict[str, Any] = json.loads(gzip.decompress(packed.read()))
    return schema


def fr_document(bundle: dict[str, Any], session: SessionView, terms: Terminology) -> dict[str, Any]:
    """The session's collection Bundle reshaped as an FR Document Core document: type document, a
    Composition first (one section per lesion), meta.profile on the Bundle, Composition and Patient,
    the patient's identity status "not yet qualified" (a pseudonymous id is never an INS), and an RPPS
    slot on the practitioner whose value is absent (data-absent-reason), never invented."""
    fr = terms.fr_document
    entries = copy.deepcopy(bundle["entry"])
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    (patient,) = by_type["Patient"]
    (practitioner,) = by_type["Practitioner"]
    patient["resource"]["meta"]["profile"] = [fr.patient_profile]
    patient["resource"]["extension"] = [{"url": fr.identity_reliability, "extension": [{"url": "identityStatus", "valueCoding": {
        "system": fr.identity_status_system, "code": fr.identity_status_code, "display": fr.identity_status_display}}]}]
    practitioner["resource"]["identifier"].append({
        "type": {"text": "RPPS (identifiant national du professionnel de santé): not known to Givre"},
        "_value": {"extension": [{"url": DATA_ABSENT_EXTENSION, "valueCode": "unknown"}]}})
    sid = session.session_id
    sections = []
    for lesion in session.lesions:
        procedure = _ref(sid, f"{lesion.lesion_id}/procedure")
        parts = [e["fullUrl"] for e in entries if {"reference": procedure} in e["resource"].get("partOf", [])]
        text = html.escape(f"{lesion.profile_name_fr}, {lesion.site_text}: {lesion.description}. {cycles_note(lesion)}")
        narrative = {"status": "generated", "div": f'<div xmlns="{XHTML}">{text}</div>'}
        sections.append({"title": f"lesion {lesion.lesion_id}", "text": narrative,
                         "entry": [{"reference": url} for url in (procedure, *parts)]})
    composition = {"resourceType": "Composition", "meta": {"profile": [fr.composition_profile]}, "status": "final",
                   "type": {"text": "Compte rendu de cryothérapie (Givre)"}, "subject": {"reference": patient["fullUrl"]},
                   "date": bundle["timestamp"], "author": [{"reference": practitioner["fullUrl"]}],
                   "title": f"Cryothérapie: séance {sid}", "section": sections}
    first = {"fullUrl": _ref(sid, "composition"), "resource": composition}
    return {"resourceType": "Bundle", "meta": {"profile": [fr.bundle_profile]}, "identifier": bundle["identifier"], "type": "document",
            "timestamp": bundle["timestamp"], "entry": [first, *entries]}
