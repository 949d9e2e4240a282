"""One rule for what a freeze really did when its report never came (docs/protocol.md, reconciliation).

The live procedure, the headless run and crash recovery all ask the same question: the host sent a
FREEZE and lost track of it (link lost, device rebooted, host killed). ``reconcile`` answers it from
plain facts with no I/O, ranking the evidence:

1. the device's FREEZE_DONE bound to this boot, session and txn (taken by the live path directly, or
   kept by the device and filed in the record at a later connection);
2. COUNTERS whose last-freeze record is this freeze (same boot it ran in, same txn; the record
   survives a reset, which it reports as end_reason RESET);
3. the host's own record that the device accepted the FREEZE (ACK OK) or reported FREEZE_STARTED;
4. nothing.

A freeze the device acknowledged is never recorded as not started. Another boot without a matching
last-freeze record means "unknown", with every fact said, never 0 ms. A device that cannot be read
now (or another device at the port) leaves the outcome unresolved: the cycle stays open in the
record and is read at the next connection to that device serial. ``read_and_reconcile`` is the
one driver that asks a device for the facts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.records.certainty import Certainty
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import Link
from firmware_bridge.messages import Counters, EndReason
from firmware_bridge.units import available_u32


class Finding(enum.Enum):
    REPORTED = "reported"  # the device's own FREEZE_DONE for it, kept and delivered at a later connection
    RECONCILED = "reconciled"  # the device's last-freeze record is this freeze: its figures are the device's
    NOT_STARTED = "not_started"  # the device provably never executed it (never acknowledged, counters unchanged)
    UNKNOWN = "unknown"  # the device was read and cannot say any more: final, with the facts
    STILL_RUNNING = "still_running"  # this freeze is running with nobody supervising it: STOP, then read again
    UNRESOLVED = "unresolved"  # the device cannot be read now: the cycle stays open until it can


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """The figures of a FREEZE_DONE the device raised for this freeze (bound to its boot, session and txn)."""

    valve_open_ms: int
    halo_to_off_ms: int | None
    end_reason: str


@dataclass(frozen=True, slots=True)
class FreezeFacts:
    """What the host knows of one freeze it asked for (from memory, or rebuilt from the record)."""

    serial: str
    boot_count: int  # the device's boot when the FREEZE was sent
    txn: int | None  # None: the FREEZE never left the host
    accepted: bool  # the device answered ACK OK
    started_seen: bool  # the device reported FREEZE_STARTED for this txn
    freezes_started_before: int | None  # COUNTERS read just before the FREEZE (same boot)
    last_txn_before: int | None
    reported: DeviceReport | None = None  # the best evidence there is, when the record holds it


@dataclass(frozen=True, slots=True)
class Outcome:
    finding: Finding
    why: str  # in words, with the figures it rests on
    valve_open_ms: int | None = None
    halo_to_off_ms: int | None = None
    end_reason: str | None = None  # an EndReason name, or NOT_STARTED

    @property
    def certainty(self) -> Certainty:
        """Where a settled outcome's figures come from (asked only once settled)."""
        named = {Finding.REPORTED: Certainty.DEVICE_REPORTED, Finding.RECONCILED: Certainty.RECONCILED,
                 Finding.NOT_STARTED: Certainty.RECONCILED}
        return named.get(self.finding, Certainty.UNKNOWN)

    @property
    def settled(self) -> bool:
        """True once nothing more can be learnt: the cycle can be closed in the record."""
        return self.finding in (Finding.REPORTED, Finding.RECONCILED, Finding.NOT_STARTED, Finding.UNKNOWN)


def reconcile(facts: FreezeFacts, serial: str | None, counters: Counters | None, why_unreadable: str = "") -> Outcome:
    """The one rule. ``serial``/``counters``: the device now at the port and what it says (None: unreadable)."""
    if facts.reported is not None:
        done = facts.reported
        return Outcome(Finding.REPORTED, f"the device reported {done.valve_open_ms} ms, ended {done.end_reason}",
                       done.valve_open_ms, done.halo_to_off_ms, done.end_reason)
    if counters is None or serial is None:
        return Outcome(Finding.UNRESOLVED, f"device {facts.serial} cannot be read now{': ' + why_unreadable if why_unreadable else ''}")
    if serial != facts.serial:
        return Outcome(Finding.UNRESOLVED, f"the device at the port is {serial}, not {facts.serial} that ran the freeze")
    return _from_counters(facts, counters)


def _from_counters(facts: FreezeFacts, counters: Counters) -> Outcome:
    """The rule's evidence 2 to 4, with the COUNTERS of the device that ran the freeze."""
    c = counters
    never_ran = facts.last_txn_before == facts.txn and c.freezes_started == facts.freezes_started_before  # an older freeze, same txn
    if facts.txn is not None and c.last_txn == facts.txn and c.last_boot_count == facts.boot_count and not never_ran:
        if c.last_end_reason is EndReason.NONE and c.boot_count == facts.boot_count:
            return Outcome(Finding.STILL_RUNNING, f"freeze txn {facts.txn} is still running on the device")
        halo = available_u32(c.last_halo_to_off_ms)
        rebooted = f" (the device restarted since: boot {facts.boot_count} -> {c.boot_count})" if c.boot_count != facts.boot_count else ""
        return Outcome(Finding.RECONCILED, f"the device measured {c.last_valve_open_ms} ms, ended {c.last_end_reason.name}{rebooted}",
                       c.last_valve_open_ms, halo, c.last_end_reason.name)
    acknowledged = facts.accepted or facts.started_seen
    said = "acknowledged by the device" if acknowledged else "never acknowledged"
    if c.boot_count != facts.boot_count:
        return Outcome(Finding.UNKNOWN, f"freeze txn {facts.txn} ({said}) ran in boot {facts.boot_count}; the device is now in boot "
                                        f"{c.boot_count} and its last-freeze record is txn {c.last_txn} of boot {c.last_boot_count}")
    untouched = (facts.freezes_started_before is not None and c.freezes_started == facts.freezes_started_before
                 and c.last_txn == facts.last_txn_before)
    if not acknowledged and untouched:
        return Outcome(Finding.NOT_STARTED, f"the device never started freeze txn {facts.txn}: no acknowledgement, and its "
                                            f"counters are unchanged ({c.freezes_started} freezes, last txn {c.last_txn})",
                       0, None, "NOT_STARTED")
    return Outcome(Finding.UNKNOWN, f"freeze txn {facts.txn} ({said}); the device's last-freeze record now holds txn {c.last_txn} "
                                    f"({c.freezes_started} freezes since boot {c.boot_count}): another freeze replaced it")


def read_and_reconcile(link: Link | None, facts: FreezeFacts) -> Outcome:
    """Ask the device for the facts and apply the rule; a freeze still running unsupervised is stopped first."""
    if link is None or link.identity is None:
        return reconcile(facts, None, None, "not connected")
    try:
        if link.needs_handshake:  # the device rebooted: it answers nothing else until HELLO
            link.handshake()
        assert link.identity is not None
        outcome = reconcile(facts, link.identity.serial, link.counters())
        if outcome.finding is Finding.STILL_RUNNING:
            link.stop(reason=2)  # the host lost track of it: stopping is the safe side
            outcome = reconcile(facts, link.identity.serial, link.counters())
    except BridgeError as exc:
        return reconcile(facts, None, None, exc.problem)
    return outcome
