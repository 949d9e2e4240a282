"""A session's time scale read back: a real-time session says 1, and a record written before the
field existed reads as 1 in the view and every export (no virtual-time note where there was none)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

from controller.config import Config
from controller.practice.billing import load_table
from controller.practice.export import FhirOptions, checked_sessions, csv_rows, to_csv, to_fhir
from controller.practice.report import build_report, report_text
from controller.procedure.treatment import Treatment
from controller.records.history import load_sessions, local_time
from controller.records.lesion import SessionInfo
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from tests.support.records import append_as_older_givre


def _old_session(store: RecordStore) -> str:
    """One manual lesion, as Givre recorded it before session_started carried time_scale."""
    append_as_older_givre(store, "session_started", {"operator": "dr", "patient": "P-1", "mode": "manual", "device": None,
                                     "calibration": {"status": "not applicable (manual)"}}, "S-OLD")
    append_as_older_givre(store, "lesion_recorded", {"lesion_id": "L1", "profile": {"id": "solar-lentigo", "name_fr": "Lentigo solaire"},
                                     "site": {"region": "cheek"}, "zone": "face", "description": "old"}, "S-OLD")
    append_as_older_givre(store, "freeze_result", {"lesion_id": "L1", "cycle": 1, "freeze_ms_requested": 5000, "freeze_ms_device": 5021,
                                   "measured_by": "host", "end_reason": "COMPLETED"}, "S-OLD")
    append_as_older_givre(store, "lesion_ended", {"lesion_id": "L1", "status": "completed"}, "S-OLD")
    append_as_older_givre(store, "session_ended", {"status": "completed"}, "S-OLD")
    return "S-OLD"


def test_a_record_without_the_field_reads_as_real_time_everywhere(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        sid = _old_session(store)
        (view,) = checked_sessions(store, sid)
        assert view.time_scale == 1 and not view.scaled and view.as_dict()["time_scale"] == 1
        (row,) = csv.DictReader(io.StringIO(to_csv([view])))
        assert row["time_scale"] == "1" and [r["time_scale"] for r in csv_rows([view])] == ["1"]
        fhir = to_fhir([view], load_table(None), store.read_photo, FhirOptions(single=True))
        assert "time_scale" not in fhir and "virtual time" not in fhir
        day = local_time(view.started).date()
        report = build_report(store, day, load_table(None))
        assert [s.time_scale for s in report.sessions] == [1] and report.scaled_sessions == 0
        assert "virtual time" not in report_text(report)


def test_a_session_records_the_scale_its_host_runs_on(tmp_path: Path) -> None:
    """1 on real time (a manual session here: nothing connects), the clock's scale otherwise."""
    with RecordStore(tmp_path / "r.sqlite") as store:
        for scale in (1.0, 20.0):
            treatment = Treatment(store, Config(), Clock(scale), SessionInfo(operator="dr", patient="P-1"), None)
            treatment.start()
            started = next(e for e in store.events(treatment.session_id) if e.kind == "session_started")
            assert started.payload["time_scale"] == scale
        assert sorted(v.time_scale for v in load_sessions(store, since=date.min)) == [1.0, 20.0]
