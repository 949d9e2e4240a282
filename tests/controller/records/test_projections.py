"""The projections: written with each append, equal to a rebuild from the log, equal to what
history reads from the log itself, and read by the ledger, recovery and `records list` without
reading the log."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from bench.clinic_day import clinic_day
from controller.cli.main import main
from controller.config import Config
from controller.procedure.recovery import unfinished_sessions
from controller.records import store as store_module
from controller.records.history import load_sessions
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordStore, StoreUnavailable
from tests.support.records import append_as_older_givre


@pytest.fixture(scope="module")
def day_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clinic day recorded by the real procedure against the simulator (lossy wire, reloads)."""
    db = tmp_path_factory.mktemp("day") / "day.sqlite"
    audit = clinic_day(db, sessions=6)
    assert audit.chain_ok and audit.completed == 6
    return db


def test_a_rebuild_from_the_log_reproduces_the_projections_written_with_each_append(day_store: Path) -> None:
    with RecordStore(day_store) as store:
        incremental = store.projection_snapshot()
        assert store.rebuild_projections() == store.head()[0]
        assert store.projection_snapshot() == incremental
        assert all(incremental[table] for table in ("sessions", "lesions", "cycles", "cartridges"))


def test_the_projections_say_what_history_reads_from_the_log(day_store: Path) -> None:
    with RecordStore(day_store, writer=False) as store:
        summaries = {s["session_id"]: s for s in store.session_summaries()}
        views = load_sessions(store)
        assert list(summaries) == [v.session_id for v in views]
        for view in views:
            line = summaries[view.session_id]
            assert (line["status"], line["patient"], line["operator"], line["started"], line.get("ended")) == \
                (view.status, view.patient, view.operator, view.started, view.ended)
            assert line["lesions"] == [lesion.profile_id for lesion in view.lesions]
            assert line["cycles"] == len(view.cycles)
            assert line["device"] == (view.device or {}).get("serial")


@pytest.mark.parametrize("page", [1, 4, 6])
def test_records_list_reads_the_summaries_page_by_page_and_prints_them_as_one_json_array(
        day_store: Path, page: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with RecordStore(day_store, writer=False) as store:
        whole = list(store.session_summaries())  # the day's 6 sessions in one page
        monkeypatch.setattr(store_module, "SUMMARY_PAGE", page)
        assert len(whole) == 6 and list(store.session_summaries()) == whole
        assert list(store.session_summaries(latest=4)) == whole[-4:]
    assert main(["records", "list", "--db", str(day_store), "--json"]) == 0
    assert capsys.readouterr().out == json.dumps(whole, ensure_ascii=False) + "\n"


def test_records_list_of_an_empty_record_is_an_empty_json_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RecordStore(tmp_path / "r.sqlite").close()
    assert main(["records", "list", "--db", str(tmp_path / "r.sqlite"), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"


def test_the_cartridge_seconds_equal_the_sum_of_the_logs_cartridge_events(day_store: Path) -> None:
    with RecordStore(day_store, writer=False) as store:
        status = CartridgeLedger(store, Config()).status()
        loads = [e for e in store.events() if e.kind == "cartridge_loaded"]
        current = loads[-1].payload["cartridge_id"]
        used = [e.payload for e in store.events() if e.kind == "cartridge_used" and e.payload["cartridge_id"] == current]
    assert status is not None and status.cartridge_id == current
    assert status.used_s == round(sum(p["seconds"] for p in used), 3)
    assert status.lesions_treated == sum(p["lesion_done"] for p in used)
    assert status.reserved_s == 0  # every protocol of the day released what it did not use


def test_an_edited_projection_is_found_and_fixed_by_rebuild(tmp_path: Path, day_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "copy.sqlite"
    db.write_bytes(day_store.read_bytes())
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE cartridges SET used_s = 0")
        raw.execute("UPDATE sessions SET status = 'aborted' WHERE rowid = 1")
    assert main(["records", "rebuild", "--db", str(db), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["differed"]) == {"cartridges", "sessions"} and report["events"] > 0
    assert main(["records", "rebuild", "--db", str(db)]) == 0
    assert "every index matched the log" in capsys.readouterr().out


def test_readers_never_scan_the_log(day_store: Path, mocker: MockerFixture) -> None:
    with RecordStore(day_store, writer=False) as store:
        scan = mocker.spy(store, "events")
        CartridgeLedger(store, Config()).status()
        list(store.session_summaries())
        list(store.session_summaries(latest=2))
        unfinished_sessions(store)
        assert all(call.args or call.kwargs for call in scan.call_args_list)  # only one session's events, by index


def test_unfinished_sessions_are_found_by_index_and_leave_it_when_ended(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        for sid in ("S1", "S2"):
            append_as_older_givre(store, "session_started", {"patient": "P-1", "operator": "dr-a",
                                                             "device": {"serial": "SIM", "device_session": 7}}, sid)
        append_as_older_givre(store, "freeze_unresolved", {"lesion_id": "L1", "cycle": 1}, "S2")
        append_as_older_givre(store, "session_ended", {"status": "completed"}, "S1")
        assert list(unfinished_sessions(store)) == ["S2"]
        assert store.open_session_of_device_session(7) == "S2"
        assert next(store.session_summaries("S2"))["status"] == "unresolved"
        append_as_older_givre(store, "session_ended", {"status": "aborted"}, "S2")
        assert unfinished_sessions(store) == {} and store.open_session_of_device_session(7) is None


def test_a_store_from_before_the_projections_is_indexed_by_its_first_writer(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with RecordStore(db) as store:
        append_as_older_givre(store, "session_started", {"patient": "P-1", "operator": "dr-a"}, "S1")
        append_as_older_givre(store, "cartridge_loaded", {"cartridge_id": "c1", "size": "23g", "size_g": 23, "nominal_s": 350,
                                                          "price_eur": 20,
                                          "average_lesions": 40, "opened": "2026-11-01", "source": "sheet"})
    with sqlite3.connect(db) as raw:  # what an older Givre left: the log alone
        raw.executescript("DROP TABLE sessions; DROP TABLE lesions; DROP TABLE cycles; DROP TABLE cartridges; "
                          "DROP TABLE reservations; DROP TABLE meta;")
    with pytest.raises(StoreUnavailable, match="givre records rebuild"):
        RecordStore(db, writer=False)
    with RecordStore(db) as store:
        assert [s["session_id"] for s in store.session_summaries()] == ["S1"]
        assert store.current_cartridge() is not None
    with RecordStore(db, writer=False) as reader:
        assert [s["session_id"] for s in reader.session_summaries()] == ["S1"]


def test_cartridge_status_reads_while_another_givre_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    with RecordStore(db) as writer:
        CartridgeLedger(writer, Config()).load("23g", date.today())
        assert main(["cartridge", "status", "--db", str(db), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["size"] == "23g"
