"""The vocabulary of a cycle's certainty: how the record knows a freeze's figures."""

from __future__ import annotations

import enum


class Certainty(enum.StrEnum):
    """Where a cycle's figures come from: the record's "certainty" field, word for word. UNRESOLVED is
    never written to a cycle: the procedure holds it while the device cannot be read, and the record
    gets a freeze_unresolved event instead (the cycle stays open until a later connection settles it)."""

    DEVICE_REPORTED = "device_reported"  # the device's own FREEZE_DONE for this freeze
    RECONCILED = "reconciled"  # read back from the device's last-freeze record, or proven never started (0 ms)
    HOST_MEASURED = "host_measured"  # manual mode: the host's timer is all there is
    UNKNOWN = "unknown"  # the device was read and cannot say: no figure
    UNRESOLVED = "unresolved"  # the device could not be read: the cycle stays open until it can
