"""Device- and record-sourced text on a terminal: control characters shown as \\xNN, never sent raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli.main import main
from controller.records.store import RecordStore
from controller.records.text import printable
from tests.support.records import append_as_older_givre

HOSTILE_SERIAL = "SN\x1b[2J\x1b]0;pwned\x07=1+1\x9b"


def test_control_characters_are_escaped_and_the_rest_is_kept() -> None:
    assert printable("SN\x1b[2J") == "SN\\x1b[2J"
    assert printable("a\x00b\x7fc\x9bd\te\nf") == "a\\x00b\\x7fc\\x9bd\\x09e\\x0af"
    assert printable("verrue plantaire, 2e métatarsien") == "verrue plantaire, 2e métatarsien"
    assert printable("line 1\nline\x1b 2", keep_newlines=True) == "line 1\nline\\x1b 2"


def _store_with_hostile_serial(db: Path) -> None:
    with RecordStore(db) as store:
        append_as_older_givre(store, "session_started", {"operator": "dr-07", "patient": "P-1", "mode": "device", "calibration": {},
                                         "device": {"serial": HOSTILE_SERIAL, "kind": "spray", "firmware": "1.0.0"}}, "S1")


@pytest.mark.parametrize("command", [["records", "list"], ["records", "show", "S1"]])
def test_records_list_and_show_escape_what_the_record_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            command: list[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_hostile_serial(db)
    assert main([*command, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b" in out or "\\u001b" in out  # show prints the payload as JSON, which already spells C0 controls \\u00NN
    assert "\\x9b" in out


def test_the_day_report_escapes_the_device_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_hostile_serial(db)
    with RecordStore(db) as store:
        append_as_older_givre(store, "session_ended", {"status": "aborted", "lesions": 0}, "S1")
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "SN\\x1b[2J\\x1b]0;pwned\\x07=1+1\\x9b" in out and "\x1b" not in out
