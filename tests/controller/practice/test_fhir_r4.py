"""The FHIR export against the official R4 JSON schema, its codings against their sources, and the
French document shape; built from a recorded session read back (records/history.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.practice.billing import load_table
from controller.practice.fhir import BundleBuilder, FhirError, r4_schema, validate_bundle
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
