"""Billing, exports and the day report, read back from a real session recorded against the simulator.

One session treats two face lesions and one body lesion (reimbursable) and one aesthetic face lesion
with device-timed freezes on a pty; every test reads that record through the commands clinics use.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.config import Config
from controller.practice.export import CSV_COLUMNS
from controller.practice.fhir import validate_bundle
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.private_files import file_mode
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from profiles.library import load_builtins
from sim.device import SimulatedDevice
from tests.support.images import png
from tests.support.rig import Rig

pytestmark = pytest.mark.pty
LESIONS = [  # profile, region, aesthetic
    ("actinic-keratosis", Region.CHEEK, False),
    ("actinic-keratosis", Region.NOSE, False),
    ("plantar-wart", Region.FOOT_SOLE, False),
    ("solar-lentigo", Region.CHEEK, True),
]


@dataclass(frozen=True)
class Recorded:
    db: Path
    session_id: str


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    folder = tmp_path_factory.mktemp("exports")
    photo = png(folder / "lesion.png")
    clock = Clock(50)
    library = load_builtins()
    with SimulatedDevice(clock=clock, serial="SIM-EXPORT") as device:
        link = Link.open(device.serve_pty(), clock=clock, watchdog_ms=60_000)
        link.wait_for_telemetry()
        with RecordStore(folder / "records.sqlite", clock=clock) as store:
            CartridgeLedger(store, Config()).load("23g", date.today())
            treatment = Treatment(store, Config(), clock, SessionInfo(operator="dr-a", patient="P-0042"), link)
            treatment.start()
            for index, (profile_id, region, aesthetic) in enumerate(LESIONS):
                lesion = Lesion(profile_id=profile_id, site=Site(region=region, side="left"), description=f"lesion {index + 1}",
                                photo=photo if index == 0 else None, reimbursable=not aesthetic)
                procedure = treatment.lesion(lesion, library.get(profile_id), auto=True)
                procedure.arm()
                while not procedure.finished:
                    procedure.tick()
            assert treatment.end() == "completed"
            session_id = treatment.session_id
        link.close()
    yield Recorded(folder / "records.sqlite", session_id)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _freeze_results(db: Path) -> list[dict[str, Any]]:
    with RecordStore(db, writer=False) as store:
        results = {(e.payload["lesion_id"], e.payload["cycle"]): dict(e.payload) for e in store.events() if e.kind == "freeze_result"}
        for e in store.events():
            if e.kind == "thaw_done":
                results[(e.payload["lesion_id"], e.payload["cycle"])]["thaw_ms"] = e.payload["thaw_ms"]
    return list(results.values())


def test_face_and_body_lesions_propose_codes_with_association_and_the_aesthetic_act_is_left_out(
        recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "records", "bill", recorded.session_id, "--db", str(recorded.db), "--json")
    assert code == 0
    proposal = json.loads(out)["proposal"]
    # Two face lesions (1-10: QANP007) and one body lesion (1-10: QZNP004); both tariffs unknown, so the
    # order is the clinician's to confirm and the warning says so.
    assert {(a["code"], a["lesions"]) for a in proposal["acts"]} == {("QANP007", 2), ("QZNP004", 1)}
    assert sorted(a["association_code"] for a in proposal["acts"]) == [1, 2]
    assert proposal["aesthetic_lesions"] == 1 and proposal["total_eur"] is None
    assert any("order of association" in w for w in proposal["warnings"])
    assert any("QANP007: tariff unknown; the sheet's range is 22.78-38.45 EUR" in w for w in proposal["warnings"])


def test_a_clinic_table_from_the_config_prices_the_acts_at_100_and_50_percent(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def entry(code: str, zone: str, tariff: str) -> str:
        return (f'[[code]]\ncode = "{code}"\nzone = "{zone}"\ntechnique = "cryotherapy"\nlesions_min = 1\nlesions_max = 10\n'
                f'label = "{code} label"\nverified = true\ntariff_eur = "{tariff}"\nsource = "clinic table 2027"\n')
    newer = 'version = "clinic-2027"\n' + entry("QANP007", "face", "30.00") + entry("QZNP004", "body", "25.00")
    (tmp_path / "ccam-2027.toml").write_text(newer, encoding="utf-8")
    (tmp_path / "config.toml").write_text('billing_table = "ccam-2027.toml"\n', encoding="utf-8")
    code, out, err = _run(capsys, "records", "bill", recorded.session_id, "--db", str(recorded.db), "--config",
                          str(tmp_path / "config.toml"), "--json")
    assert code == 0, err
    proposal = json.loads(out)["proposal"]
    assert proposal["table_version"].startswith("clinic-2027")
    assert [(a["code"], a["association_code"], a["amount_eur"]) for a in proposal["acts"]] == [
        ("QANP007", 1, "30.00"), ("QZNP004", 2, "12.50")]
    assert proposal["total_eur"] == "42.50"


def test_a_bad_billing_table_or_choice_is_one_clear_line(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('version = "x"\n[[code]]\ncode = "QZNP4"\n', encoding="utf-8")
    (tmp_path / "config.toml").write_text(f'billing_table = "{tmp_path / "bad.toml"}"\n', encoding="utf-8")
    code, _, err = _run(capsys, "records", "bill", recorded.session_id, "--db", str(recorded.db), "--config", str(tmp_path / "config.toml"))
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'bad.toml'}: code.0.code = 'QZNP4': String should match pattern" in err
    code, _, err = _run(capsys, "--config", str(tmp_path / "config.toml"), "--db", str(tmp_path / "ui.sqlite"))  # the UI
    assert code == 2 and err.startswith(f"givre: {tmp_path / 'bad.toml'}: code.0.code") and not (tmp_path / "ui.sqlite").exists()
    code, _, err = _run(capsys, "records", "bill", recorded.session_id, "--db", str(recorded.db), "--code", "QZNP999")
    assert code == 2 and "'QZNP999': not a code in the billing table" in err and "allowed: QANP007" in err


def test_the_clinicians_choice_is_recorded_and_a_correction_is_a_new_event(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "copy.sqlite"
    shutil.copy(recorded.db, db)
    assert _run(capsys, "records", "bill", recorded.session_id, "--db", str(db), "--accept", "--by", "dr-a")[0] == 0
    assert _run(capsys, "records", "bill", recorded.session_id, "--db", str(db), "--code", "QZNP004", "--by", "dr-a")[0] == 0
    code, out, _ = _run(capsys, "records", "bill", recorded.session_id, "--db", str(db), "--json")
    assert code == 0
    confirmed = json.loads(out)["confirmed"]
    assert [a["code"] for a in confirmed["chosen"]] == ["QZNP004"] and confirmed["changed"] and confirmed["by"] == "dr-a"
    with RecordStore(db, writer=False) as store:
        assert [e.kind for e in store.events()].count("billing_confirmed") == 2 and store.verify() is None


def test_the_fhir_export_validates_and_carries_the_codes_with_their_systems(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "session.json"
    code, _, err = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir", "--session", recorded.session_id,
                        "--validate", "--out", str(out_file))
    assert code == 0, err
    assert file_mode(out_file) == 0o600
    data = json.loads(out_file.read_text(encoding="utf-8"))
    validate_bundle(data)  # the official R4 JSON schema, not a hand check
    resources = [e["resource"] for e in data["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("Patient") == kinds.count("Practitioner") == kinds.count("Device") == 1
    assert kinds.count("Procedure") == 4 and kinds.count("Media") == 1
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    systems = [{c["system"]: c["code"] for c in p["code"]["coding"]} for p in procedures]
    assert all(s["http://snomed.info/sct"] == "26782000" for s in systems)
    assert [s.get("https://smt.esante.gouv.fr/terminologie-ccam") for s in systems] == ["QANP007", "QANP007", "QZNP004", None]
    assert procedures[0]["bodySite"][0]["coding"][0]["code"] == "36141000"  # cheek: skin of cheek (DICOM CID 4029)
    assert procedures[0]["reasonCode"][0]["coding"][0]["code"] == "201101007"  # actinic keratosis
    assert "coding" not in procedures[2]["reasonCode"][0]  # plantar wart: no sourced code, text only
    assert any("aesthetic act" in n["text"] for n in procedures[3]["note"])
    device = next(r for r in resources if r["resourceType"] == "Device")
    assert device["serialNumber"] == "SIM-EXPORT" and "calibration" in device["note"][0]["text"]
    freezes = [r for r in resources if r["resourceType"] == "Observation" and r["code"]["text"].startswith("Freeze time")]
    measured = [p["freeze_ms_device"] / 1000 for p in _freeze_results(recorded.db)]
    assert [o["valueQuantity"]["value"] for o in freezes] == measured
    assert {(o["valueQuantity"]["system"], o["valueQuantity"]["code"]) for o in freezes} == {("http://unitsofmeasure.org", "s")}
    media = next(r for r in resources if r["resourceType"] == "Media")
    with RecordStore(recorded.db, writer=False) as store:
        image = store.read_photo(media["content"]["url"])  # the file holds it encrypted; the size is the image's
    assert image is not None and media["content"]["contentType"] == "image/png" and media["content"]["size"] == len(image)
    # The same record exports to the same Bundle (deterministic ids).
    assert _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir", "--session", recorded.session_id)[1] == \
        out_file.read_text(encoding="utf-8")


def test_embed_photos_carries_the_image_whose_hashes_match_and_the_fr_document_validates(
        recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir", "--session", recorded.session_id,
                          "--validate", "--embed-photos")
    assert code == 0, err
    media = next(e["resource"] for e in json.loads(out)["entry"] if e["resource"]["resourceType"] == "Media")
    image = base64.b64decode(media["content"]["data"])
    with RecordStore(recorded.db, writer=False) as store:
        assert image == store.read_photo(media["content"]["url"])  # decrypted from the store, not the file's ciphertext
    assert base64.b64encode(hashlib.sha1(image).digest()).decode() == media["content"]["hash"]
    assert media["note"][0]["text"] == f"SHA-256 at capture: {hashlib.sha256(image).hexdigest()}"
    plain = json.loads(_run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir", "--session", recorded.session_id)[1])
    assert "data" not in next(e["resource"] for e in plain["entry"] if e["resource"]["resourceType"] == "Media")["content"]  # on request
    code, out, err = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir", "--session", recorded.session_id,
                          "--validate", "--fr-document")
    assert code == 0, err
    document = json.loads(out)
    validate_bundle(document)
    assert document["type"] == "document" and document["entry"][0]["resource"]["resourceType"] == "Composition"
    assert document["meta"]["profile"] == ["https://interop.esante.gouv.fr/ig/fhir/document-core/StructureDefinition/fr-bundle-document"]
    composition = document["entry"][0]["resource"]
    assert composition["meta"]["profile"] == [
        "https://interop.esante.gouv.fr/ig/fhir/document-core/StructureDefinition/fr-composition-document"]
    assert len(composition["section"]) == len(LESIONS)
    referenced = {r["reference"] for section in composition["section"] for r in section["entry"]} | {
        composition["subject"]["reference"], composition["author"][0]["reference"]}
    assert {e["fullUrl"] for e in document["entry"][1:] if e["resource"]["resourceType"] != "Device"} <= referenced
    patient = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient")
    (status,) = patient["extension"][0]["extension"]
    assert status["valueCoding"]["code"] == "VIDE"  # 'Identité non encore qualifiée': a pseudonymous id is not an INS
    assert [i["value"] for i in patient["identifier"]] == ["P-0042"] and patient["meta"]["security"][0]["code"] == "PSEUDED"
    practitioner = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Practitioner")
    rpps = practitioner["identifier"][1]
    assert "value" not in rpps and rpps["_value"]["extension"][0]["valueCode"] == "unknown"  # the slot, never an invented number


def test_csv_has_the_description_and_the_photo_reference_of_each_lesion(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {"description", "photo_file", "photo_sha256"} <= set(rows[0])
    assert {r["lesion_id"]: r["description"] for r in rows} == {"L1": "lesion 1", "L2": "lesion 2", "L3": "lesion 3", "L4": "lesion 4"}
    first = next(r for r in rows if r["lesion_id"] == "L1")
    with RecordStore(recorded.db, writer=False) as store:
        image = store.read_photo(first["photo_file"])
    assert image is not None and hashlib.sha256(image).hexdigest() == first["photo_sha256"]
    assert all(r["photo_file"] == r["photo_sha256"] == "" for r in rows if r["lesion_id"] != "L1")


def test_csv_has_one_row_per_cycle_and_round_trips_the_device_measured_durations(
        recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "csv", "--bom")
    assert code == 0 and out.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    results = _freeze_results(recorded.db)
    assert len(rows) == len(results) == 5  # 1 + 1 + 2 + 1 cycles
    by_key = {(r["lesion_id"], int(r["cycle"])): r for r in rows}
    for result in results:
        row = by_key[(result["lesion_id"], result["cycle"])]
        assert int(row["freeze_ms_device"]) == result["freeze_ms_device"]
        assert row["thaw_ms"] == ("" if result.get("thaw_ms") is None else str(result["thaw_ms"]))
        assert float(row["cartridge_seconds"]) == result["cartridge_seconds"]
        assert row["measured_by"] == "device"
    assert by_key[("L3", 1)]["thaw_ms"] != ""  # the plantar wart's thaw between its two cycles
    assert by_key[("L4", 1)]["reimbursable"] == "no"
    for row in rows:
        date.fromisoformat(row["result_at"][:10])


def test_exports_hold_nothing_about_the_patient_beyond_the_pseudonymous_id(
        recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    _, fhir_text, _ = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "fhir")
    (bundle,) = [json.loads(line) for line in fhir_text.splitlines()]  # several sessions would be one Bundle per line
    (patient,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert set(patient) == {"resourceType", "meta", "identifier"}
    assert [i["value"] for i in patient["identifier"]] == ["P-0042"]
    assert patient["meta"]["security"][0]["code"] == "PSEUDED"
    (practitioner,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner"]
    assert set(practitioner) == {"resourceType", "identifier"}

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        return {k for v in value for k in keys(v)} if isinstance(value, list) else set()
    about_people = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] != "Device"]  # deviceName is the device's
    assert not {"name", "birthDate", "gender", "address", "telecom", "photo", "contact"} & keys(about_people)
    _, csv_text, _ = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "csv")
    assert [c for c in csv.DictReader(io.StringIO(csv_text)).fieldnames or [] if "patient" in c] == ["patient"]
    _, json_text, _ = _run(capsys, "records", "export", "--db", str(recorded.db), "--format", "json")
    session = json.loads(json_text)["sessions"][0]
    assert session["patient"] == "P-0042" and not {"name", "birth_date", "address"} & set(session)


def test_the_export_of_a_tampered_store_is_refused_naming_the_first_bad_event(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "tampered.sqlite"
    shutil.copy(recorded.db, db)
    with sqlite3.connect(db) as raw:
        seq = raw.execute("SELECT seq FROM events WHERE kind = 'freeze_result' ORDER BY seq LIMIT 1").fetchone()[0]
        raw.executescript("DROP TRIGGER events_no_update;")
        raw.execute("UPDATE events SET payload = replace(payload, '\"freeze_ms_device\":', '\"freeze_ms_device\":1') WHERE seq = ?", (seq,))
    out_file = tmp_path / "export.csv"
    for fmt in ("fhir", "csv", "json"):
        code, out, err = _run(capsys, "records", "export", "--db", str(db), "--format", fmt, "--out", str(out_file))
        assert code == 1 and out == "" and not out_file.exists()
        assert f"refusing to export: event {seq} (freeze_result," in err
    code, _, err = _run(capsys, "report", "--db", str(db))
    assert code == 1 and f"event {seq} (freeze_result," in err


def test_the_day_report_counts_acts_gas_and_alarms_and_draws_the_chart(
        recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RecordStore(recorded.db, writer=False) as store:
        day = next(iter(store.events())).ts_utc
    local_day = datetime.fromisoformat(day).astimezone().date().isoformat()
    page = tmp_path / "day.html"
    code, out, err = _run(capsys, "report", "--db", str(recorded.db), "--date", local_day, "--html", str(page), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["day"] == local_day and report["sessions_by_status"] == {"completed": 1}
    assert report["lesions_by_profile"] == {"actinic-keratosis": {"treated": 2, "not_completed": 0},
                                            "plantar-wart": {"treated": 1, "not_completed": 0},
                                            "solar-lentigo": {"treated": 1, "not_completed": 0}}
    assert set(report["acts_by_code"]) == {"QANP007", "QZNP004"} and report["acts_with_unknown_tariff"] == 2
    assert report["aesthetic_lesions"] == 1 and report["unconfirmed_sessions"] == 1
    used = sum(p["cartridge_seconds"] for p in _freeze_results(recorded.db))
    assert report["cartridge_seconds"] == pytest.approx(used)
    assert report["cartridge_cost_eur"] == pytest.approx(round(used * 30 / 350, 2))  # 23 g: 30 EUR for 350 s (the sheet)
    assert "calibration_overdue" in report["alarms"] and "SIM-EXPORT" in report["devices"]
    assert file_mode(page) == 0o600
    text = page.read_text(encoding="utf-8")
    svg = text[text.index("<svg"): text.index("</svg>") + len("</svg>")]
    ET.fromstring(svg)  # well-formed, standalone
    assert "P-0042" in text and "QANP007" in text and "<script" not in text
    code, out, _ = _run(capsys, "report", "--db", str(recorded.db), "--date", "2001-01-01")
    assert code == 0 and "0 session(s)" in out


def test_cryosurgery_by_probe_exports_as_cryosurgery_with_its_ccam_act_and_tissue_temperatures(
        make_rig: Callable[..., Rig], capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig(kind="probe", scale=50)
    treatment, procedure = rig.procedure("superficial-bcc", region="nose")
    procedure.arm()
    procedure.run()
    treatment.end()
    rig.store.close()  # the CLI opens the store as its own reader
    code, out, err = _run(capsys, "records", "export", "--db", str(rig.store.path), "--format", "fhir", "--session",
                          treatment.session_id, "--validate")
    assert code == 0, err
    resources = [e["resource"] for e in json.loads(out)["entry"]]
    (proc,) = [r for r in resources if r["resourceType"] == "Procedure"]
    assert proc["code"]["text"] == "Cryosurgery by contact cryoprobe (controlled destruction)"
    assert {c["code"] for c in proc["code"]["coding"]} == {"26782000", "QZNP022"}  # one lesion by contact cryode
    tissue = [r for r in resources if r["resourceType"] == "Observation" and r["valueQuantity"]["code"] == "Cel"]
    assert len(tissue) == 2 and all(o["valueQuantity"]["value"] <= -50 for o in tissue)
