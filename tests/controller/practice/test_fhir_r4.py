"""The FHIR export against the official R4 JSON schema, its codings against their sources, and the
French document shape; built from a recorded session read back (records/history.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.practice.billing import CcamTable, load_table
from controller.practice.fhir import BundleBuilder, FhirError, fr_document, load_terminology, r4_schema, validate_bundle
from controller.records.history import SessionView, build_sessions
from controller.records.lesion import Region
from controller.records.store import StoredEvent
from tests.controller.practice.test_export_hygiene import STEADY, _session


def _bundle() -> dict[str, Any]:
    return BundleBuilder(load_table(None)).bundle(_session("SIM-1", "detail", STEADY))


def test_the_shipped_schema_is_fhir_r4_and_not_r4b() -> None:
    schema = r4_schema()
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"
    definitions = schema["definitions"]
    assert "Media" in definitions and "MedicinalProduct" in definitions  # R4 resources
    assert "SubscriptionTopic" not in definitions and "MedicinalProductDefinition" not in definitions  # R4B's
    assert all(d["additionalProperties"] is False for d in definitions.values() if "resourceType" in d.get("properties", {}))


def test_a_bundle_validates_and_a_wrong_element_is_refused_in_one_line_naming_the_resource() -> None:
    bundle = _bundle()
    validate_bundle(bundle)
    broken = copy.deepcopy(bundle)
    procedure = next(e for e in broken["entry"] if e["resource"]["resourceType"] == "Procedure")
    procedure["resource"]["performedSeconds"] = 3
    with pytest.raises(FhirError) as refused:
        validate_bundle(broken)
    assert "\n" not in str(refused.value)
    assert "does not validate against R4: entry 3 (Procedure urn:uuid:" in str(refused.value)
    assert "performedSeconds" in str(refused.value)


def _codings(value: object) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        own = [value] if "system" in value and "code" in value else []
        return own + [c for v in value.values() for c in _codings(v)]
    return [c for v in value for c in _codings(v)] if isinstance(value, list) else []


def _clinic_day(table: CcamTable) -> tuple[dict[str, Any], SessionView]:
    """One session with a lesion on every region, face and body, cryotherapy and cryosurgery, 12
    body lesions (QZNP012, verified) beside a cryosurgery (QZNP022, not): every coding the exports make."""
    regions = list(Region) + [Region.BACK] * 12
    events: list[tuple[str, dict[str, Any]]] = [("session_started", {"operator": "dr-07", "patient": "P-0042", "mode": "device",
                                                                      "calibration": {}, "device": {"serial": "SIM-1"}})]
    for index, region in enumerate(regions):
        lesion = f"L{index + 1}"
        profile = ("superficial-bcc", "cryosurgery") if index == 0 else ("actinic-keratosis", "cryotherapy")
        events += [
            ("lesion_recorded", {"lesion_id": lesion, "profile": {"id": profile[0], "name_fr": "x", "indication": profile[1]},
                                 "site": {"region": region.value}, "zone": "face" if index % 2 else "body", "description": "d"}),
            ("tissue_target_reached", {"lesion_id": lesion, "cycle": 1, "tissue_c": -50.5, "target_c": -50.0}),
            ("freeze_result", {"lesion_id": lesion, "cycle": 1, "freeze_ms_device": 51_200, "halo_to_off_ms": 30_000,
                               "measured_by": "device", "certainty": "device_reported", "end_reason": "completed"}),
            ("lesion_ended", {"lesion_id": lesion, "status": "COMPLETED"}),
        ]
    stored = [StoredEvent(i + 1, "S1", f"2026-03-29T09:00:{i % 60:02}.000+00:00", 1000.0 * i, kind, payload, "", "")
              for i, (kind, payload) in enumerate(events)]
    session = build_sessions(stored)["S1"]
    return BundleBuilder(table).bundle(session), session


def test_no_display_carries_text_that_is_not_the_official_label_or_the_sourced_display() -> None:
    table, terms = load_table(None), load_terminology()
    bundle, session = _clinic_day(table)
    validate_bundle(bundle)
    sourced = {(terms.snomed_system, c.code): c.display for group in (terms.procedure, terms.reason, terms.body_site)
               for c in group.values()}
    official = {(terms.ccam_system, c.code): c.display for c in table.code}
    codings = [c for c in _codings(bundle) if c["system"] in (terms.snomed_system, terms.ccam_system)]
    ccam = [c for c in codings if c["system"] == terms.ccam_system]
    assert {c["code"] for c in ccam} == {"QZNP012", "QZNP022"}  # a verified label and an unverified one (the third group is not billed)
    for coding in codings:
        expected = (sourced | official)[(coding["system"], coding["code"])]
        assert coding.get("display") == expected, coding  # None: no display at all
    unverified = next(c for c in ccam if c["code"] == "QZNP022")
    assert "display" not in unverified and "label not verified" in unverified["extension"][0]["valueString"]
    assert next(c for c in ccam if c["code"] == "QZNP012")["display"] == table.get("QZNP012").label
    document = fr_document(bundle, session, terms)
    validate_bundle(document)
    assert [c for c in _codings(document) if c["system"] == terms.ccam_system] == ccam  # the document adds no CCAM text


def test_every_region_has_a_sourced_body_site_and_the_cid_4029_sites_are_coded() -> None:
    terms = load_terminology()
    bundle, _ = _clinic_day(load_table(None))
    procedures = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"]
    by_region = {p["bodySite"][0]["text"]: p["bodySite"][0]["coding"][0]["code"] for p in procedures}
    expected = {"cheek": "36141000", "chin": "23747009", "forehead": "68698007", "nose": "113179006", "lip": "88089004",
                "ear": "1902009", "neck": "43081002", "hand": "33712006", "foot-sole": "60496002", "finger": "244169007"}
    assert {region: by_region[region] for region in expected} == expected
    assert by_region["thigh"] == "39937001" and by_region["eyelid"] == "73897004"  # no whole-region concept: the fallback, said so
    assert all("CID 4029" in terms.body_site[r].source for r in expected)


def test_a_tissue_target_cycle_exports_its_hold_at_the_target_beside_the_spray_time() -> None:
    bundle, _ = _clinic_day(load_table(None))
    texts = {e["resource"]["code"]["text"]: e["resource"].get("valueQuantity", {}).get("value")
             for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert texts["Hold at the tissue target (-50 Cel), cycle 1 (from the tissue reaching the target to spray off, device-measured)"] == 30
    assert texts["Freeze time, cycle 1 (valve open, device-measured)"] == 51.2
