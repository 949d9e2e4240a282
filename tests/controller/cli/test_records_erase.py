"""`givre records erase`: what the clinic sees. One line for an unknown patient or a --why that
names someone, a question unless --yes, and the patient id never printed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.config import Config
from controller.procedure.treatment import Treatment
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from profiles.library import load_builtins


def _store_with_patients(db: Path, *patients: str) -> None:
    """A manual session per patient, its lesion recorded (the procedure is not run: no cycle needed here)."""
    with RecordStore(db) as store:
        for patient in patients:
            treatment = Treatment(store, Config(), Clock(1), SessionInfo(operator="dr-a", patient=patient), None)
            treatment.start()
            treatment.lesion(Lesion(profile_id="actinic-keratosis", site=Site(region=Region.HAND), description="a lesion"),
                             load_builtins().get("actinic-keratosis"))
            treatment.end()


def _erase(capsys: pytest.CaptureFixture[str], db: Path, patient: str, *extra: str) -> tuple[int, str, str]:
    code = main(["records", "erase", "--patient", patient, "--why", "retention period over", "--db", str(db), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _patients(db: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["records", "list", "--db", str(db), "--json"]) == 0
    return [s["patient"] for s in json.loads(capsys.readouterr().out)]


def test_an_unknown_patient_is_refused_in_one_line_without_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_patients(db, "P-0001")
    code, out, err = _erase(capsys, db, "P-0404", "--yes")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "no key for that patient id" in err and "nothing was erased" in err and "P-0404" not in err
    assert _patients(db, capsys) == ["P-0001"]


def test_erase_asks_first_and_a_no_erases_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_patients(db, "P-0001", "P-0002", "P-0001")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _out, err = _erase(capsys, db, "P-0001")
    assert code == 1 and "nothing erased" in err
    assert _patients(db, capsys) == ["P-0001", "P-0002", "P-0001"]
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, _err = _erase(capsys, db, "P-0001")
    assert code == 0 and "2 session(s)" in out and "P-0001" not in out
    assert _patients(db, capsys) == ["erased", "P-0002", "erased"]
    code, _out, err = _erase(capsys, db, "P-0001", "--yes")  # erased already: its key is gone
    assert code == 2 and "already erased" in err


def test_a_why_that_names_someone_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_patients(db, "P-0001")
    code = main(["records", "erase", "--patient", "P-0001", "--why", "asked by jeanne.dupont@example.org", "--db", str(db), "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "--why: the reason looks like an e-mail address" in err
    assert "dupont" not in err
    assert _patients(db, capsys) == ["P-0001"]
