"""The record's personal fields, encrypted at rest under their patient's key (docs/records.md,
"Erasure and encryption at rest").

Encrypted: session_started's ``patient``; lesion_recorded's ``description``, its site's ``detail``
and its ``photo`` reference, and the photo file itself. Each field is AES-256-GCM (the
``cryptography`` library: audited, maintained; never our own crypto) with a fresh 96-bit nonce, and
associated data naming its place (the key store's id, the session, the field), so a ciphertext
copied into another session or field does not decrypt. The event holds the envelope
``{"enc": "aesgcm/1", "key": <patient key id>, "nonce": b64, "ct": b64}``; the chain and the seals
cover it as stored. Reading gives the plaintext while the key exists, ``erased`` once it was
destroyed, and says ``unreadable: ...`` when the key store is missing or a ciphertext does not
decrypt: a reader never fails on a field. Records written before this version hold plain strings
and read as they are.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.records.keystore import KeyStore, KeyStoreError, key_store_path

ENVELOPE = "aesgcm/1"
NONCE_BYTES = 12  # 96 bits, GCM's own size
ERASED = "erased"
KEY_STORE_MISSING = "unreadable: key store missing"
NOT_DECRYPTED = "unreadable: does not decrypt here (altered, or moved from another place)"
PHOTO_MAGIC = b"givre-aesgcm/1\n"  # an encrypted photo file: magic, key id, newline, nonce, ciphertext


def is_envelope(value: object) -> bool:
    return isinstance(value, dict) and value.get("enc") == ENVELOPE


def _place(store_id: str, *parts: str) -> bytes:
    """The associated data: what the ciphertext is bound to (NUL never occurs in an id or a field name)."""
    return "\0".join(("givre-personal/1", store_id, *parts)).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PersonalFields:
    """One record store's personal fields through its key store (``<store>.keys``), opened when first needed."""

    def __init__(self, store_path: Path, writer: bool) -> None:
        self.path = key_store_path(store_path)
        self._writer = writer
        self._keys: KeyStore | None = None

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()
            self._keys = None

    def keys(self, *, create: bool = False) -> KeyStore | None:
        """The key store; None when it is missing (a reader says so), unless ``create`` (a writer recording a patient)."""
        if self._keys is None:
            if not create and not self.path.exists():
                return None
            self._keys = KeyStore(self.path, create=create and self._writer)
        return self._keys

    def patient_key(self, patient: str, *, records_encrypted: bool) -> str:
        """The patient's key id, made the first time. Refused when fields were encrypted already and
        the key store has gone: a new one would leave them unreadable alongside the new ones."""
        if records_encrypted and not self.path.exists():
            raise KeyStoreError(f"{self.path}: key store missing, and this record holds encrypted patient fields",
                                "Restore the key store from the backup made with the store before recording another session")
        keys = self.keys(create=True)
        assert keys is not None  # created above
        return keys.key_for(patient)

    # ---- writing --------------------------------------------------------------------------------

    def protect(self, kind: str, payload: dict[str, Any], session_id: str, key_id: str) -> dict[str, Any]:
        """An event's payload as stored: its personal fields encrypted under the patient's key (reveal's mirror)."""
        if kind not in ("session_started", "lesion_recorded"):
            return payload
        stored = dict(payload)
        if kind == "session_started":
            stored["patient"] = self.encrypt(key_id, session_id, "patient", str(payload["patient"]))
        elif kind == "lesion_recorded":
            lesion_id = str(payload["lesion_id"])
            stored["description"] = self.encrypt(key_id, session_id, f"{lesion_id}/description", str(payload.get("description", "")))
            stored["site"] = {**payload["site"], "detail": self.encrypt(key_id, session_id, f"{lesion_id}/site.detail",
                                                                        str(payload["site"].get("detail", "")))}
            if payload.get("photo") is not None:
                stored["photo"] = self.encrypt(key_id, session_id, f"{lesion_id}/photo", payload["photo"])
        return stored

    def encrypt(self, key_id: str, session_id: str, field: str, value: str | dict[str, Any]) -> dict[str, str]:
        """The envelope of ``value`` (text, or a JSON object such as the photo reference) in its place."""
        plain = value.encode("utf-8") if isinstance(value, str) else json.dumps(value, sort_keys=True).encode("utf-8")
        keys, key = self._key(key_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        ct = AESGCM(key).encrypt(nonce, plain, _place(keys.store_id, session_id, field))
        return {"enc": ENVELOPE, "key": key_id, "nonce": _b64(nonce), "ct": _b64(ct)}

    def encrypt_photo(self, key_id: str, name: str, data: bytes) -> bytes:
        """A photo file's bytes as stored: bound to its own (random) file name, which only the
        encrypted reference in the record names."""
        keys, key = self._key(key_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, data, _place(keys.store_id, "photo-file", name))
        return PHOTO_MAGIC + key_id.encode("ascii") + b"\n" + nonce + sealed

    def _key(self, key_id: str) -> tuple[KeyStore, bytes]:
        keys = self.keys()
        key = keys.key(key_id) if keys is not None else None
        if keys is None or key is None:
            raise KeyStoreError(f"{self.path}: no key {key_id} to encrypt with (erased, or the key store is missing)",
                                "Start the session again; a patient's key is made when the session starts")
        return keys, key

    # ---- reading --------------------------------------------------------------------------------

    def decrypt(self, envelope: dict[str, Any], session_id: str, field: str) -> bytes | str:
        """The plaintext bytes, or why not (ERASED, KEY_STORE_MISSING, NOT_DECRYPTED)."""
        keys = self.keys()
        if keys is None:
            return KEY_STORE_MISSING
        key = keys.key(str(envelope.get("key")))
        if key is None:
            return ERASED
        try:
            nonce, ct = base64.b64decode(envelope["nonce"], validate=True), base64.b64decode(envelope["ct"], validate=True)
            return AESGCM(key).decrypt(nonce, ct, _place(keys.store_id, session_id, field))
        except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
            return NOT_DECRYPTED

    def text(self, value: object, session_id: str, field: str) -> str:
        """A text field as a reader shows it: plaintext (as recorded, or decrypted), or why not."""
        if not is_envelope(value):
            return str(value)
        assert isinstance(value, dict)
        plain = self.decrypt(value, session_id, field)
        return plain if isinstance(plain, str) else plain.decode("utf-8", errors="replace")

    def photo(self, value: object, session_id: str, lesion_id: str) -> dict[str, str] | None:
        """The photo reference ({"sha256", "file"}), or None when there is none or it cannot be read."""
        if not is_envelope(value):
            return value if isinstance(value, dict) else None
        assert isinstance(value, dict)
        plain = self.decrypt(value, session_id, f"{lesion_id}/photo")
        if isinstance(plain, str):
            return None
        try:
            ref = json.loads(plain)
        except ValueError:
            return None
        return {str(k): str(v) for k, v in ref.items()} if isinstance(ref, dict) else None

    def photo_bytes(self, name: str, stored: bytes) -> bytes | None:
        """A stored photo file's image bytes: decrypted, or as they are in a file from before encryption."""
        if not stored.startswith(PHOTO_MAGIC):
            return stored
        key_id, _, rest = stored[len(PHOTO_MAGIC):].partition(b"\n")
        keys = self.keys()
        key = keys.key(key_id.decode("ascii", errors="replace")) if keys is not None else None
        if keys is None or key is None:
            return None
        try:
            return AESGCM(key).decrypt(rest[:NONCE_BYTES], rest[NONCE_BYTES:], _place(keys.store_id, "photo-file", name))
        except (InvalidTag, ValueError):
            return None

    def reveal(self, kind: str, payload: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        """An event's payload as readers show it: its personal fields in clear, erased or unreadable."""
        if session_id is None or kind not in ("session_started", "lesion_recorded"):
            return payload
        shown = dict(payload)
        if kind == "session_started":
            shown["patient"] = self.text(payload.get("patient", ""), session_id, "patient")
            return shown
        lesion_id = str(payload.get("lesion_id"))
        shown["description"] = self.text(payload.get("description", ""), session_id, f"{lesion_id}/description")
        if isinstance(payload.get("site"), dict):
            shown["site"] = {**payload["site"], "detail": self.text(payload["site"].get("detail", ""), session_id,
                                                                    f"{lesion_id}/site.detail")}
        shown["photo"] = self.photo(payload.get("photo"), session_id, lesion_id)
        return shown
