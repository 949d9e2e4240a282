"""Record stores aged to N events: a clinic day recorded by the real procedure (bench.clinic_day)
replayed day after day into a new store, each day's sessions, lesions and cartridges under new ids,
each event stamped on a wall clock of the replay's own (one working day per replayed day, ending
yesterday), so a store of a million events is about four years of one GP's days and "one day" is
a day's worth of it, as in a real practice.

The replay goes through the store's own append path (chain, projections) in batches, one
transaction each: what it builds is what years of appends would have built (the personal fields
read in clear from the template and encrypted again under the aged store's own patient keys, bound
to the new session ids, as records/personal.py would have). The store is then
sealed (records/seal.py) under a verification key the bench throws away, as a clinic's would be.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.clinic_day import clinic_day
from controller.records.history import revealed
from controller.records.seal import new_verification_key
from controller.records.store import RecordStore, StoredEvent

BATCH = 20_000  # events per transaction while replaying
WORKDAY = timedelta(hours=9)  # a replayed day's events are spread over this, from 08:00 local time
IDS = ("lesion_id", "cartridge_id")  # payload ids renamed per replayed day, so each day's are its own


@dataclass(frozen=True, slots=True)
class AgedStore:
    path: Path
    events: int
    days: int
    events_per_day: int


def template_day(db: Path, sessions: int = 40) -> list[StoredEvent]:
    """A clinic day recorded by the real procedure against the simulator: the replay's template."""
    clinic_day(db, sessions=sessions, corrupt_pct=0.0)
    with RecordStore(db, writer=False) as store:
        return list(revealed(store, store.events()))  # personal fields in clear: the replay encrypts them for its own sessions


def build_aged_store(db: Path, events: int, template: list[StoredEvent]) -> AgedStore:
    """A new store of at least ``events`` events (whole days), the last day ending yesterday."""
    days = -(-events // len(template))
    first_day = datetime.now().astimezone().replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=days)
    step = WORKDAY / len(template)
    stamps = (first_day + timedelta(days=day) + step * i for day in range(days) for i in range(len(template)))
    with RecordStore(db, wall=_replay_wall(stamps)) as store:
        batch: list[tuple[str, dict[str, Any], str | None]] = []
        keys: dict[str, str] = {}  # session -> its patient's key
        for _ in range(days):
            for kind, clear, session_id in _renamed_day(template):
                if session_id is not None and kind == "session_started":
                    keys[session_id] = store.patient_key(clear["patient"])
                payload = clear if session_id is None or session_id not in keys else \
                    store.personal.protect(kind, clear, session_id, keys[session_id])
                batch.append((kind, payload, session_id))
                if len(batch) >= BATCH:
                    store.append_many(batch)
                    batch.clear()
        store.append_many(batch)
        store.set_up_keys(new_verification_key())  # a clinic sealing its record: the years so far sealed as epoch 0
        total = store.head()[0]
    return AgedStore(db, total, days, len(template))


def _replay_wall(stamps: Iterator[datetime]) -> Callable[[], datetime]:
    return lambda: next(stamps).astimezone(UTC)


def _renamed_day(template: list[StoredEvent]) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """The template day's events with new session, lesion and cartridge ids (and no device session:
    an aged session never owns a device's late events)."""
    renamed: dict[str, str] = {}

    def new(old: str) -> str:
        return renamed.setdefault(old, uuid.uuid4().hex[:12])

    for event in template:
        payload = json.loads(json.dumps(event.payload))
        for key in IDS:
            if isinstance(payload.get(key), str):
                payload[key] = new(payload[key])
        if isinstance(payload.get("device"), dict):
            payload["device"]["device_session"] = None
        yield event.kind, payload, None if event.session_id is None else new(event.session_id)
