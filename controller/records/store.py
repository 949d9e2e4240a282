"""The record store: an append-only, hash-chained event log in SQLite.

Each event is committed (WAL, synchronous=FULL) before anything reports it. UPDATE and DELETE
are refused by triggers; a correction is a new event. The chain makes tampering evident:
``verify()`` names the first event whose hash does not follow. Files are created 0600 and one
Givre at a time may write a store (an exclusive lock beside it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from controller.config import MAX_PHOTO_MB
from controller.errors import RecordError
from controller.records import events as schema
from controller.records import projections
from controller.records import seal as sealing
from controller.records.keystore import KeyStoreError
from controller.records.personal import PersonalFields
from controller.records.private_files import write_private
from firmware_bridge.clock import SYSTEM_CLOCK, Clock

GENESIS = "0" * 64
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "afs", "9p", "fuse.sshfs", "davfs", "ceph", "glusterfs", "lustre", "gpfs",
})

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    session_id TEXT,
    ts_utc     TEXT NOT NULL,
    mono_ms    REAL NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: record a correction instead'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: record a correction instead'); END;
CREATE TABLE IF NOT EXISTS seals (
    store_id  TEXT NOT NULL,
    epoch     INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    ts_utc    TEXT NOT NULL,
    mac       TEXT NOT NULL,
    PRIMARY KEY (store_id, epoch)
);
CREATE TRIGGER IF NOT EXISTS seals_no_update BEFORE UPDATE ON seals
BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS seals_no_delete BEFORE DELETE ON seals
BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;
"""
SELECT_EVENTS = "SELECT seq, session_id, ts_utc, mono_ms, kind, payload, prev_hash, hash FROM events"
T = TypeVar("T")
READ_BATCH = 5000  # events per query when the whole log is read
SUMMARY_PAGE = 1000  # sessions per query when every session's summary is listed


class StoreUnavailable(RecordError):
    """The store cannot be opened: locked by another Givre, on a network filesystem, unreadable."""


class SealBroken(StoreUnavailable):
    """A writer is refused: the record's newest part, or the machine's key state, does not follow
    the last seal (tampering, truncation, a lost key state). Readers still open it."""


class RecordNotSaved(RecordError):
    """An event could not be committed (disk full, read-only, I/O error): it is NOT recorded."""


class PatientUnknown(RecordError):
    """No key for this patient id: never recorded by a Givre that encrypts, or already erased."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the record as committed, with its place in the chain (not the device's wire
    EVENT, which is firmware_bridge.messages.Event)."""

    seq: int
    session_id: str | None
    ts_utc: str
    mono_ms: float
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class CartridgeRow:
    """The cartridges projection's row for one cartridge: its cartridge_loaded facts and its sums."""

    loaded: schema.CartridgeLoaded
    used_s: float
    lesions: int
    reserved_s: float


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What a row's hash covers besides the previous hash: (seq, session_id, ts_utc, mono_ms, kind, payload as stored).
ChainedFields = tuple[int, str | None, str, float, str, str]


def chain_hash(prev_hash: str, fields: ChainedFields) -> str:
    body = canonical([prev_hash, *fields])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def stored_patient(column: str) -> dict[str, Any] | None:
    """The sessions projection's patient column as an envelope (JSON), or None for a plaintext id."""
    if not column.startswith("{"):
        return None
    try:
        value = json.loads(column)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _loaded(column: str) -> schema.CartridgeLoaded:
    """The cartridges projection's load facts: the cartridge_loaded payload as stored (JSON), typed."""
    return schema.parse_as(schema.CartridgeLoaded, json.loads(column))


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path``, from /proc/mounts (Linux); None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in mounts:
        match line.split():
            case [_device, escaped_point, fs_type, *_options]:
                mount_point = escaped_point.replace("\\040", " ")
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, fs_type
    return best_type


