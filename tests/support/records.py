"""Payloads for tests that write the record directly: a freeze_result of today's shape, and events
as an older Givre wrote them (appended without today's schema check, records/events.py), so a test
can hold the shapes the log kept from before a field existed and check that they still read."""

from __future__ import annotations

from typing import Any

from controller.records import events
from controller.records.store import RecordStore


def freeze_result(lesion_id: str = "L1", cycle: int = 1, **changes: Any) -> dict[str, Any]:
    """A device-reported freeze_result with every field the schema wants (5 s asked, 5 s delivered)."""
    return {"lesion_id": lesion_id, "cycle": cycle, "freeze_ms_requested": 5000, "freeze_ms_effective": 5000, "freeze_ms_device": 5000,
            "halo_to_off_ms": None, "thaw_ms": None, "limited_by": "requested", "end_reason": "COMPLETED",
            "certainty": "device_reported", "measured_by": "device", "min_tissue_c": None, "txn": 1, "host_elapsed_ms": 5010,
            "cartridge_id": None, "cartridge_seconds": 5.0, **changes}


def append_as_older_givre(store: RecordStore, kind: str, payload: dict[str, Any], session_id: str | None = None) -> None:
    """One event through the store's own chain and projections, read as this Givre reads old ones (events.parse_payload)."""
    store._transaction(lambda: store._insert(kind, payload, session_id, events.parse_payload(kind, payload)), kind)
