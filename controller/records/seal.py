"""Forward-secure sealing of the record (as systemd-journald's FSS, after Schneier and Kelsey).

The hash chain alone has no key: whoever holds the file can edit a row and re-hash the rest. Here
the events are closed in epochs: a seal (epoch, last seq, head hash, time) is MACed with the
epoch's key K_i, then the key evolves one way, K_{i+1} = SHA256(prefix + K_i), and K_i is
overwritten. The machine only ever holds the current key (the key state file beside the store),
so a person holding it now can forge what comes next, never what is already sealed. The clinic
keeps K_0, the verification key, off the machine: from it a verifier derives every K_i, checks
every seal, and checks that the machine's key state is exactly one epoch past the last seal, so
cutting the newest seals and events off (truncation) shows too: the key cannot be evolved back.

This module is below the store (the store imports it, as it imports projections): keys, their
text form, the key state file and the checks over seal rows the store hands it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from controller.errors import GivreError
from controller.records.private_files import sync_folder, write_private

KEY_BYTES = 32
EVOLVE_PREFIX = b"givre-seal-evolve\0"
STORE_ID_PREFIX = b"givre-seal-id\0"
CHECKSUM_PREFIX = b"givre-seal-check\0"
CHECKSUM_BYTES = 3  # 32 + 3 bytes are exactly 56 base32 characters: 14 groups of 4, no padding
GROUP = 4
KEY_LETTERS = len(base64.b32encode(bytes(KEY_BYTES + CHECKSUM_BYTES)))
KEY_STATE_FORMAT = "givre-seal-key-state/1"
MAC_FORMAT = "givre-seal/1"
EPOCH_SECONDS = 15 * 60  # an epoch open this long (wall time) is sealed at the next append
BASE32_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})  # digits base32 leaves out, read as the letters they resemble


class SealKeyError(GivreError):
    """A verification key or key state Givre cannot use: mistyped, another store's, unreadable."""


def new_verification_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def evolve(key: bytes) -> bytes:
    return hashlib.sha256(EVOLVE_PREFIX + key).digest()


def key_at(verification_key: bytes, epoch: int) -> bytes:
    key = verification_key
    for _ in range(epoch):
        key = evolve(key)
    return key


def store_id_of(verification_key: bytes) -> str:
    """Names the key (and so the sealed store) without revealing it: kept on the machine and in each seal."""
    return hashlib.sha256(STORE_ID_PREFIX + verification_key).hexdigest()[:32]


def fingerprint(store_id: str) -> str:
    """The short form people compare: the first 16 hex digits of the store id, in groups."""
    return "-".join(store_id[i:i + GROUP] for i in range(0, 16, GROUP))


def _checksum(key: bytes) -> bytes:
    return hashlib.sha256(CHECKSUM_PREFIX + key).digest()[:CHECKSUM_BYTES]


def key_text(verification_key: bytes) -> str:
    """The key as people copy it: base32 in groups of four, its last group ending in a checksum."""
    letters = base64.b32encode(verification_key + _checksum(verification_key)).decode("ascii")
    return "-".join(letters[i:i + GROUP] for i in range(0, len(letters), GROUP))


def parse_key_text(text: str) -> bytes:
    """The verification key from its text (case, spaces and dashes do not matter); a typo is named
    by its group when one changed character explains it."""
    letters = "".join(text.split()).replace("-", "").upper().translate(LOOKALIKES)
    for position, char in enumerate(letters):
        if char not in BASE32_LETTERS:
            raise SealKeyError(f"verification key: {char!r} in group {position // GROUP + 1} is not a key character",
                               "A key has the letters A-Z and the digits 2-7, in groups of four; copy it again from the printed key")
    if len(letters) != KEY_LETTERS:
        raise SealKeyError(f"verification key: {len(letters)} characters, a key has {KEY_LETTERS}",
                           f"Copy every group of the printed key ({KEY_LETTERS // GROUP} groups of {GROUP})")
    key = _decoded(letters)
    if key is not None:
        return key
    groups = {position // GROUP + 1 for position in range(KEY_LETTERS) for other in BASE32_LETTERS
              if _decoded(letters[:position] + other + letters[position + 1:]) is not None}
    where = f"group {groups.pop()} looks mistyped" if len(groups) == 1 else "a character is mistyped"
    raise SealKeyError(f"verification key: {where} (its checksum does not match)", "Check it against the printed key")