class RecordStore:
    _key_state: sealing.KeyState | None = None  # a sealed store's current key, held by its writer only
    _epoch_opened: float | None = None  # clock time of the first event not sealed yet

    def __init__(self, path: Path, *, clock: Clock = SYSTEM_CLOCK, writer: bool = True, fs_type: str | None = None,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self.clock = clock
        self._wall = wall  # the events' UTC timestamps (the bench ages a store on a wall clock of its own)
        self.photos_dir = path.parent / f"{path.stem}-photos"
        self.personal = PersonalFields(path, writer)  # the patients' keys, beside the store (records/personal.py)
        self._lock_fd: int | None = None
        self._db_lock = threading.RLock()  # the UI and the controller loop share one connection
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kind = fs_type if fs_type is not None else filesystem_type(path.parent)
        if kind in NETWORK_FILESYSTEMS:
            raise StoreUnavailable(
                f"{path}: the record store is on a network filesystem ({kind}); SQLite's write-ahead log "
                "is not safe there. Put it on a local disk (--db PATH) and back it up to the network instead"
            )
        if writer:
            self._take_lock()
        if not path.exists():
            if not writer:
                raise StoreUnavailable(f"{path}: no record store there. Check the path given with --db")
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if writer:
                self._db.executescript(SCHEMA)
                self._bring_projections_up_to_date()
            elif not self._projections_current():
                raise StoreUnavailable(
                    f"{path}: this record store was written by an older Givre and its indexes are not built yet",
                    f"Run `givre records rebuild --db {path}` once (or any command that writes), then read it again")
            for suffix in ("-wal", "-shm"):
                side = Path(f"{path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o600)
        except StoreUnavailable:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreUnavailable(f"{path}: not a usable record store ({exc}). Check the path, or restore from a backup") from exc
        last = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_seq: int = last[0] if last else 0
        self._last_hash: str = last[1] if last else GENESIS
        if writer:
            self._check_seals_on_open()

    def _projections_current(self) -> bool:
        return self._has_table("meta") and projections.version(self._db) == projections.PROJECTION_VERSION

    def _has_table(self, name: str) -> bool:
        """A table an older Givre did not create (a read-only open cannot create it)."""
        return bool(self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()[0])

    def _bring_projections_up_to_date(self) -> None:
        """A store written before the projections existed (or by an older projection version) has
        them rebuilt from its log, once, when a writer opens it."""
        projections.create(self._db)
        if projections.version(self._db) != projections.PROJECTION_VERSION:
            self.rebuild_projections()

    def projection_snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self._db_lock:
            return projections.snapshot(self._db)

    def rebuild_projections(self) -> int:
        """Rebuild every projection from the log (one transaction); returns the events folded."""
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                count = projections.rebuild(self._db)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreUnavailable(f"{self.path}: the indexes could not be rebuilt ({exc})",
                                       "Free disk space or check the store's permissions, then try again") from exc
            return count

    def _take_lock(self) -> None:
        lock_path = Path(f"{self.path}.lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                f"{self.path}: another Givre is writing this record store. Close it first; "
                "two programs must never write one patient record at the same time"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        self._seal_before_close()
        self.personal.close()
        db = getattr(self, "_db", None)  # absent when connecting failed; closing twice is harmless
        if db is not None:
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------------

    def append(self, kind: str, payload: dict[str, Any], session_id: str | None = None, *,
               patient_key: str | None = None) -> StoredEvent:
        """Commit one event durably and return it; raises RecordNotSaved if it is not on disk, and
        EventInvalid, with nothing written, if the payload does not fit its kind (records/events.py).
        With ``patient_key`` (patient_key()), its personal fields are stored encrypted under that key."""
        typed = schema.validate(kind, payload)
        if patient_key is not None and session_id is not None:
            stored = self.personal.protect(kind, payload, session_id, patient_key)
            typed, payload = (typed, payload) if stored is payload else (schema.validate(kind, stored), stored)
        with self._db_lock:
            event = self._append(kind, payload, session_id, typed)
            self._seal_if_due()
            return event

    def append_many(self, items: Iterable[tuple[str, dict[str, Any], str | None]]) -> int:
        """Commit several events in one transaction, all or none (an import; the bench's aged stores);
        returns how many. Raises RecordNotSaved, or EventInvalid for a payload that does not fit its
        kind, with nothing of them recorded."""
        checked = [(kind, payload, session_id, schema.validate(kind, payload)) for kind, payload, session_id in items]
        with self._db_lock:
            first = self._last_seq
            self._transaction(lambda: [self._insert(*item) for item in checked], "a batch")
            self._seal_if_due()
            return self._last_seq - first

    def _append(self, kind: str, payload: dict[str, Any], session_id: str | None, typed: schema.EventModel) -> StoredEvent:
        return self._transaction(lambda: self._insert(kind, payload, session_id, typed), f"event '{kind}'")

    def _transaction(self, write: Callable[[], T], what: str) -> T:
        """Run ``write`` in one durable transaction; on failure nothing of it is recorded, and the
        chain's head in memory is put back."""
        head = (self._last_seq, self._last_hash)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = write()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._last_seq, self._last_hash = head
            with suppress(sqlite3.Error):  # the INSERT's error is the one to report
                self._db.execute("ROLLBACK")
            raise RecordNotSaved(f"{self.path}: {what} was NOT recorded ({exc}). Free disk space or fix the store") from exc
        return result

    def _insert(self, kind: str, payload: dict[str, Any], session_id: str | None, typed: schema.EventModel) -> StoredEvent:
        """One event (validated: ``typed`` is its model) into the log and the projections, inside the caller's transaction."""
        seq = self._last_seq + 1
        ts = self._wall().astimezone(UTC).isoformat(timespec="milliseconds")
        mono_ms = round(self.clock.monotonic() * 1000, 3)
        body = canonical(payload)
        digest = chain_hash(self._last_hash, (seq, session_id, ts, mono_ms, kind, body))
        self._db.execute(
            "INSERT INTO events(seq, session_id, ts_utc, mono_ms, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
            (seq, session_id, ts, mono_ms, kind, body, self._last_hash, digest),
        )
        projections.apply(self._db, projections.Folded(seq, ts, session_id, payload, typed))
        event = StoredEvent(seq, session_id, ts, mono_ms, kind, payload, self._last_hash, digest)
        self._last_seq, self._last_hash = seq, digest
        return event

    def store_photo(self, source: Path, patient_key: str) -> tuple[str, str]:
        """Take a photo into the store without its metadata (records/photo.py: EXIF and GPS stripped,
        a symlink, a pipe, an oversize file or a non-image refused), encrypted under the patient's key,
        0600; returns (sha256 of the image, stored file name: random, so it says nothing of the image).
        The clinic's own size limit is checked where the photo is given."""
        from controller.records.photo import load_photo  # noqa: PLC0415 - photo.py imports this module (PhotoRefused is a RecordError)

        photo = load_photo(source, MAX_PHOTO_MB * 1_000_000)
        digest = hashlib.sha256(photo.data).hexdigest()
        self.photos_dir.mkdir(mode=0o700, exist_ok=True)
        name = f"{secrets.token_hex(16)}{photo.suffix}"
        write_private(self.photos_dir / name, self.personal.encrypt_photo(patient_key, name, photo.data))  # a planted symlink is refused
        return digest, name

    def read_photo(self, name: str) -> bytes | None:
        """A stored photo's image bytes (decrypted); None if the file is gone or its key erased."""
        try:
            stored = (self.photos_dir / Path(name).name).read_bytes()
        except OSError:
            return None
        return self.personal.photo_bytes(Path(name).name, stored)

    # ---- personal fields and erasure (records/personal.py, records/keystore.py) -------------------

    def patient_key(self, patient: str) -> str:
        """The patient's key id (made the first time): a session's personal fields are encrypted under it."""
        return self.personal.patient_key(patient, records_encrypted=self._holds_encrypted())

    def _holds_encrypted(self) -> bool:
        """Some session's patient is an envelope (the sessions projection stores it as JSON)."""
        with self._db_lock:
            return self._db.execute("SELECT 1 FROM sessions WHERE patient LIKE '{%' LIMIT 1").fetchone() is not None

    def key_store_warning(self) -> str | None:
        """One line when the record holds encrypted fields and the key store beside it is missing."""
        if self.personal.path.exists() or not self._holds_encrypted():
            return None
        return (f"warning: {self.personal.path}: key store missing; the patients' ids, descriptions, site details and "
                "photos read as 'unreadable: key store missing'. Restore it from the backup made with the store")

    def reveal(self, event: StoredEvent) -> dict[str, Any]:
        """An event's payload with its personal fields in clear, 'erased' or 'unreadable: ...'."""
        return self.personal.reveal(event.kind, event.payload, event.session_id)

    def patient_sessions(self, patient: str) -> tuple[str, list[str]]:
        """(key id, session ids) of the patient whose key the lookup hash finds; PatientUnknown if none."""
        keys = self.personal.keys()
        key_id = keys.find(patient) if keys is not None else None
        if key_id is None:
            raise PatientUnknown(f"{self.path}: no key for that patient id in {self.personal.path.name} (never recorded by "
                                 "this version, mistyped, or already erased)", "Check the id; nothing was erased")
        with self._db_lock:
            rows = self._db.execute("SELECT session_id, patient FROM sessions WHERE patient LIKE '{%' ORDER BY started_seq").fetchall()
        return key_id, [sid for sid, stored in rows if (value := stored_patient(stored)) is not None and value.get("key") == key_id]

    def erase_patient(self, patient: str, why: str, by: str) -> list[str]:
        """Erase one patient: their photo files removed, their key destroyed, then ``patient_erased``
        (key id, why, by, sessions; never the patient id) recorded. The chain and the seals stay whole:
        the ciphertexts remain, unreadable. Returns the sessions erased."""
        key_id, sessions = self.patient_sessions(patient)
        for event in self.session_events(sessions):
            if event.kind == "lesion_recorded" and (photo := self.reveal(event)["photo"]) is not None:
                (self.photos_dir / Path(photo["file"]).name).unlink(missing_ok=True)
        keys = self.personal.keys()
        if keys is None:
            raise KeyStoreError(f"{self.personal.path}: key store missing", "Restore it from the backup made with the store")
        keys.erase(key_id)
        try:
            self.append("patient_erased", {"key": key_id, "why": why, "by": by, "sessions": sessions})
        except RecordNotSaved as exc:
            raise RecordNotSaved(f"{self.path}: the patient's key {key_id} is destroyed (erased), but the erasure could not be "
                                 f"recorded ({exc.problem})", "Note it in the practice's register; the record cannot say it") from exc
        return sessions

    # ---- reading -------------------------------------------------------------------------------

    def events(self, session_id: str | None = None) -> Iterator[StoredEvent]:
        """One session's events (indexed), or the whole log read in batches: memory stays bounded and
        a writer on another thread waits for one batch at most, never for the whole read."""
        if session_id is not None:
            yield from self._select(" WHERE session_id = ? ORDER BY seq", (session_id,))
            return
        last = 0
        while True:
            batch = self._select(" WHERE seq > ? ORDER BY seq LIMIT ?", (last, READ_BATCH))
            yield from batch
            if len(batch) < READ_BATCH:
                return
            last = batch[-1].seq

    def session_events(self, session_ids: Iterable[str]) -> list[StoredEvent]:
        """The events of these sessions, in log order (each session by its index)."""
        events = [e for sid in dict.fromkeys(session_ids) for e in self._select(" WHERE session_id = ?", (sid,))]
        return sorted(events, key=lambda e: e.seq)

    def unsessioned_events(self, from_utc: str | None, to_utc: str | None) -> list[StoredEvent]:
        """Events outside any session recorded in [from_utc, to_utc) (alarms, certificates), by index."""
        return self._select(" WHERE session_id IS NULL AND ts_utc >= ? AND ts_utc < ? ORDER BY seq",
                            (from_utc or "", to_utc or "~"))

    def _select(self, where: str, params: tuple[object, ...]) -> list[StoredEvent]:
        with self._db_lock:
            rows = self._db.execute(f"{SELECT_EVENTS}{where}", params).fetchall()
        return [StoredEvent(seq, sid, ts, mono, kind, json.loads(payload), prev, digest)
                for seq, sid, ts, mono, kind, payload, prev, digest in rows]

    # ---- reading the projections (each an indexed lookup) ---------------------------------------

    def session_ids(self, started_from_utc: str | None = None, started_before_utc: str | None = None) -> list[str]:
        """Sessions in the order they started, optionally those started in [from, before)."""
        where, params = [], []
        if started_from_utc is not None:
            where.append("started_ts >= ?")
            params.append(started_from_utc)
        if started_before_utc is not None:
            where.append("started_ts < ?")
            params.append(started_before_utc)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._db_lock:
            rows = self._db.execute(f"SELECT session_id FROM sessions{clause} ORDER BY started_seq", params).fetchall()
        return [row[0] for row in rows]

    def session_summaries(self, session_id: str | None = None, latest: int | None = None) -> Iterator[dict[str, Any]]:
        """One line of facts per session (`records list`), oldest first, from the projections: one
        session, the ``latest`` N, or all of them read SUMMARY_PAGE sessions at a time (three indexed
        reads a page), so memory stays flat whatever the log's size. Keys: session_id, started, patient,
        operator, device, status, lesions (profile ids), cycles, time_scale, billed (the codes
        confirmed, None before), and ended once it has."""
        if session_id is not None:
            yield from (summary for _, summary in self._summary_page(" WHERE session_id = ?", (session_id,)))
            return
        after = 0
        if latest is not None:
            with self._db_lock:
                first = self._db.execute("SELECT started_seq FROM sessions ORDER BY started_seq DESC LIMIT 1 OFFSET ?",
                                         (latest - 1,)).fetchone()
            after = 0 if first is None else first[0] - 1
        while True:
            page = self._summary_page(
                " WHERE session_id IN (SELECT session_id FROM sessions WHERE started_seq > ? ORDER BY started_seq LIMIT ?)",
                (after, SUMMARY_PAGE))
            yield from (summary for _, summary in page)
            if len(page) < SUMMARY_PAGE:
                return
            after = page[-1][0]

    def _summary_page(self, where: str, params: tuple[object, ...]) -> list[tuple[int, dict[str, Any]]]:
        """(started_seq, summary) of the sessions ``where`` selects, oldest first."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT started_seq, session_id, started_ts, patient, operator, device_serial, status, time_scale, ended_ts, billing "
                f"FROM sessions{where} ORDER BY started_seq", params).fetchall()
            lesions = self._db.execute(f"SELECT session_id, profile_id FROM lesions{where} ORDER BY seq", params).fetchall()
            cycles = dict(self._db.execute(f"SELECT session_id, count(*) FROM cycles{where} GROUP BY session_id", params).fetchall())
        summaries: dict[str, tuple[int, dict[str, Any]]] = {}
        for started_seq, sid, started, patient, operator, serial, status, scale, ended, billing in rows:
            shown = self.personal.text(stored_patient(patient) or patient, sid, "patient")
            summaries[sid] = (started_seq, {
                "session_id": sid, "started": started, "patient": shown, "operator": operator, "device": serial,
                "status": status, "lesions": [], "cycles": cycles.get(sid, 0), "time_scale": scale,
                "billed": None if billing is None else json.loads(billing),
                **({"ended": ended} if ended else {})})
        for sid, profile_id in lesions:
            if sid in summaries:
                summaries[sid][1]["lesions"].append(profile_id)
        return list(summaries.values())

    def unfinished_session_ids(self) -> list[str]:
        with self._db_lock:
            rows = self._db.execute("SELECT session_id FROM sessions WHERE ended_seq IS NULL ORDER BY started_seq").fetchall()
        return [row[0] for row in rows]

    def open_session_of_device_session(self, device_session: int) -> str | None:
        """The unfinished record session that ran under this device session (the HELLO nonce), if any."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT session_id FROM sessions WHERE device_session = ? AND ended_seq IS NULL ORDER BY started_seq DESC LIMIT 1",
                (device_session,)).fetchone()
        return row[0] if row else None

    def current_cartridge(self) -> CartridgeRow | None:
        """The cartridge loaded last, with its seconds used and still reserved."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT cartridge_id, loaded, used_s, lesions FROM cartridges ORDER BY loaded_seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            reserved = self._db.execute(
                "SELECT COALESCE(SUM(seconds), 0) FROM reservations WHERE cartridge_id = ?", (row[0],)).fetchone()[0]
        return CartridgeRow(_loaded(row[1]), float(row[2]), int(row[3]), float(reserved))

    def cartridges_loaded(self) -> list[schema.CartridgeLoaded]:
        """Every cartridge_loaded event's facts, in load order (prices, sizes)."""
        with self._db_lock:
            rows = self._db.execute("SELECT loaded FROM cartridges ORDER BY loaded_seq").fetchall()
        return [_loaded(row[0]) for row in rows]

    def head(self) -> tuple[int, str]:
        """(event count, head hash): print these in reports so a truncated store can be caught."""
        return self._last_seq, self._last_hash

    def verify_since_checkpoint(self, checkpoint: sealing.Seal | None = None) -> StoredEvent | None:
        """The chain from the last seal on: the sealed event still the one sealed (its hash as sealed,
        and re-hashed), then every later one. What an export, a day report or a writer's open checks:
        a few events whatever the log's age. The history before the seal is the MACs' to prove
        (`records verify --verify-key`); with nothing sealed, the whole chain is walked."""
        checkpoint = checkpoint or self.last_seal()
        if checkpoint is None:
            return self.verify()
        with self._db_lock:
            row = self._db.execute(f"{SELECT_EVENTS} WHERE seq = ?", (checkpoint.last_seq,)).fetchone()
        if row is None:
            return StoredEvent(checkpoint.last_seq, None, checkpoint.ts_utc, 0.0, "(missing)", {}, "", "")
        sealed = StoredEvent(row[0], row[1], row[2], row[3], row[4], {}, row[6], row[7])
        if sealed.hash != checkpoint.head_hash:
            return sealed
        return self.verify(after=(checkpoint.last_seq - 1, sealed.prev_hash))

    def verify(self, after: tuple[int, str] = (0, GENESIS)) -> StoredEvent | None:
        """Walk the chain (from the event after ``after`` = (seq, its hash), else from the first); returns
        the first event that does not follow, or None if all do. Read in batches: memory stays flat."""
        last_seq, prev = after
        while True:
            with self._db_lock:
                rows = self._db.execute(f"{SELECT_EVENTS} WHERE seq > ? ORDER BY seq LIMIT ?", (last_seq, READ_BATCH)).fetchall()
            for seq, sid, ts, mono, kind, payload, prev_hash, digest in rows:
                if seq != last_seq + 1 or prev_hash != prev or chain_hash(prev, (seq, sid, ts, mono, kind, payload)) != digest:
                    try:
                        body = json.loads(payload)
                    except ValueError:
                        body = {"unreadable": payload}
                    return StoredEvent(seq, sid, ts, mono, kind, body, prev_hash, digest)
                prev, last_seq = digest, seq
            if len(rows) < READ_BATCH:
                return None

    # ---- sealing (records/seal.py: forward-secure, docs/records.md "Sealing") -------------------

    def seals(self) -> list[sealing.Seal]:
        """Every seal, in the order written; none in a store no writer of this version has opened."""
        with self._db_lock:
            if not self._has_table("seals"):
                return []
            rows = self._db.execute("SELECT store_id, epoch, last_seq, head_hash, ts_utc, mac FROM seals ORDER BY rowid").fetchall()
        return [sealing.Seal(*row) for row in rows]

    def last_seal(self) -> sealing.Seal | None:
        """The newest seal: the day report's checkpoint names it."""
        seals = self.seals()
        return seals[-1] if seals else None

    def check_seals(self, verification_key: bytes | None) -> sealing.SealVerdict:
        """The seals against the chain and the key state; with the verification key, their MACs too."""
        state = sealing.load_key_state(sealing.key_state_path(self.path))
        return sealing.check_seals(verification_key, self.seals(), state, self._hash_at, self._last_seq)

    def set_up_keys(self, verification_key: bytes, *, replace: bool = False) -> sealing.Seal | None:
        """Start sealing under a new verification key: its key state (epoch 0) beside the store, then
        the events already recorded sealed as epoch 0. ``replace`` overwrites a key state already there."""
        state = sealing.KeyState.first(verification_key)
        path = sealing.key_state_path(self.path)
        with self._db_lock:
            if replace:
                sealing.replace_key_state(path, state)
            else:
                sealing.create_key_state(path, state)
            self._key_state = state
            return self.seal()

    def seal(self) -> sealing.Seal | None:
        """Close the epoch: the events so far sealed with the current key, which then evolves and is
        forgotten. Nothing to do on an unsealed store or with no event since this key's last seal."""
        with self._db_lock:
            state = self._key_state
            if state is None:
                return None
            own = [s for s in self.seals() if s.store_id == state.store_id]
            if own and own[-1].epoch == state.epoch:  # sealed, but the key did not evolve (stopped in between)
                state = self._evolve_key(state)
            if self._last_seq == 0 or (own and own[-1].last_seq == self._last_seq):
                return None
            made = state.seal(self._last_seq, self._last_hash, datetime.now(UTC).isoformat(timespec="milliseconds"))
            try:
                self._db.execute("INSERT INTO seals(store_id, epoch, last_seq, head_hash, ts_utc, mac) VALUES (?,?,?,?,?,?)",
                                 (made.store_id, made.epoch, made.last_seq, made.head_hash, made.ts_utc, made.mac))
            except sqlite3.Error as exc:
                raise RecordNotSaved(f"{self.path}: the seal of epoch {made.epoch} was NOT written ({exc}); the events are recorded, "
                                     "not sealed yet", "Free disk space; Givre seals them at the next session's end") from exc
            self._evolve_key(state)
            return made

    def _evolve_key(self, state: sealing.KeyState) -> sealing.KeyState:
        path = sealing.key_state_path(self.path)
        try:
            sealing.replace_key_state(path, state.evolved())
        except OSError as exc:
            raise RecordNotSaved(f"{path}: the key could not be moved past epoch {state.epoch} ({exc.strerror}); "
                                 "its seal is written, but that epoch's key is still on the machine",
                                 "Free disk space; Givre moves it on at the next seal") from exc
        self._key_state, self._epoch_opened = state.evolved(), None
        return self._key_state

    def _seal_if_due(self) -> None:
        """An epoch open for EPOCH_SECONDS of wall time is sealed at the next append. A seal that cannot
        be written here is not this event's failure (it is recorded): the next append tries again."""
        if self._key_state is None:
            return
        now = self.clock.monotonic()
        if self._epoch_opened is None:
            self._epoch_opened = now
        elif now - self._epoch_opened >= self.clock.wall(sealing.EPOCH_SECONDS):
            with suppress(RecordNotSaved):
                self.seal()

    def _seal_before_close(self) -> None:
        """The writer seals what it recorded; one it cannot write now is written by the next writer's first seal."""
        if self._key_state is not None and getattr(self, "_db", None) is not None:
            with suppress(RecordNotSaved):
                self.seal()
        self._key_state = None

    def _hash_at(self, seq: int) -> str | None:
        with self._db_lock:
            row = self._db.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    def _check_seals_on_open(self) -> None:
        """A writer appends only to a record whose newest part follows its last seal, with a key state
        that follows the seals. Cheap on any size of log: the seals, and the events after the last one
        (a full check is `givre records verify --verify-key`). Refused: SealBroken, in one line."""
        seals = self.seals()
        try:
            state = sealing.load_key_state(sealing.key_state_path(self.path))
        except sealing.SealKeyError as exc:
            self._refuse(exc.problem)
        if state is None and seals:
            self._refuse(f"it is sealed (epoch {seals[-1].epoch}, to event {seals[-1].last_seq}) but its key state "
                         f"{sealing.key_state_path(self.path).name} is missing: history may have been truncated")
        problem = (sealing.state_problem(state, seals) if state is not None else None) or (self._tail_problem(seals[-1]) if seals else None)
        if problem is not None:
            self._refuse(problem)
        self._key_state = state
        own = [s for s in seals if state is not None and s.store_id == state.store_id]
        if state is not None and own and own[-1].epoch == state.epoch:  # sealed, but stopped before the key evolved
            self._evolve_key(state)
        if state is not None and self._last_seq > (own[-1].last_seq if own else 0):
            self._epoch_opened = self.clock.monotonic()

    def _tail_problem(self, last: sealing.Seal) -> str | None:
        """The events from the last sealed one to the head: the sealed one unchanged, the rest chained."""
        bad = self.verify_since_checkpoint(last)
        if bad is None:
            return None
        if bad.seq == last.last_seq and bad.hash != last.head_hash:
            return f"event {last.last_seq} is not the one sealed in epoch {last.epoch} ({last.ts_utc}): the record was changed"
        if bad.seq == last.last_seq:
            return f"event {bad.seq} ({bad.kind}, {bad.ts_utc}), the last one sealed, was changed after it was sealed"
        return f"event {bad.seq} ({bad.kind}, {bad.ts_utc}), after the last seal, does not follow the hash chain"

    def _refuse(self, problem: str) -> NoReturn:
        self.close()
        raise SealBroken(f"{self.path}: {problem}; this Givre will not add to it",
                         f"Run `givre records verify --db {self.path} --verify-key KEY`, restore the store from a backup; "
                         "read-only commands still read it")
