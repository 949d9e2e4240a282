"""`givre records setup-keys` and `givre records verify --verify-key`: what the clinic sees."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.records import seal
from controller.records.private_files import file_mode
from controller.records.store import RecordStore

KEY_TEXT = re.compile(r"^\s+((?:[A-Z2-7]{4}-){13}[A-Z2-7]{4})$", re.MULTILINE)


def _set_up(db: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, str, str]:
    """Run setup-keys; (the printed key text, all it printed, its warnings)."""
    assert main(["records", "setup-keys", "--db", str(db), *extra]) == 0
    out, err = capsys.readouterr()
    match = KEY_TEXT.search(out)
    assert match is not None, out
    return match.group(1), out, err


def _store_with_events(db: Path) -> None:
    with RecordStore(db) as store:
        for i in range(3):
            store.append("fire_refused", {"lesion_id": "L1", "reason": f"note {i}"}, "S1")


def test_setup_keys_prints_the_key_its_fingerprint_and_a_qr_code_and_seals_what_is_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    text, out, _err = _set_up(db, capsys, "--png", str(tmp_path / "key.png"), "--svg", str(tmp_path / "key.svg"))
    key = seal.parse_key_text(text)
    assert f"fingerprint {seal.fingerprint(seal.store_id_of(key))}" in out
    assert "OFF this machine" in out and "\u2580" in out  # the QR code, drawn in half blocks
    assert file_mode(seal.key_state_path(db)) == 0o600
    assert file_mode(tmp_path / "key.png") == 0o600 and (tmp_path / "key.png").read_bytes().startswith(b"\x89PNG")
    assert file_mode(tmp_path / "key.svg") == 0o600 and b"<svg" in (tmp_path / "key.svg").read_bytes()
    with RecordStore(db, writer=False) as store:
        assert [(s.epoch, s.last_seq) for s in store.seals()] == [(0, 3)]  # the events already there, sealed at once


def test_setup_keys_refuses_a_second_time_unless_forced_and_says_what_force_loses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    first, _out, _err = _set_up(db, capsys)
    assert main(["records", "setup-keys", "--db", str(db)]) == 2
    captured = capsys.readouterr()
    assert "a key state is already there" in captured.err and KEY_TEXT.search(captured.out) is None
    second, _out, err = _set_up(db, capsys, "--force")
    assert second != first
    old = seal.fingerprint(seal.store_id_of(seal.parse_key_text(first)))
    assert f"previous verification key (fingerprint {old}) still checks its seals (to event 3)" in err
    assert main(["records", "verify", "--db", str(db), "--verify-key", second]) == 0


def test_verify_with_the_key_reports_what_is_sealed_and_what_is_not_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    text, _out, _err = _set_up(db, capsys)
    store = RecordStore(db)
    store.append("fire_refused", {"lesion_id": "L1", "reason": "note 3"}, None)
    assert main(["records", "verify", "--db", str(db), "--verify-key", text.lower(), "--json"]) == 0
    store.close()
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["key_checked"] and report["events"] == 4 and report["first_bad_event"] is None
    assert report["sealed_to_seq"] == 3 and report["unsealed_events"] == 1 and report["sealed_epochs"] == 1
    key_file = tmp_path / "key.txt"
    key_file.write_text(text + "\n")
    assert main(["records", "verify", "--db", str(db), "--verify-key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "seals hold under this key: sealed up to event 4" in out and "0 event(s) after it not yet sealed" in out


def test_verify_without_the_key_says_it_proves_less(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    assert main(["records", "verify", "--db", str(db)]) == 0
    assert "this store is not sealed" in capsys.readouterr().out
    _set_up(db, capsys)
    assert main(["records", "verify", "--db", str(db)]) == 0
    assert "the chain is intact, but without the verification key this does not prove that nobody rewrote it" in capsys.readouterr().out


def test_verify_fails_on_a_rehashed_record_and_names_a_wrong_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    text, _out, _err = _set_up(db, capsys)
    db_conn = sqlite3.connect(db)
    db_conn.executescript("DROP TRIGGER events_no_delete; DROP TRIGGER seals_no_delete; DELETE FROM seals; DELETE FROM events;")
    db_conn.commit()
    db_conn.close()
    assert main(["records", "verify", "--db", str(db), "--verify-key", text]) == 1
    assert "TAMPERED: the key state is at epoch 1 but its last seal is none" in capsys.readouterr().out
    wrong = seal.key_text(seal.new_verification_key())
    assert main(["records", "verify", "--db", str(db), "--verify-key", wrong]) == 2
    err = capsys.readouterr().err
    assert "is not this store's" in err and "TAMPERED" not in err
    typo = text[:-1] + ("Q" if text[-1] != "Q" else "R")  # one letter off (a random key may already end in Q)
    assert main(["records", "verify", "--db", str(db), "--verify-key", typo]) == 2
    assert "mistyped" in capsys.readouterr().err


def test_a_writer_refused_on_open_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    _set_up(db, capsys)
    seal.key_state_path(db).unlink()
    assert main(["records", "bill", "S1", "--db", str(db), "--accept"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "key state r.sqlite.sealkey is missing: history may have been truncated" in err and "read-only commands" in err
    assert main(["records", "list", "--db", str(db)]) == 0


def test_the_day_report_prints_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    _store_with_events(db)
    assert main(["report", "--db", str(db)]) == 0
    assert "Checkpoint (keep a copy off this machine): 3 events, head " in capsys.readouterr().out
    _set_up(db, capsys)
    assert main(["report", "--db", str(db)]) == 0
    assert re.search(r"Checkpoint .*: 3 events, head [0-9a-f]{64}, last seal epoch 0 \(to event 3\)", capsys.readouterr().out)
