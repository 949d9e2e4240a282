"""Projections: tables derived from the event log, written in the same transaction as each append.

The log stays the truth: every projection is rebuilt from it (`givre records rebuild`, checked
equal to the incremental tables by a test). They exist so that nothing reads the whole log to
answer a small question: the cartridge in use and its seconds (the ledger, at ARM and on every
screen refresh), the unfinished sessions (crash recovery, before the link is opened), the sessions
of a day (exports, the day report), a session by id. Each is an indexed lookup.

- ``sessions``: one row per session: where it starts and ends in the log, its status, who, the
  device session it ran under (to file a device's late events under it), the billed codes.
- ``lesions`` and ``cycles``: which lesions (profile) and how many recorded cycles a session holds
  (`records list`, the records screen), a cycle recorded again (recovery) counting once.
- ``cartridges``: one row per loaded cartridge: its load event's facts, seconds used, lesions.
- ``reservations``: seconds a running protocol reserved on a cartridge and has not used or released.
- ``events_unsessioned``: an index of the events outside any session by time (the day report's alarms
  and certificates).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from controller.records import events

PROJECTION_VERSION = 1  # bump when a projection changes: stores built by an older Givre are rebuilt on open

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    started_seq    INTEGER NOT NULL,
    started_ts     TEXT NOT NULL,
    last_seq       INTEGER NOT NULL,
    ended_seq      INTEGER,
    status         TEXT NOT NULL,
    device_session INTEGER,
    ended_ts       TEXT,
    patient        TEXT NOT NULL,
    operator       TEXT NOT NULL,
    device_serial  TEXT,
    time_scale     REAL NOT NULL,
    billing        TEXT
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_ts);
CREATE INDEX IF NOT EXISTS sessions_in_order ON sessions(started_seq);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions(session_id) WHERE ended_seq IS NULL;
CREATE INDEX IF NOT EXISTS sessions_device_session ON sessions(device_session) WHERE device_session IS NOT NULL;
CREATE TABLE IF NOT EXISTS lesions (
    session_id TEXT NOT NULL,
    lesion_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    profile_id TEXT NOT NULL,
    PRIMARY KEY (session_id, lesion_id)
);
CREATE TABLE IF NOT EXISTS cycles (
    session_id TEXT NOT NULL,
    lesion_id  TEXT NOT NULL,
    cycle      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (session_id, lesion_id, cycle)
);
CREATE TABLE IF NOT EXISTS cartridges (
    cartridge_id TEXT PRIMARY KEY,
    loaded_seq   INTEGER NOT NULL UNIQUE,
    loaded       TEXT NOT NULL,
    used_s       REAL NOT NULL,
    lesions      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    cartridge_id TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    seconds      REAL NOT NULL,
    PRIMARY KEY (cartridge_id, session_id)
);
CREATE INDEX IF NOT EXISTS events_unsessioned ON events(ts_utc) WHERE session_id IS NULL;
"""

TABLES = ("sessions", "lesions", "cycles", "cartridges", "reservations")


