"""Personal fields encrypted at rest under a per-patient key, and one patient erased by destroying
theirs: the chain and the seals still verify, every reader says `erased` for that patient only, a
missing key store reads as unreadable, and a ciphertext moved to another session does not decrypt."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.config import Config
from controller.procedure.treatment import Treatment
from controller.records.history import load_sessions
from controller.records.keystore import key_store_path
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.personal import ERASED, KEY_STORE_MISSING, NOT_DECRYPTED
from controller.records.private_files import file_mode
from controller.records.seal import key_text, new_verification_key
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from profiles.library import load_builtins
from sim.device import SimulatedDevice
from tests.support.images import png
from tests.support.records import append_as_older_givre

# Each patient's personal fields, distinctive enough to be grepped for in the files' bytes.
PATIENTS = {
    "PZQ-7731": ("nevus-zebra-quartz", "behind-the-left-earlobe-xylo"),
    "PKW-4410": ("wart-kilo-whiskey", "between-third-toes-yankee"),
}


@dataclass(frozen=True)
class Recorded:
    db: Path
    verification_key: str
    sessions: dict[str, str]  # patient -> session id


def _treat(store: RecordStore, link: Link | None, clock: Clock, patient: str, photo: Path) -> str:
    description, detail = PATIENTS[patient]
    treatment = Treatment(store, Config(), clock, SessionInfo(operator="dr-a", patient=patient), link)
    treatment.start()
    lesion = Lesion(profile_id="actinic-keratosis", site=Site(region=Region.CHEEK, side="left", detail=detail),
                    description=description, photo=photo)
    procedure = treatment.lesion(lesion, load_builtins().get("actinic-keratosis"), auto=True)
    if link is not None:
        procedure.arm()
        while not procedure.finished:
            procedure.tick()
    treatment.end()
    return treatment.session_id


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Two patients' sessions with cycles, a photo each, on a sealed store."""
    folder = tmp_path_factory.mktemp("erasure")
    db = folder / "records.sqlite"
    clock = Clock(50)
    verification_key = new_verification_key()
    with SimulatedDevice(clock=clock, serial="SIM-ERASE") as device:
        link = Link.open(device.serve_pty(), clock=clock, watchdog_ms=60_000)
        link.wait_for_telemetry()
        with RecordStore(db, clock=clock) as store:
            CartridgeLedger(store, Config()).load("23g", date.today())
            store.set_up_keys(verification_key)  # sealed from here: each session's end seals it
            sessions = {patient: _treat(store, link, clock, patient, png(folder / f"{patient}.png")) for patient in PATIENTS}
        link.close()
    return Recorded(db, key_text(verification_key), sessions)


@pytest.fixture
def copy(recorded: Recorded, tmp_path: Path) -> Iterator[Recorded]:
    """A copy of the recorded store, its key store, seal key state and photos: each test may erase."""
    folder = tmp_path / "copy"
    shutil.copytree(recorded.db.parent, folder)
    yield Recorded(folder / recorded.db.name, recorded.verification_key, recorded.sessions)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _erase(capsys: pytest.CaptureFixture[str], db: Path, patient: str) -> tuple[int, str, str]:
    return _run(capsys, "records", "erase", "--patient", patient, "--why", "GDPR art. 17 request", "--by", "dr-a", "--db", str(db),
                "--yes")


