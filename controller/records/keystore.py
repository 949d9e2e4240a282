"""The per-patient keys, beside the record and outside it (`<store>.keys`, 0600).

The record's personal fields are encrypted under their patient's key (records/personal.py), so
destroying one key erases one patient without touching the hash chain or the seals everyone else
relies on. A patient's key is found again by a keyed lookup hash (HMAC-SHA256 of the patient id
under this file's own secret): the same patient gets the same key across sessions, and the file
never holds the id itself. Erasing deletes the key's row with SQLite's ``secure_delete`` on (the
freed page is overwritten with zeros), then VACUUM rewrites the file without it. The journal is
SQLite's rollback journal, deleted at each commit: no write-ahead log keeps old pages beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
from pathlib import Path

from controller.errors import GivreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    lookup TEXT NOT NULL UNIQUE,
    key    BLOB NOT NULL
);
"""
KEY_BYTES = 32  # AES-256


class KeyStoreError(GivreError):
    """The key store cannot be read or written: personal fields cannot be encrypted or read back."""


def key_store_path(store_path: Path) -> Path:
    return Path(f"{store_path}.keys")


class KeyStore:
    """One store's patient keys. ``create`` makes the file if it is not there (a writer recording a
    session); otherwise a missing file raises KeyStoreError (readers say so instead)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create and not path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except OSError as exc:
                raise KeyStoreError(f"{path}: the key store cannot be created ({exc.strerror})",
                                    "Check the store folder's permissions (a plain folder, writable by Givre only)") from exc
        if path.is_symlink() or not path.is_file():
            raise KeyStoreError(f"{path}: key store missing (or not a plain file)",
                                "Restore it from the backup made with the store; without it the patients' fields cannot be read")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            if create:  # a reader never writes (a writer may be committing in the UI)
                self._db.executescript(SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?), ('store_id', ?)",
                                 (secrets.token_bytes(KEY_BYTES), secrets.token_hex(16).encode("ascii")))
            self.store_id = bytes(self._db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()[0]).decode("ascii")
            self._secret = bytes(self._db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()[0])
        except sqlite3.Error as exc:
            self.close()
            raise KeyStoreError(f"{path}: not a usable key store ({exc})", "Restore it from the backup made with the store") from exc

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def _lookup(self, patient: str) -> str:
        return hmac.new(self._secret, patient.encode("utf-8"), hashlib.sha256).hexdigest()

    def find(self, patient: str) -> str | None:
        """The patient's key id, or None (never recorded with a key, or erased)."""
        row = self._db.execute("SELECT key_id FROM keys WHERE lookup = ?", (self._lookup(patient),)).fetchone()
        return str(row[0]) if row else None

    def key_for(self, patient: str) -> str:
        """The patient's key id, made (a fresh random key) the first time the patient is seen."""
        found = self.find(patient)
        if found is not None:
            return found
        key_id = f"K{secrets.token_hex(8)}"
        try:
            self._db.execute("INSERT INTO keys VALUES (?,?,?)", (key_id, self._lookup(patient), secrets.token_bytes(KEY_BYTES)))
        except sqlite3.Error as exc:
            raise KeyStoreError(f"{self.path}: a patient key could not be written ({exc})",
                                "Free disk space or check the key store's permissions; nothing was recorded") from exc
        return key_id

    def key(self, key_id: str) -> bytes | None:
        """The key, or None once it has been erased."""
        row = self._db.execute("SELECT key FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return bytes(row[0]) if row else None

    def erase(self, key_id: str) -> None:
        """Destroy the key: its row deleted with secure_delete (the page zeroed), then the file
        rewritten without the freed pages (VACUUM), so no copy stays inside the file."""
        try:
            self._db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))
            self._db.execute("VACUUM")
        except sqlite3.Error as exc:
            raise KeyStoreError(f"{self.path}: the key could not be destroyed ({exc})",
                                "Free disk space and run the erasure again; the patient is NOT erased yet") from exc

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
