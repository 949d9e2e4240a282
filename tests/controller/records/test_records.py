"""The record store: durable, append-only, tamper-evident, private, one writer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.cli.main import main
from controller.records.private_files import file_mode
from controller.records.store import RecordStore, StoreUnavailable
from tests.support.images import jpeg_with_gps


def test_events_are_chained_and_verified(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        for i in range(5):
            store.append("fire_refused", {"lesion_id": "L1", "reason": f"note {i}"}, "S1")
        assert store.verify() is None
        count, head = store.head()
        assert count == 5 and len(head) == 64
        assert [e.payload["reason"] for e in store.events("S1")] == [f"note {i}" for i in range(5)]


def test_update_and_delete_are_refused_by_the_store_itself(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        store.append("fire_refused", {"lesion_id": "L1", "reason": "note 1"}, "S1")
    db = sqlite3.connect(tmp_path / "r.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET payload = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events")
    db.close()


def _tamper(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;" + sql)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "first_bad"),
    [
        ("UPDATE events SET payload = '{\"i\":99}' WHERE seq = 3", 3),
        ("DELETE FROM events WHERE seq = 2", 3),
        ("UPDATE events SET ts_utc = '2020-01-01T00:00:00.000+00:00' WHERE seq = 4", 4),
    ],
    ids=["edited", "deleted", "backdated"],
)
def test_a_tampered_store_names_the_first_bad_event(tmp_path: Path, sql: str, first_bad: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.sqlite"
    with RecordStore(path) as store:
        for i in range(6):
            store.append("fire_refused", {"lesion_id": "L1", "reason": f"note {i}"}, "S1")
    _tamper(path, sql)
    with RecordStore(path, writer=False) as store:
        bad = store.verify()
    assert bad is not None and bad.seq == first_bad
    assert main(["records", "verify", "--db", str(path)]) == 1
    assert f"TAMPERED: event {first_bad} " in capsys.readouterr().out


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "r.sqlite"
    with RecordStore(path) as store:
        store.append("fire_refused", {"lesion_id": "L1", "reason": "note"}, None)
        digest, name = store.store_photo(jpeg_with_gps(tmp_path / "lesion.jpg"), store.patient_key("P-0001"))
        assert file_mode(path) == 0o600 and file_mode(store.personal.path) == 0o600
        assert file_mode(store.photos_dir / name) == 0o600 and file_mode(store.photos_dir) == 0o700
        assert len(digest) == 64
    assert file_mode(path.parent) == 0o700


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with RecordStore(path):
        with pytest.raises(StoreUnavailable, match="another Givre is writing this record store"):
            RecordStore(path)
        with RecordStore(path, writer=False) as reader:  # reading while a session runs is fine
            assert reader.verify() is None


def test_a_store_on_a_network_filesystem_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"network filesystem \(nfs4\).*local disk"):
        RecordStore(tmp_path / "r.sqlite", fs_type="nfs4")


def test_records_list_and_show_need_an_existing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["records", "list", "--db", str(tmp_path / "absent.sqlite")]) == 2
    assert "no record store there" in capsys.readouterr().err
