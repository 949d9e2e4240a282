"""`givre records verify` and `givre records setup-keys`: the chain and its forward-secure seals
(controller/records/seal.py), kept apart from records.py's other subcommands."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import segno

from controller.cli.options import add_db, open_store
from controller.config import default_db
from controller.records import seal as sealing
from controller.records.private_files import write_private
from controller.records.store import SealBroken, StoredEvent

QR_SCALE = 8  # pixels per module in the PNG: a phone reads it off paper at arm's length


def add_verify(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    verify = actions.add_parser("verify", help="walk the hash chain and the seals; exit 1 and name what is wrong if tampered")
    key = verify.add_mutually_exclusive_group()
    key.add_argument("--verify-key", metavar="KEY", help="the verification key printed by setup-keys (groups of four)")
    key.add_argument("--verify-key-file", type=Path, metavar="PATH", help="a file holding the verification key's text")
    return verify


def add_setup_keys(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setup = actions.add_parser("setup-keys", help="start forward-secure sealing: prints the verification key (keep it OFF this machine)")
    add_db(setup)
    setup.add_argument("--png", type=Path, metavar="FILE", help="also write the key's QR code as a PNG image (0600)")
    setup.add_argument("--svg", type=Path, metavar="FILE", help="also write the key's QR code as an SVG image (0600)")
    setup.add_argument("--force", action="store_true", help="replace keys already set up (says what that loses)")


def verify(args: argparse.Namespace) -> int:
    verification_key = _given_key(args)
    with open_store(args.db, writer=False) as store:
        bad = store.verify()
        count, head = store.head()
        seals = store.check_seals(verification_key)
    ok = bad is None and seals.ok
    if args.json:
        print(json.dumps({"ok": ok, "events": count, "head": head, "first_bad_event": _event_facts(bad),
                          "sealing": seals.sealing, "key_checked": seals.key_checked, "seal_problem": seals.problem,
                          "sealed_epochs": seals.sealed_epochs, "sealed_to_seq": seals.sealed_to_seq, "sealed_at": seals.sealed_at,
                          "unsealed_events": seals.unsealed_events}))
        return 0 if ok else 1
    if bad is not None:
        print(f"TAMPERED: event {bad.seq} ({bad.kind}, {bad.ts_utc}) does not follow the chain; everything from it on is untrustworthy")
    if seals.problem is not None:
        print(f"TAMPERED: {seals.problem}")
    if not ok:
        return 1
    sealed = (f"sealed up to event {seals.sealed_to_seq} at {seals.sealed_at} ({seals.sealed_epochs} epoch(s)); "
              f"{seals.unsealed_events} event(s) after it not yet sealed")
    if seals.key_checked:
        print(f"ok: {count} events, the chain is intact and its seals hold under this key: {sealed}; head {head}")
    elif seals.sealing:
        print(f"ok: {count} events, {sealed}; head {head}")
        print("the chain is intact, but without the verification key this does not prove that nobody rewrote it "
              "(give --verify-key or --verify-key-file)")
    else:
        print(f"ok: {count} events, the chain is intact; head {head}")
        print("this store is not sealed, so the chain does not prove that nobody rewrote it: "
              f"set sealing up with `givre records setup-keys --db {store.path}`")
    return 0


def _given_key(args: argparse.Namespace) -> bytes | None:
    if args.verify_key_file is not None:
        return sealing.parse_key_text(args.verify_key_file.read_text(encoding="utf-8"))
    return None if args.verify_key is None else sealing.parse_key_text(args.verify_key)


def _event_facts(event: StoredEvent | None) -> dict[str, object] | None:
    return None if event is None else {"seq": event.seq, "kind": event.kind, "ts_utc": event.ts_utc}


def setup_keys(args: argparse.Namespace) -> int:
    """A new verification key for the store: its key state beside it (epoch 0), the events already
    recorded sealed at once, and the key shown once, as text, fingerprint and QR code."""
    key_path = sealing.key_state_path(args.db or default_db())
    previous = sealing.load_key_state(key_path) if args.force else None
    verification_key = sealing.new_verification_key()
    try:
        with open_store(args.db) as store:
            if previous is not None:
                _say_what_is_lost(previous, store.seals())
            store.set_up_keys(verification_key, replace=args.force)
    except SealBroken as broken:
        if not args.force:
            raise
        print(f"givre records: warning: {broken.problem}; --force starts new keys over it, and the old key state "
              "(the evidence of a truncation) is overwritten", file=sys.stderr)
        sealing.replace_key_state(key_path, sealing.KeyState.first(verification_key))
        with open_store(args.db) as store:
            store.seal()
    _show_key(args, verification_key)
    return 0


def _say_what_is_lost(previous: sealing.KeyState, seals: list[sealing.Seal]) -> None:
    own = [s for s in seals if s.store_id == previous.store_id]
    covered = f"its seals (to event {own[-1].last_seq})" if own else "nothing (it sealed no event)"
    print(f"givre records: replacing the keys: the previous verification key (fingerprint {sealing.fingerprint(previous.store_id)}) "
          f"still checks {covered}, but no longer shows whether events after them were cut off, and proves nothing "
          "recorded from now on; keep it with the new one", file=sys.stderr)


def _show_key(args: argparse.Namespace, verification_key: bytes) -> None:
    text = sealing.key_text(verification_key)
    qr = segno.make(text, error="m", micro=False)
    print("Verification key for this record store (shown once, never kept on this machine):")
    print(f"\n    {text}\n")
    print(f"fingerprint {sealing.fingerprint(sealing.store_id_of(verification_key))}")
    qr.terminal(out=sys.stdout, compact=True)
    for path, kind in ((args.png, "png"), (args.svg, "svg")):
        if path is not None:
            image = io.BytesIO()
            qr.save(image, kind=kind, scale=QR_SCALE, border=4)
            write_private(path, image.getvalue())
            print(f"QR code written to {path} (0600): print it, then delete the file")
    print("Keep this key OFF this machine: print it (or this QR code) and put it in the practice's safe. Whoever holds it can\n"
          "check the record with `givre records verify --verify-key KEY`; without it nobody can prove the record was not rewritten.")
