"""The record's schema (controller/records/events.py): every kind a real day writes parses, a payload
that does not fit is refused with nothing written, old shapes still read, and docs/records.md's
table is the registry's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.clinic_day import clinic_day
from controller.records import events
from controller.records.store import RecordStore
from tests.support.records import append_as_older_givre, freeze_result

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "records.md"


def schema_table() -> str:
    """docs/records.md's table, from the registry: `name` always written, `name?` only when there is
    one, `name*` missing from older records (read as its default)."""
    rows = ["| kind | when it is written | fields |", "|---|---|---|"]
    for kind, model in sorted(events.EVENTS.items()):
        fields = []
        for name, field in model.model_fields.items():
            shown = field.alias or name
            mark = "" if field.is_required() else "*" if name in model.added_later else "?"
            fields.append(f"`{shown}{mark}`")
        when = " ".join((model.__doc__ or "").split())
        rows.append(f"| `{kind}` | {when} | {', '.join(fields)} |")
    return "\n".join(rows)


def test_the_docs_table_is_the_registry() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The event schema", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == schema_table(), "regenerate docs/records.md's table from tests/controller/records/test_events.py"


def test_every_kind_of_a_clinic_day_parses(tmp_path: Path) -> None:
    db = tmp_path / "day.sqlite"
    clinic_day(db, sessions=6, corrupt_pct=0.0)
    with RecordStore(db, writer=False) as store:
        typed = [events.parse(e) for e in store.events()]
    kinds = {type(t) for t in typed}
    assert events.Unrecognised not in kinds
    assert {events.SessionStarted, events.LesionRecorded, events.FreezeResult, events.LesionEnded, events.SessionEnded} <= kinds


def test_recovery_and_erasure_write_kinds_that_parse(tmp_path: Path) -> None:
    """recovery's freeze_result (the procedure's keys) and patient_erased, through the real writers."""
    from controller.procedure.recovery import recover  # noqa: PLC0415 - only this test needs the procedure
    db = tmp_path / "r.sqlite"
    with RecordStore(db) as store:
        key = store.patient_key("P-0001")
        store.append("session_started", {"operator": "dr", "patient": "P-0001", "mode": "manual", "device": None,
                                         "calibration": {"status": "not applicable (manual)"}, "time_scale": 1}, "S1", patient_key=key)
        store.append("freeze_requested", {"lesion_id": "L1", "cycle": 1, "requested_ms": 5000, "effective_ms": 5000,
                                          "limited_by": "requested", "chain": [], "measured_by": "host"}, "S1")
        (report,) = recover(store, None)
        assert report.closed
        store.erase_patient("P-0001", "retention period over", "dr")
        typed = [events.parse(e) for e in store.events()]
    result = next(t for t in typed if isinstance(t, events.FreezeResult))
    assert result.recovered and result.measured_by == "host" and result.host_elapsed_ms is None and result.thaw_ms is None
    assert any(isinstance(t, events.PatientErased) for t in typed)


@pytest.mark.parametrize(("kind", "payload", "field"), [
    ("note", {"i": 1}, "note"),
    ("freeze_result", {**freeze_result(), "cycle": "one"}, "cycle"),
    ("freeze_result", {k: v for k, v in freeze_result().items() if k != "host_elapsed_ms"}, "host_elapsed_ms"),
    ("freeze_result", freeze_result(colour="blue"), "colour"),
    ("session_started", {"operator": "dr", "patient": "P-1", "mode": "manual", "device": None, "calibration": {}}, "time_scale"),
    ("cartridge_used", {"cartridge_id": "c1", "seconds": 1.0}, "lesion_done"),
], ids=["unknown kind", "wrong type", "missing field", "extra field", "missing later field", "missing flat field"])
def test_a_payload_that_does_not_fit_is_refused_and_nothing_is_written(tmp_path: Path, kind: str, payload: dict[str, Any],
                                                                        field: str) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        store.append("fire_refused", {"lesion_id": "L1", "reason": "before"}, "S1")
        head = store.head()
        with pytest.raises(events.EventInvalid) as refused:
            store.append(kind, payload, "S1")
        with pytest.raises(events.EventInvalid):
            store.append_many([("fire_refused", {"lesion_id": "L1", "reason": "fits"}, "S1"), (kind, payload, "S1")])
        assert store.head() == head and len(list(store.events())) == 1
    message = str(refused.value)
    assert field in message and "\n" not in message and "Traceback" not in message


def test_a_refusal_never_repeats_the_value(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store, pytest.raises(events.EventInvalid) as refused:
        store.append("session_started", {"operator": "dr", "patient": ["DUPONT Jeanne"], "mode": "manual", "device": None,
                                         "calibration": {}, "time_scale": 1}, "S1")
    assert "DUPONT" not in str(refused.value) and "patient" in str(refused.value)


def test_old_shapes_still_read(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "r.sqlite") as store:
        append_as_older_givre(store, "session_started", {"operator": "dr", "patient": "P-1"}, "S1")
        append_as_older_givre(store, "freeze_result", {"lesion_id": "L1", "cycle": 1, "freeze_ms_device": 5000}, "S1")
        append_as_older_givre(store, "note", {"i": 1}, None)
        started, result, note = (events.parse(e) for e in store.events())
    assert isinstance(started, events.SessionStarted) and started.time_scale == 1 and started.mode == "device"
    assert isinstance(result, events.FreezeResult) and result.measured_by == "device" and result.cartridge_seconds == 0
    assert isinstance(note, events.Unrecognised) and note.name == "note" and note.payload == {"i": 1}


def test_an_envelope_and_a_plain_string_both_fit_a_personal_field() -> None:
    envelope = {"enc": "aesgcm/1", "key": "k", "nonce": "bm9uY2U=", "ct": "Y3Q="}
    for patient in ("P-1", envelope):
        event = events.validate("session_started", {"operator": "dr", "patient": patient, "mode": "manual", "device": None,
                                                    "calibration": {}, "time_scale": 1})
        assert isinstance(event, events.SessionStarted)


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=texts, used=st.tuples(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.integers(0, 1)),
       device_ms=st.one_of(st.none(), st.integers(0, 2**31)), measured_by=st.sampled_from(["device", "host"]))
def test_validate_store_parse_round_trips(tmp_path_factory: pytest.TempPathFactory, reason: str, used: tuple[float, int],
                                         device_ms: int | None, measured_by: str) -> None:
    seconds, lesion_done = used
    written: list[tuple[str, dict[str, Any]]] = [("fire_refused", {"lesion_id": "L1", "reason": reason}),
               ("cartridge_used", {"cartridge_id": "c1", "seconds": seconds, "lesion_done": lesion_done}),
               ("freeze_result", freeze_result(freeze_ms_device=device_ms, measured_by=measured_by, why=reason))]
    with RecordStore(tmp_path_factory.mktemp("rt") / "r.sqlite") as store:
        for kind, payload in written:
            store.append(kind, payload, "S1")
        read = [events.parse(e) for e in store.events()]
    for (kind, payload), typed in zip(written, read, strict=True):
        assert typed == events.validate(kind, payload)
        assert typed.model_dump(mode="json", by_alias=True, exclude_unset=True) == payload