def _decoded(letters: str) -> bytes | None:
    raw = base64.b32decode(letters)
    key, check = raw[:KEY_BYTES], raw[KEY_BYTES:]
    return key if hmac.compare_digest(check, _checksum(key)) else None


@dataclass(frozen=True, slots=True)
class Seal:
    """One row of the seals table: epoch ``epoch`` of key ``store_id`` closed at event ``last_seq``."""

    store_id: str
    epoch: int
    last_seq: int
    head_hash: str
    ts_utc: str
    mac: str

    def expected_mac(self, key: bytes) -> str:
        """HMAC-SHA256 of the other fields. They are fixed in kind (hex, integers, an ISO time), so they
        are joined by newlines under a format tag rather than in the store's canonical JSON, which this
        module sits below."""
        message = "\n".join([MAC_FORMAT, self.store_id, str(self.epoch), str(self.last_seq), self.head_hash, self.ts_utc])
        return hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()

    def made_with(self, key: bytes) -> bool:
        return hmac.compare_digest(self.expected_mac(key), self.mac)


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the machine keeps: the current epoch and its key; K_0 and every earlier key are gone."""

    store_id: str
    epoch: int
    key: bytes

    @classmethod
    def first(cls, verification_key: bytes) -> KeyState:
        return cls(store_id_of(verification_key), 0, verification_key)

    def evolved(self) -> KeyState:
        return KeyState(self.store_id, self.epoch + 1, evolve(self.key))

    def seal(self, last_seq: int, head_hash: str, ts_utc: str) -> Seal:
        unsigned = Seal(self.store_id, self.epoch, last_seq, head_hash, ts_utc, mac="")
        return replace(unsigned, mac=unsigned.expected_mac(self.key))

    def to_json(self) -> bytes:
        return json.dumps({"format": KEY_STATE_FORMAT, "store_id": self.store_id, "epoch": self.epoch,
                           "key": self.key.hex()}).encode("ascii")


def key_state_path(store_path: Path) -> Path:
    return Path(f"{store_path}.sealkey")


def load_key_state(path: Path) -> KeyState | None:
    """The key state at ``path``; None if there is none (an unsealed store, or one whose state was deleted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SealKeyError(f"{path}: the key state cannot be read ({exc.strerror})",
                           "It must be a plain file (not a link) readable by Givre; restore it from the backup") from exc
    with os.fdopen(fd, "rb") as source:
        data = source.read()
    try:
        fields = json.loads(data)
        if fields["format"] != KEY_STATE_FORMAT:
            raise ValueError(f"format {fields['format']!r}")
        state = KeyState(str(fields["store_id"]), int(fields["epoch"]), bytes.fromhex(fields["key"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise SealKeyError(f"{path}: not a Givre key state ({exc})", "Restore it from the backup taken with the store") from exc
    if len(state.key) != KEY_BYTES or state.epoch < 0:
        raise SealKeyError(f"{path}: not a Givre key state (a {len(state.key)}-byte key at epoch {state.epoch})",
                           "Restore it from the backup taken with the store")
    return state


def create_key_state(path: Path, state: KeyState) -> None:
    """Write a first key state (0600); refuses a file or link already there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise SealKeyError(f"{path}: a key state is already there", "Keep it; `givre records setup-keys --force` replaces it") from None
    with os.fdopen(fd, "wb") as out:
        out.write(state.to_json())
        out.flush()
        os.fsync(out.fileno())
    sync_folder(path.parent)


def replace_key_state(path: Path, state: KeyState) -> None:
    """Replace the key state atomically (write_private: a 0600 temporary file renamed over it): after
    a crash the file holds the old state or the new one, never a mix; the old key is then gone from the file."""
    write_private(path, state.to_json())


def state_problem(state: KeyState, seals: Sequence[Seal]) -> str | None:
    """Why the key state does not follow the seals (all of them, oldest first), or None: its key
    must have made the newest seal (unless it has made none yet) and be exactly one epoch past its
    own last seal. Checked without the verification key: what it misses, ``check_seals`` adds."""
    own = [s for s in seals if s.store_id == state.store_id]
    expected = own[-1].epoch + 1 if own else 0
    if own and seals[-1].store_id != state.store_id:
        return (f"the key state is of key {fingerprint(state.store_id)}, but the newest seal (epoch {seals[-1].epoch}) was made "
                f"with key {fingerprint(seals[-1].store_id)}: the key state was replaced by an older one")
    if state.epoch > expected:
        last = f"epoch {own[-1].epoch}, to event {own[-1].last_seq}" if own else "none"
        return (f"the key state is at epoch {state.epoch} but its last seal is {last}: seals and the events they closed "
                "were deleted, history may have been truncated")
    if state.epoch < expected - 1 or (state.epoch == expected - 1 and not own[-1].made_with(state.key)):
        return f"the key state is at epoch {state.epoch}, behind its last seal (epoch {own[-1].epoch}): it was replaced by an older copy"
    return None


@dataclass(frozen=True, slots=True)
class SealVerdict:
    """What the seals say about the record; ``problem`` is None when they hold."""

    problem: str | None
    sealing: bool  # the store is set up for sealing (a key state or seals); False: only the chain protects it
    key_checked: bool  # the MACs and the key state were checked with the verification key
    sealed_epochs: int  # by the key checked (without one: by the key state's key)
    sealed_to_seq: int
    sealed_at: str | None
    unsealed_events: int

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_seals(verification_key: bytes | None, seals: Sequence[Seal], state: KeyState | None,
                hash_at: Callable[[int], str | None], head_seq: int) -> SealVerdict:
    """Check every seal against the chain (``hash_at(seq)``: the stored hash of that event), and with
    the verification key also each MAC and that the key state is the one K_0 evolves to. The chain's
    own links are the store's verify(). Raises SealKeyError when the key is none of this store's."""
    store_id = state.store_id if state is not None else None
    if verification_key is not None:
        store_id = store_id_of(verification_key)
        known = {s.store_id for s in seals} | ({state.store_id} if state is not None else set())
        if known and store_id not in known:
            theirs = ", ".join(sorted(fingerprint(k) for k in known))
            raise SealKeyError(f"this verification key (fingerprint {fingerprint(store_id)}) is not this store's ({theirs})",
                               "Use the key printed for this store by `givre records setup-keys`; the record was not checked")
    own = [s for s in seals if s.store_id == store_id] if store_id is not None else list(seals)
    sealed_to = own[-1].last_seq if own else 0
    return SealVerdict(_seals_problem(verification_key, seals, state, hash_at), state is not None or bool(seals),
                       verification_key is not None, len(own), sealed_to,
                       own[-1].ts_utc if own else None, head_seq - sealed_to)


def _seals_problem(verification_key: bytes | None, seals: Sequence[Seal], state: KeyState | None,
                   hash_at: Callable[[int], str | None]) -> str | None:
    if state is None and (seals or verification_key is not None):
        return ("the store is sealed but its key state is missing: it was deleted, and history may have been truncated" if seals else
                "the store has no key state and no seal: never set up for sealing, or both were deleted (history may have been truncated)")
    problem = _sequence_problem(verification_key, seals, hash_at)
    if problem is not None or state is None:
        return problem
    problem = state_problem(state, seals)
    if problem is not None or verification_key is None:
        return problem
    mine = store_id_of(verification_key)
    if state.store_id != mine:
        return (f"this key sealed to event {max(s.last_seq for s in seals if s.store_id == mine)}, then the store's keys were replaced "
                f"(now key {fingerprint(state.store_id)}): nothing after that is proven by this key")
    if state.key != key_at(verification_key, state.epoch):
        return f"the key state (epoch {state.epoch}) does not hold the key this verification key gives: it was forged"
    return None


def _sequence_problem(verification_key: bytes | None, seals: Sequence[Seal], hash_at: Callable[[int], str | None]) -> str | None:
    """Each key's seals numbered from 0 with nothing missing, each closing a later event whose hash is
    still the one sealed, and (with the verification key) each MAC made by its epoch's key."""
    mine = store_id_of(verification_key) if verification_key is not None else None
    key = verification_key
    followed: dict[str, Seal] = {}  # per key: its last seal so far
    for s in seals:
        before = followed.get(s.store_id)
        if s.epoch != (before.epoch + 1 if before else 0):
            return f"seal epoch {s.epoch} of key {fingerprint(s.store_id)} does not follow the one before it: a seal was deleted or added"
        if key is not None and s.store_id == mine:
            if not s.made_with(key):
                return (f"the seal of epoch {s.epoch} (to event {s.last_seq}, {s.ts_utc}) does not match its MAC: "
                        "it was altered, or made by someone without the key")
            key = evolve(key)
        if (before is not None and s.last_seq <= before.last_seq) or hash_at(s.last_seq) != s.head_hash:
            return (f"event {s.last_seq} is not the one sealed in epoch {s.epoch} ({s.ts_utc}): "
                    "the record up to it was changed after it was sealed")
        followed[s.store_id] = s
    return None
