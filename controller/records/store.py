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
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.config import MAX_PHOTO_MB
from controller.errors import GivreError
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
"""
SELECT_EVENTS = "SELECT seq, session_id, ts_utc, mono_ms, kind, payload, prev_hash, hash FROM events"


class RecordError(GivreError):
    """Base of the record store's errors."""


class StoreUnavailable(RecordError):
    """The store cannot be opened: locked by another Givre, on a network filesystem, unreadable."""


class RecordNotSaved(RecordError):
    """An event could not be committed (disk full, read-only, I/O error): it is NOT recorded."""


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


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What a row's hash covers besides the previous hash: (seq, session_id, ts_utc, mono_ms, kind, payload as stored).
ChainedFields = tuple[int, str | None, str, float, str, str]


def chain_hash(prev_hash: str, fields: ChainedFields) -> str:
    body = canonical([prev_hash, *fields])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


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
    def __init__(self, path: Path, *, clock: Clock = SYSTEM_CLOCK, writer: bool = True, fs_type: str | None = None) -> None:
        self.path = path
        self.clock = clock
        self.photos_dir = path.parent / f"{path.stem}-photos"
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
            for suffix in ("-wal", "-shm"):
                side = Path(f"{path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o600)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreUnavailable(f"{path}: not a usable record store ({exc}). Check the path, or restore from a backup") from exc
        last = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_seq: int = last[0] if last else 0
        self._last_hash: str = last[1] if last else GENESIS

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

    def append(self, kind: str, payload: dict[str, Any], session_id: str | None = None) -> StoredEvent:
        """Commit one event durably and return it; raises RecordNotSaved if it is not on disk."""
        with self._db_lock:
            return self._append(kind, payload, session_id)

    def _append(self, kind: str, payload: dict[str, Any], session_id: str | None) -> StoredEvent:
        seq = self._last_seq + 1
        ts = datetime.now(UTC).isoformat(timespec="milliseconds")
        mono_ms = round(self.clock.monotonic() * 1000, 3)
        body = canonical(payload)
        digest = chain_hash(self._last_hash, (seq, session_id, ts, mono_ms, kind, body))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO events(seq, session_id, ts_utc, mono_ms, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                (seq, session_id, ts, mono_ms, kind, body, self._last_hash, digest),
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):  # the INSERT's error is the one to report
                self._db.execute("ROLLBACK")
            raise RecordNotSaved(f"{self.path}: event '{kind}' was NOT recorded ({exc}). Free disk space or fix the store") from exc
        event = StoredEvent(seq, session_id, ts, mono_ms, kind, payload, self._last_hash, digest)
        self._last_seq, self._last_hash = seq, digest
        return event

    def store_photo(self, source: Path) -> tuple[str, str]:
        """Take a photo into the store without its metadata (records/photo.py: EXIF and GPS stripped,
        a symlink, a pipe, an oversize file or a non-image refused), 0600; returns (sha256 of what is
        stored, stored file name). The clinic's own size limit is checked where the photo is given."""
        from controller.records.photo import load_photo  # noqa: PLC0415 - photo.py imports this module (PhotoRefused is a RecordError)

        photo = load_photo(source, MAX_PHOTO_MB * 1_000_000)
        digest = hashlib.sha256(photo.data).hexdigest()
        self.photos_dir.mkdir(mode=0o700, exist_ok=True)
        name = f"{digest}{photo.suffix}"
        write_private(self.photos_dir / name, photo.data)  # the same bytes again if already there; a planted symlink is refused
        return digest, name

    # ---- reading -------------------------------------------------------------------------------

    def events(self, session_id: str | None = None) -> Iterator[StoredEvent]:
        where, params = (" WHERE session_id = ?", (session_id,)) if session_id else ("", ())
        with self._db_lock:
            rows = self._db.execute(f"{SELECT_EVENTS}{where} ORDER BY seq", params).fetchall()
        for seq, sid, ts, mono, kind, payload, prev, digest in rows:
            yield StoredEvent(seq, sid, ts, mono, kind, json.loads(payload), prev, digest)

    def head(self) -> tuple[int, str]:
        """(event count, head hash): print these in reports so a truncated store can be caught."""
        return self._last_seq, self._last_hash

    def verify(self) -> StoredEvent | None:
        """Walk the chain; returns the first event that does not follow, or None if all do."""
        prev = GENESIS
        expected_seq = 1
        with self._db_lock:
            rows = self._db.execute(f"{SELECT_EVENTS} ORDER BY seq").fetchall()
        for seq, sid, ts, mono, kind, payload, prev_hash, digest in rows:
            if seq != expected_seq or prev_hash != prev or chain_hash(prev, (seq, sid, ts, mono, kind, payload)) != digest:
                try:
                    body = json.loads(payload)
                except ValueError:
                    body = {"unreadable": payload}
                return StoredEvent(seq, sid, ts, mono, kind, body, prev_hash, digest)
            prev, expected_seq = digest, seq + 1
        return None