def test_no_personal_field_is_in_the_store_files_in_clear(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    image = png(tmp_path / "lesion.png")
    with RecordStore(db) as store:
        _treat(store, None, Clock(1), "PZQ-7731", image)  # manual mode: the lesion recorded, no cycle needed
        written = db.read_bytes() + Path(f"{db}-wal").read_bytes()  # what is on disk while the writer runs
        photos = [p.read_bytes() for p in store.photos_dir.iterdir()]
    written += db.read_bytes()
    for text in ("PZQ-7731", *PATIENTS["PZQ-7731"]):
        assert text.encode() not in written
    assert len(photos) == 1 and image.read_bytes() not in photos[0] and b"IHDR" not in photos[0]
    assert b"PZQ-7731" not in key_store_path(db).read_bytes()  # the key store holds a keyed hash, never the id
    assert file_mode(key_store_path(db)) == 0o600
    with RecordStore(db, writer=False) as store:
        (view,) = load_sessions(store)
        assert (view.patient, view.lesions[0].description, view.lesions[0].site["detail"]) == ("PZQ-7731", *PATIENTS["PZQ-7731"])
        assert view.lesions[0].photo is not None and store.read_photo(view.lesions[0].photo["file"]) is not None


def test_the_same_patient_keeps_one_key_across_sessions(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        assert store.patient_key("PZQ-7731") == store.patient_key("PZQ-7731") != store.patient_key("PKW-4410")


def test_erasing_one_patient_keeps_the_chain_and_seals_and_the_other_patient(
        copy: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    erased, kept = copy.sessions["PZQ-7731"], copy.sessions["PKW-4410"]
    with RecordStore(copy.db, writer=False) as store:
        photo_files = {v.session_id: store.photos_dir / v.lesions[0].photo["file"] for v in load_sessions(store) if v.lesions[0].photo}
    assert set(photo_files) == {erased, kept}
    code, out, err = _erase(capsys, copy.db, "PZQ-7731")
    assert code == 0, err
    assert "PZQ-7731" not in out + err and f"1 session(s) {erased}" in out

    assert _run(capsys, "records", "verify", "--db", str(copy.db))[0] == 0
    code, out, _ = _run(capsys, "records", "verify", "--db", str(copy.db), "--verify-key", copy.verification_key)
    assert code == 0, out

    code, out, _ = _run(capsys, "records", "list", "--db", str(copy.db), "--json")
    listed = {s["session_id"]: s["patient"] for s in json.loads(out)}
    assert listed == {erased: ERASED, kept: "PKW-4410"}
    code, out, _ = _run(capsys, "records", "show", erased, "--db", str(copy.db), "--json")
    payloads = {e["kind"]: e["payload"] for e in json.loads(out)["events"]}
    assert payloads["session_started"]["patient"] == ERASED
    assert (payloads["lesion_recorded"]["description"], payloads["lesion_recorded"]["site"]["detail"]) == (ERASED, ERASED)
    assert payloads["lesion_recorded"]["photo"] is None

    code, out, _ = _run(capsys, "records", "export", "--db", str(copy.db), "--format", "csv")
    rows = {line.split(",")[0]: line for line in out.splitlines()[1:]}
    assert ",erased," in rows[erased] and "cheek, left, erased" in rows[erased]
    assert "PKW-4410" in rows[kept] and PATIENTS["PKW-4410"][1] in rows[kept]
    code, out, _ = _run(capsys, "records", "export", "--db", str(copy.db), "--format", "json")
    sessions = {s["session_id"]: s for s in json.loads(out)["sessions"]}
    assert sessions[erased]["patient"] == ERASED and sessions[erased]["lesions"][0]["description"] == ERASED
    assert sessions[erased]["lesions"][0]["photo"] is None
    assert sessions[kept]["lesions"][0]["description"] == PATIENTS["PKW-4410"][0]
    code, out, _ = _run(capsys, "records", "export", "--db", str(copy.db), "--format", "fhir")
    bundles = {b["identifier"]["value"]: [e["resource"] for e in b["entry"]] for b in map(json.loads, out.splitlines())}
    assert _patient_of(bundles[erased]) == ERASED and _patient_of(bundles[kept]) == "PKW-4410"
    assert not [r for r in bundles[erased] if r["resourceType"] == "Media"]
    assert [r for r in bundles[kept] if r["resourceType"] == "Media"]
    assert PATIENTS["PZQ-7731"][0] not in json.dumps(bundles[erased])

    code, out, _ = _run(capsys, "report", "--db", str(copy.db), "--json")
    assert code == 0
    patients = {s["session_id"]: s["patient"] for s in json.loads(out)["sessions"]}
    assert patients == {erased: ERASED, kept: "PKW-4410"}

    assert not photo_files[erased].exists() and photo_files[kept].exists()
    with RecordStore(copy.db, writer=False) as store:
        (event,) = [e for e in store.events() if e.kind == "patient_erased"]
        assert event.payload["why"] == "GDPR art. 17 request" and event.payload["by"] == "dr-a"
        assert event.payload["sessions"] == [erased] and "PZQ-7731" not in json.dumps(event.payload)
    assert _run(capsys, "records", "rebuild", "--db", str(copy.db))[1].endswith("every index matched the log\n")


def _patient_of(resources: list[dict[str, Any]]) -> str:
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    return str(patient["identifier"][0]["value"])


def test_a_missing_key_store_reads_as_unreadable_with_one_warning(copy: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    key_store_path(copy.db).unlink()
    code, out, err = _run(capsys, "records", "list", "--db", str(copy.db), "--json")
    assert code == 0 and {s["patient"] for s in json.loads(out)} == {KEY_STORE_MISSING}
    assert len(err.splitlines()) == 1 and "key store missing" in err and "Traceback" not in err
    code, out, err = _run(capsys, "records", "export", "--db", str(copy.db), "--format", "csv")
    assert code == 0 and KEY_STORE_MISSING in out and len(err.splitlines()) == 1
    code, out, _ = _run(capsys, "report", "--db", str(copy.db), "--json")
    assert code == 0 and {s["patient"] for s in json.loads(out)["sessions"]} == {KEY_STORE_MISSING}


def test_a_writer_does_not_start_a_new_key_store_beside_encrypted_records(copy: Recorded) -> None:
    key_store_path(copy.db).unlink()
    with RecordStore(copy.db) as store, pytest.raises(Exception, match="key store missing, and this record holds encrypted"):
        store.patient_key("PZQ-9999")
    assert not key_store_path(copy.db).exists()


def test_a_ciphertext_moved_to_another_session_does_not_decrypt(copy: Recorded) -> None:
    first, second = copy.sessions["PZQ-7731"], copy.sessions["PKW-4410"]
    with RecordStore(copy.db, writer=False) as store:
        envelope = json.loads(store._db.execute("SELECT patient FROM sessions WHERE session_id = ?", (first,)).fetchone()[0])
        assert store.personal.text(envelope, first, "patient") == "PZQ-7731"
        assert store.personal.text(envelope, second, "patient") == NOT_DECRYPTED  # bound to its session by the associated data
        assert store.personal.text(envelope, first, "L1/description") == NOT_DECRYPTED  # and to its field


def test_a_plaintext_record_from_before_encryption_still_reads(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with RecordStore(db) as store:  # what an older Givre appended: the fields in clear
        append_as_older_givre(store, "session_started", {"operator": "dr-a", "patient": "P-OLD-1", "mode": "manual", "device": None,
                                         "calibration": {}, "time_scale": 1}, "S-OLD")
        append_as_older_givre(store, "lesion_recorded", {"lesion_id": "L1", "profile": {"id": "actinic-keratosis", "name_fr": "kératose"},
                                         "site": {"region": "cheek", "side": None, "detail": "old detail"}, "zone": "face",
                                         "description": "old description", "photo": None}, "S-OLD")
    with RecordStore(db, writer=False) as store:
        (view,) = load_sessions(store)
        assert (view.patient, view.lesions[0].description, view.lesions[0].site_text) == ("P-OLD-1", "old description",
                                                                                         "cheek, old detail")
        assert next(store.session_summaries("S-OLD"))["patient"] == "P-OLD-1"
        assert store.key_store_warning() is None
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT patient FROM sessions").fetchone()[0] == "P-OLD-1"