def create(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'projection_version'").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Folded:
    """What a projection reads of an event: its place, its payload as stored, and typed (records/events.py)."""

    seq: int
    ts_utc: str
    session_id: str | None
    payload: dict[str, Any]
    event: events.EventModel


def apply(db: sqlite3.Connection, folded: Folded) -> None:
    """Fold one event into the projections (inside the append's transaction)."""
    if folded.session_id is not None:
        _apply_to_session(db, folded, folded.session_id)
    event = folded.event
    if isinstance(event, events.CartridgeLoaded | events.CartridgeReserved | events.CartridgeUsed | events.CartridgeReleased):
        _apply_to_cartridge(db, folded, event)


def _apply_to_session(db: sqlite3.Connection, folded: Folded, session_id: str) -> None:
    seq, ts_utc, event = folded.seq, folded.ts_utc, folded.event
    if isinstance(event, events.SessionStarted):
        device = event.device
        db.execute("INSERT OR IGNORE INTO sessions VALUES (?,?,?,?,NULL,'in progress',?,NULL,?,?,?,?,NULL)",
                   (session_id, seq, ts_utc, seq, device.device_session or None if device else None, _patient(event.patient),
                    event.operator, device.serial if device else None, event.time_scale))
        return
    if isinstance(event, events.SessionEnded):
        db.execute("UPDATE sessions SET last_seq = ?, ended_seq = ?, ended_ts = ?, status = ? WHERE session_id = ?",
                   (seq, seq, ts_utc, event.status, session_id))
    elif isinstance(event, events.BillingConfirmed):
        codes = [act.code for act in event.chosen]
        db.execute("UPDATE sessions SET last_seq = ?, billing = ? WHERE session_id = ?", (seq, json.dumps(codes), session_id))
    elif isinstance(event, events.FreezeUnresolved):
        db.execute("UPDATE sessions SET last_seq = ?, status = 'unresolved' WHERE session_id = ?", (seq, session_id))
    else:
        db.execute("UPDATE sessions SET last_seq = ? WHERE session_id = ?", (seq, session_id))
    if isinstance(event, events.LesionRecorded):
        db.execute("INSERT OR IGNORE INTO lesions VALUES (?,?,?,?)", (session_id, event.lesion_id, seq, event.profile.id))
    elif isinstance(event, events.FreezeResult):
        db.execute("INSERT OR REPLACE INTO cycles VALUES (?,?,?,?)", (session_id, event.lesion_id, event.cycle, seq))


def _patient(value: events.Personal) -> str:
    """The patient as the column holds it: a plaintext id (records before encryption) or the
    envelope's JSON, never the id in clear (records/personal.py decrypts it when read)."""
    return json.dumps(value.model_dump(), sort_keys=True) if isinstance(value, events.Envelope) else value


def _apply_to_cartridge(db: sqlite3.Connection, folded: Folded,
                        event: events.CartridgeLoaded | events.CartridgeReserved | events.CartridgeUsed | events.CartridgeReleased) -> None:
    """The load facts are kept as stored (the column a rebuild must reproduce byte for byte)."""
    cartridge_id, holder = event.cartridge_id, folded.session_id or ""
    if isinstance(event, events.CartridgeLoaded):
        db.execute("INSERT OR REPLACE INTO cartridges VALUES (?,?,?,0,0)",
                   (cartridge_id, folded.seq, json.dumps(folded.payload, sort_keys=True)))
    elif isinstance(event, events.CartridgeReserved):
        db.execute("INSERT INTO reservations VALUES (?,?,?) ON CONFLICT(cartridge_id, session_id) DO UPDATE SET seconds = seconds + ?",
                   (cartridge_id, holder, event.seconds, event.seconds))
    elif isinstance(event, events.CartridgeUsed):
        db.execute("UPDATE cartridges SET used_s = used_s + ?, lesions = lesions + ? WHERE cartridge_id = ?",
                   (event.seconds, event.lesion_done, cartridge_id))
        db.execute("UPDATE reservations SET seconds = MAX(0.0, seconds - ?) WHERE cartridge_id = ? AND session_id = ?",
                   (event.seconds, cartridge_id, holder))
    else:
        db.execute("DELETE FROM reservations WHERE cartridge_id = ? AND session_id = ?", (cartridge_id, holder))


def rebuild(db: sqlite3.Connection, batch: int = 5000) -> int:
    """Empty every projection and fold the whole log into them again, in one transaction (the
    caller's); returns the number of events folded."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")  # table names: this module's constants
    count, last = 0, 0
    while True:
        rows = db.execute("SELECT seq, ts_utc, session_id, kind, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                          (last, batch)).fetchall()
        if not rows:
            break
        for seq, ts_utc, session_id, kind, payload in rows:
            body = json.loads(payload)
            apply(db, Folded(seq, ts_utc, session_id, body, events.parse_payload(kind, body)))
        count += len(rows)
        last = rows[-1][0]
    db.execute("INSERT OR REPLACE INTO meta VALUES ('projection_version', ?)", (str(PROJECTION_VERSION),))
    return count


def snapshot(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection's rows in a stable order: what a rebuild must reproduce exactly."""
    return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES}
