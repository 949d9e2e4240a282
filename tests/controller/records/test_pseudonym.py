"""The pseudonym rule: personal data refused in one line that never repeats it, a surname warned about."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.cli.main import main
from controller.config import Config, ConfigError, read_toml
from controller.records.lesion import SessionInfo
from controller.records.pseudonym import PseudonymRefused, check_pseudonym

REFUSED = [
    ("jean.dupont@example.fr", "looks like an e-mail address"),
    ("2570375123456", "looks like a French social-security number (NIR)"),
    ("257037512345678", "looks like a French social-security number (NIR)"),
    ("2 57 03 75 123 456 78", "looks like a French social-security number (NIR)"),
    ("1-57-03-2A-123-456", "looks like a French social-security number (NIR)"),
    ("DUPONT_Jeanne_1957-03-12", "looks like a name with a birth date"),
    ("dupont12031957", "looks like a name with a birth date"),
    ("Jean Dupont", "has a space (a name?)"),
    ("", "is empty"),
    ("#42", "is not in the practice's pseudonym format"),
]


@pytest.mark.parametrize(("value", "kind"), REFUSED)
def test_personal_data_is_refused_in_one_line_that_does_not_repeat_it(value: str, kind: str) -> None:
    with pytest.raises(PseudonymRefused) as caught:
        check_pseudonym("--patient", value, "patient")
    line = str(caught.value)
    assert line.startswith(f"--patient: the patient id {kind}; allowed: ") and "\n" not in line
    assert "Use the practice's pseudonymous patient number" in line
    assert not value or value not in line


@pytest.mark.parametrize("value", ["Dupont", "DUPONT", "Jean.Dupont", "jean-dupont"])
def test_what_looks_like_a_surname_is_let_through_with_a_warning(value: str) -> None:
    warning = check_pseudonym("patient", value, "patient")
    assert warning is not None and warning.startswith("patient: the patient id looks like a surname") and value not in warning


@pytest.mark.parametrize("value", ["P-0042", "anonymous", "operator", "dr-07", "2024-0042", "P-1957-03-12", "123456789012"])
def test_pseudonymous_ids_pass_silently(value: str) -> None:
    assert check_pseudonym("--patient", value, "patient") is None


def test_a_clinic_pattern_narrows_the_ids_and_is_named_in_the_refusal(tmp_path: Path) -> None:
    pattern = "^P-[0-9]{4}$"
    assert check_pseudonym("--patient", "P-0042", "patient", pattern) is None
    with pytest.raises(PseudonymRefused, match=r"is not in the practice's pseudonym format; allowed: .*matching '\^P-\[0-9\]\{4\}\$'"):
        check_pseudonym("--patient", "X-0042", "patient", pattern)
    with pytest.raises(PseudonymRefused, match="e-mail"):  # the built-in refusals whatever the pattern lets through
        check_pseudonym("--patient", "a@b.fr", "patient", ".*")
    config_file = tmp_path / "config.toml"
    config_file.write_text('pseudonym_pattern = "^P-[0-9"\n')
    with pytest.raises(ConfigError, match=r"pseudonym_pattern = .*not a regular expression"):
        read_toml(config_file, Config, ConfigError)


def test_the_session_model_refuses_personal_data_on_every_path() -> None:
    with pytest.raises(ValidationError, match="looks like an e-mail address"):
        SessionInfo(operator="dr-07", patient="jean@example.fr")
    with pytest.raises(ValidationError, match="social-security"):
        SessionInfo(operator="2570375123456", patient="P-1")


def test_run_refuses_an_email_patient_in_one_line_before_anything_is_recorded(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    code = main(["run", "--manual", "--profile", "solar-lentigo", "--site", "cheek", "--patient", "jeanne.dupont@example.fr",
                 "--db", str(db), "--yes"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("givre run: --patient: the patient id looks like an e-mail address; allowed: ")
    assert "dupont" not in err and not db.exists()


def test_run_warns_on_a_surname_in_one_stderr_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The warning comes before connecting; the port here is missing, so the run stops right after it."""
    code = main(["run", "--port", str(tmp_path / "no-such-port"), "--profile", "common-wart", "--site", "hand",
                 "--patient", "Dupont", "--db", str(tmp_path / "r.sqlite"), "--yes"])
    err = capsys.readouterr().err.splitlines()
    assert code != 0
    assert err[0] == ("givre run: warning: --patient: the patient id looks like a surname; if it is a name, start again with the "
                      "practice's pseudonymous patient number")


def test_bill_by_checks_the_operator_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["records", "bill", "S1", "--accept", "--by", "dr@example.fr", "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("givre records: --by: the operator id looks like an e-mail address") and "dr@" not in err
