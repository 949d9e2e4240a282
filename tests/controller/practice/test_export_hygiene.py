"""What leaves the practice stays inert: CSV cells a spreadsheet would run are quoted (numbers stay
numbers), and a FHIR period stays ordered when the wall clock stepped back during the lesion."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from controller.practice.billing import load_table
from controller.practice.export import csv_cell, to_csv
from controller.practice.fhir import BundleBuilder
from controller.records.history import SessionView, build_sessions
from controller.records.store import StoredEvent


def _event(seq: int, kind: str, payload: dict[str, Any], ts_utc: str, mono_ms: float) -> StoredEvent:
    return StoredEvent(seq, "S1", ts_utc, mono_ms, kind, payload, "", "")


def _session(serial: str, detail: str, times: list[tuple[str, float]], min_tissue_c: float | None = -89.5) -> SessionView:
    """One lesion, one cycle; ``times``: (ts_utc, mono_ms) of session start, lesion, freeze request, result, lesion end."""
    payloads: list[tuple[str, dict[str, Any]]] = [
        ("session_started", {"operator": "dr-07", "patient": "P-0042", "mode": "device", "calibration": {},
                             "device": {"serial": serial, "kind": "spray", "firmware": "1.0.0", "cryogen": "N2O"}}),
        ("lesion_recorded", {"lesion_id": "L1", "profile": {"id": "common-wart", "name_fr": "Verrue", "name_en": "Common wart"},
                             "site": {"region": "hand", "side": "left", "detail": detail}, "zone": "body", "description": "wart"}),
        ("freeze_requested", {"lesion_id": "L1", "cycle": 1, "requested_ms": 10_000, "effective_ms": 10_000, "limited_by": "profile"}),
        ("freeze_result", {"lesion_id": "L1", "cycle": 1, "freeze_ms_requested": 10_000, "freeze_ms_effective": 10_000,
                           "freeze_ms_device": 10_004, "measured_by": "device", "certainty": "device_reported",
                           "end_reason": "completed", "limited_by": "profile", "min_tissue_c": min_tissue_c}),
        ("lesion_ended", {"lesion_id": "L1", "status": "COMPLETED"}),
    ]
    events = [_event(i + 1, kind, payload, *times[i]) for i, (kind, payload) in enumerate(payloads)]
    return build_sessions(events)["S1"]


STEADY = [("2026-03-29T00:59:00.000+00:00", 1000.0), ("2026-03-29T00:59:10.000+00:00", 11_000.0),
          ("2026-03-29T00:59:20.000+00:00", 21_000.0), ("2026-03-29T00:59:30.000+00:00", 31_000.0),
          ("2026-03-29T00:59:40.000+00:00", 41_000.0)]


def test_formula_cells_are_quoted_and_numbers_are_left_alone() -> None:
    assert [csv_cell(v) for v in ("=1+1", "+33", "-x", "@SUM(A1)", "\t=1", "\r=1", "P-1", "")] == \
        ["'=1+1", "'+33", "'-x", "'@SUM(A1)", "'\t=1", "'\r=1", "P-1", ""]
    assert [csv_cell(v) for v in (-89.5, -3, 0, None)] == [-89.5, -3, 0, ""]
    view = _session('=HYPERLINK("http://evil.example","x")', "@SUM(1+1)*cmd|' /C calc'!A0", STEADY)
    (row,) = list(csv.DictReader(io.StringIO(to_csv([view]))))
    assert row["device_serial"] == '\'=HYPERLINK("http://evil.example","x")'
    assert row["site"] == "hand, left, @SUM(1+1)*cmd|' /C calc'!A0"  # a formula only where a cell starts: this one is text
    assert row["min_tissue_c"] == "-89.5" and row["freeze_ms_device"] == "10004"


def test_a_text_cell_starting_a_formula_is_quoted_wherever_it_is() -> None:
    view = _session("SIM-1", "detail", STEADY)
    view.operator = "-dr"
    (row,) = list(csv.DictReader(io.StringIO(to_csv([view]))))
    assert row["operator"] == "'-dr" and row["device_serial"] == "SIM-1" and row["min_tissue_c"] == "-89.5"


def test_the_fhir_period_stays_ordered_when_the_wall_clock_steps_back() -> None:
    """An hour's step back between the freeze request and the lesion's end (ts_utc goes backwards, the
    monotonic clock forwards): the end is the start plus the monotonic 20 s."""
    stepped = [("2026-10-25T00:59:00.000+00:00", 1000.0), ("2026-10-25T00:59:10.000+00:00", 11_000.0),
               ("2026-10-25T00:59:20.000+00:00", 21_000.0), ("2026-10-24T23:59:30.000+00:00", 31_000.0),
               ("2026-10-24T23:59:40.000+00:00", 41_000.0)]
    bundle = BundleBuilder(load_table(None)).bundle(_session("SIM-1", "", stepped))
    (procedure,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"]
    period = procedure["performedPeriod"]
    assert period == {"start": "2026-10-25T00:59:20.000+00:00", "end": "2026-10-25T00:59:40.000+00:00"}
    assert datetime.fromisoformat(period["end"]) > datetime.fromisoformat(period["start"])


def test_a_scaled_sessions_period_is_in_wall_seconds() -> None:
    view = _session("SIM-1", "", STEADY)
    view.time_scale = 20  # 20 s of virtual time between the request and the end: 1 s of wall time
    bundle = BundleBuilder(load_table(None)).bundle(view)
    (procedure,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"]
    assert procedure["performedPeriod"] == {"start": "2026-03-29T00:59:20.000+00:00", "end": "2026-03-29T00:59:21.000+00:00"}
