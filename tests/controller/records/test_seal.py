"""Forward-secure sealing: with the verification key, a rewritten, replaced, truncated or renumbered
record fails verification; an untouched one passes, and a writer refuses a store that does not follow
its last seal."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from controller.records import seal
from controller.records.private_files import file_mode
from controller.records.store import RecordStore, SealBroken
from firmware_bridge.clock import Clock
from tests.support.records import freeze_result

GENESIS = "0" * 64


def _record_session(store: RecordStore, session_id: str, patient: str) -> None:
    """A session as the procedure records it (the fields a forger would want), ending in its seal."""
    store.append("session_started", {"patient": patient, "operator": "dr-a", "mode": "manual", "device": None, "calibration": {},
                                     "time_scale": 1}, session_id)
    store.append("freeze_result", freeze_result(), session_id)
    store.append("session_ended", {"status": "completed"}, session_id)
    store.seal()


@pytest.fixture
def sealed_store(tmp_path: Path) -> tuple[Path, bytes]:
    """Two sessions, each sealed at its end, under a fresh verification key; the store closed."""
    path = tmp_path / "r.sqlite"
    key = seal.new_verification_key()
    with RecordStore(path) as store:
        store.set_up_keys(key)
        _record_session(store, "S1", "P-0042")
        _record_session(store, "S2", "P-0043")
    return path, key


def _verdict(path: Path, key: bytes | None) -> seal.SealVerdict:
    with RecordStore(path, writer=False) as store:
        return store.check_seals(key)


def _forge(path: Path, edit: str, params: tuple[object, ...] = ()) -> None:
    """What an attacker with sqlite3 and hashlib does: drop the triggers, edit, re-hash every row after."""
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;"
                     "DROP TRIGGER IF EXISTS seals_no_update; DROP TRIGGER IF EXISTS seals_no_delete;")
    db.execute(edit, params)
    _rehash(db)
    db.commit()
    db.close()


def _rehash(db: sqlite3.Connection) -> None:
    prev = GENESIS
    rows = db.execute("SELECT seq, session_id, ts_utc, mono_ms, kind, payload FROM events ORDER BY seq").fetchall()
    for seq, sid, ts, mono, kind, payload in rows:
        body = json.dumps([prev, seq, sid, ts, mono, kind, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        db.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest


def _append_and_crash(path: Path) -> None:
    """A Givre that records one event and is killed before it seals it."""
    script = ("import os, sys; from pathlib import Path; from controller.records.store import RecordStore; "
              "store = RecordStore(Path(sys.argv[1])); "
              "store.append('fire_refused', {'lesion_id': 'L1', 'reason': 'note 1'}, None); os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)


def _chain_intact(path: Path) -> bool:
    with RecordStore(path, writer=False) as store:
        return store.verify() is None


def test_an_untouched_sealed_store_verifies_across_close_and_reopen(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    with RecordStore(path) as store:  # reopened by a writer: the open check passes, and it goes on sealing
        _record_session(store, "S3", "P-0044")
    verdict = _verdict(path, key)
    assert verdict.ok and verdict.key_checked
    assert verdict.sealed_to_seq == 9 and verdict.unsealed_events == 0 and verdict.sealed_epochs == 3


def test_events_after_the_last_seal_are_counted_not_failed(sealed_store: tuple[Path, bytes], tmp_path: Path) -> None:
    path, key = sealed_store
    store = RecordStore(path)
    store.append("fire_refused", {"lesion_id": "L1", "reason": "not sealed yet"}, None)
    store.append("fire_refused", {"lesion_id": "L1", "reason": "nor this"}, None)
    verdict = _verdict(path, key)  # read while the writer is still open
    store.close()
    assert verdict.ok and verdict.unsealed_events == 2 and verdict.sealed_to_seq == 6


def test_rewriting_a_patient_and_a_freeze_then_rehashing_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    _forge(path, "UPDATE events SET payload = replace(payload, 'P-0042', 'P-9999') WHERE seq = 1")
    _forge(path, "UPDATE events SET payload = replace(payload, '5000', '30000') WHERE seq = 2")
    assert _chain_intact(path)  # the chain alone cannot tell
    verdict = _verdict(path, key)
    assert not verdict.ok and "changed after it was sealed" in str(verdict.problem)


def test_rewriting_the_seals_too_fails_on_their_macs(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    _forge(path, "UPDATE events SET payload = replace(payload, '5000', '30000') WHERE seq = 2")
    db = sqlite3.connect(path)
    for store_id, epoch, last_seq in db.execute("SELECT store_id, epoch, last_seq FROM seals").fetchall():
        (head,) = db.execute("SELECT hash FROM events WHERE seq = ?", (last_seq,)).fetchone()
        db.execute("UPDATE seals SET head_hash = ? WHERE store_id = ? AND epoch = ?", (head, store_id, epoch))
    db.commit()
    db.close()
    verdict = _verdict(path, key)
    assert not verdict.ok and "does not match its MAC" in str(verdict.problem)


def test_insert_or_replace_of_a_row_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    db = sqlite3.connect(path)
    row = db.execute("SELECT seq, session_id, ts_utc, mono_ms, kind, payload, prev_hash, hash FROM events WHERE seq = 2").fetchone()
    db.execute("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?)", (*row[:5], row[5].replace("5000", "30000"), *row[6:]))
    db.commit()
    db.close()
    assert not _chain_intact(path)  # replaced in place: the chain names it
    _forge(path, "SELECT 1")  # and once re-hashed, the chain verifies but the seals do not
    assert _chain_intact(path) and not _verdict(path, key).ok


def test_truncating_the_last_session_and_its_seals_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER events_no_delete; DROP TRIGGER seals_no_delete;"
                     "DELETE FROM seals WHERE last_seq > 3; DELETE FROM events WHERE session_id = 'S2';")
    db.commit()
    db.close()
    assert _chain_intact(path)
    verdict = _verdict(path, key)
    assert not verdict.ok and "truncated" in str(verdict.problem)
    assert not _verdict(path, None).ok  # the key state's epoch shows it without the key too


def test_deleting_a_middle_session_and_renumbering_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    _forge(path, "DELETE FROM events WHERE session_id = 'S1'")
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET seq = seq - 3")
    _rehash(db)
    db.commit()
    db.close()
    assert _chain_intact(path)
    assert not _verdict(path, key).ok


def test_a_missing_key_state_on_a_sealed_store_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    seal.key_state_path(path).unlink()
    verdict = _verdict(path, key)
    assert not verdict.ok and "key state is missing" in str(verdict.problem)


def test_a_wrong_key_is_named_as_wrong_not_as_tampering(sealed_store: tuple[Path, bytes]) -> None:
    path, _key = sealed_store
    with pytest.raises(seal.SealKeyError, match=r"this verification key \(fingerprint .*\) is not this store's"):
        _verdict(path, seal.new_verification_key())


def test_a_forged_key_state_fails(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    state = seal.load_key_state(seal.key_state_path(path))
    assert state is not None
    seal.replace_key_state(seal.key_state_path(path), seal.KeyState(state.store_id, state.epoch, bytes(32)))
    assert "forged" in str(_verdict(path, key).problem)


@pytest.mark.parametrize("how", ["truncated", "tail edited", "last sealed event edited", "sealed event rehashed"])
def test_a_writer_refuses_a_store_that_does_not_follow_its_last_seal(sealed_store: tuple[Path, bytes], how: str) -> None:
    path, _key = sealed_store
    _append_and_crash(path)  # one event after the last seal, never sealed
    db = sqlite3.connect(path)
    if how == "truncated":
        db.executescript("DROP TRIGGER events_no_delete; DROP TRIGGER seals_no_delete;"
                         "DELETE FROM seals WHERE last_seq > 3; DELETE FROM events WHERE seq > 3;")
    elif how == "tail edited":
        db.executescript("DROP TRIGGER events_no_update; UPDATE events SET payload = '{\"i\":2}' WHERE seq = 7;")
    elif how == "last sealed event edited":
        db.executescript("DROP TRIGGER events_no_update; UPDATE events SET payload = '{}' WHERE seq = 6;")
    db.commit()
    db.close()
    if how == "sealed event rehashed":
        _forge(path, "UPDATE events SET payload = replace(payload, 'P-0043', 'P-9999') WHERE seq = 4")
    with pytest.raises(SealBroken, match=r"r\.sqlite: .*this Givre will not add to it\. Run `givre records verify"):
        RecordStore(path)
    with RecordStore(path, writer=False) as reader:  # reading stays possible
        assert reader.head()[0] >= 3


def test_the_key_state_is_private_and_holds_only_the_current_key(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    key_path = seal.key_state_path(path)
    state = seal.load_key_state(key_path)
    assert file_mode(key_path) == 0o600
    assert state is not None and state.epoch == 2 and state.key == seal.key_at(key, 2)
    assert key.hex() not in key_path.read_text()


def test_sealing_with_nothing_new_is_a_no_op(sealed_store: tuple[Path, bytes]) -> None:
    path, _key = sealed_store
    with RecordStore(path) as store:
        assert store.seal() is None
        assert len(store.seals()) == 2


class SteppedClock(Clock):
    """A clock the test moves by hand (wall time: scale 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_an_epoch_open_for_fifteen_minutes_is_sealed_at_the_next_append(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    clock = SteppedClock()
    with RecordStore(path, clock=clock) as store:
        store.append("fire_refused", {"lesion_id": "L1", "reason": "note 1"}, None)
        clock.now += seal.EPOCH_SECONDS - 1
        store.append("fire_refused", {"lesion_id": "L1", "reason": "note 2"}, None)
        assert len(store.seals()) == 2
        clock.now += 1
        store.append("fire_refused", {"lesion_id": "L1", "reason": "note 3"}, None)
        assert [s.last_seq for s in store.seals()] == [3, 6, 9]
    assert _verdict(path, key).ok


def test_a_seal_whose_key_did_not_evolve_is_finished_by_the_next_writer(sealed_store: tuple[Path, bytes]) -> None:
    path, key = sealed_store
    key_path = seal.key_state_path(path)
    state = seal.load_key_state(key_path)
    assert state is not None
    seal.replace_key_state(key_path, seal.KeyState(state.store_id, state.epoch - 1, seal.key_at(key, state.epoch - 1)))
    assert _verdict(path, key).ok  # Givre stopped between the seal and the key's evolution: not tampering
    with RecordStore(path):
        pass
    moved_on = seal.load_key_state(key_path)
    assert moved_on is not None and moved_on.epoch == state.epoch


def test_a_store_without_keys_keeps_working_unsealed(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with RecordStore(path) as store:
        _record_session(store, "S1", "P-0042")
        assert store.seals() == []
    verdict = _verdict(path, None)
    assert verdict.ok and not verdict.sealing and not seal.key_state_path(path).exists()


def test_key_text_round_trips_and_names_a_typo() -> None:
    key = seal.new_verification_key()
    text = seal.key_text(key)
    assert len(text.split("-")) == 14
    assert seal.parse_key_text(text.lower().replace("-", " ")) == key
    typo = text[:6] + ("B" if text[6] != "B" else "C") + text[7:]  # group 2
    with pytest.raises(seal.SealKeyError, match="group 2 looks mistyped"):
        seal.parse_key_text(typo)
    with pytest.raises(seal.SealKeyError, match="'9' in group 1 is not a key character"):
        seal.parse_key_text("9" + text[1:])
    with pytest.raises(seal.SealKeyError, match="52 characters, a key has 56"):
        seal.parse_key_text(text[:-5])
