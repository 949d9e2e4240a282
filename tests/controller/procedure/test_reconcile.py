"""The one reconcile rule, with plain facts: every ranking of evidence, and what it must never say."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.procedure.reconcile import Finding, FreezeFacts, reconcile
from controller.records.certainty import Certainty
from firmware_bridge.messages import NOT_AVAILABLE_U32, Counters, EndReason

FACTS = FreezeFacts(serial="SIM-1", boot_count=4, txn=777, accepted=True, started_seen=True,
                    freezes_started_before=10, last_txn_before=700)

# The device's COUNTERS once FACTS' freeze (txn 777, boot 4) ran its 10 s to the end; each test changes what it is about.
RAN = Counters(boot_count=4, uptime_ms=50_000, total_valve_open_ms=99_000, freezes_started=11, watchdog_trips=0, last_txn=777,
               last_requested_ms=10_000, last_valve_open_ms=10_000, last_halo_to_off_ms=NOT_AVAILABLE_U32,
               last_end_reason=EndReason.COMPLETED, last_boot_count=4, fault_flags=0)


def test_the_devices_last_freeze_record_gives_the_figures() -> None:
    outcome = reconcile(FACTS, "SIM-1", replace(RAN, last_end_reason=EndReason.WATCHDOG, last_valve_open_ms=4321))
    assert (outcome.finding, outcome.valve_open_ms, outcome.end_reason) == (Finding.RECONCILED, 4321, "WATCHDOG")
    assert outcome.certainty is Certainty.RECONCILED


def test_the_records_certainty_words_stay_as_they_were_written() -> None:
    assert [str(c) for c in Certainty] == ["device_reported", "reconciled", "host_measured", "unknown", "unresolved"]


def test_a_record_kept_across_a_reset_is_still_this_freezes() -> None:
    outcome = reconcile(FACTS, "SIM-1", replace(RAN, boot_count=5, last_end_reason=EndReason.RESET, last_valve_open_ms=1200))
    assert outcome.finding is Finding.RECONCILED and outcome.end_reason == "RESET" and "boot 4 -> 5" in outcome.why


def test_a_freeze_still_running_unsupervised_is_to_be_stopped() -> None:
    assert reconcile(FACTS, "SIM-1", replace(RAN, last_end_reason=EndReason.NONE)).finding is Finding.STILL_RUNNING


@pytest.mark.parametrize(("accepted", "started_seen"), [(True, False), (False, True), (True, True)])
def test_an_acknowledged_freeze_is_never_not_started(accepted: bool, started_seen: bool) -> None:
    facts = FreezeFacts("SIM-1", 4, 777, accepted, started_seen, 10, 700)
    untouched = replace(RAN, freezes_started=10, last_txn=700)  # as if nothing ran: the device said otherwise, so: unknown
    outcome = reconcile(facts, "SIM-1", untouched)
    assert outcome.finding is Finding.UNKNOWN and outcome.valve_open_ms is None and "acknowledged" in outcome.why


def test_not_started_only_when_never_acknowledged_and_the_counters_are_untouched() -> None:
    facts = FreezeFacts("SIM-1", 4, 777, False, False, 10, 700)
    outcome = reconcile(facts, "SIM-1", replace(RAN, freezes_started=10, last_txn=700))
    assert (outcome.finding, outcome.valve_open_ms, outcome.end_reason) == (Finding.NOT_STARTED, 0, "NOT_STARTED")
    assert reconcile(facts, "SIM-1", replace(RAN, freezes_started=11, last_txn=701)).finding is Finding.UNKNOWN  # something ran


@pytest.mark.parametrize("accepted", [True, False])
def test_another_boot_without_a_matching_record_is_unknown_never_0_ms(accepted: bool) -> None:
    facts = FreezeFacts("SIM-1", 4, 777, accepted, False, 10, 700)
    outcome = reconcile(facts, "SIM-1", replace(RAN, boot_count=6, freezes_started=0, last_txn=12, last_boot_count=6))
    assert outcome.finding is Finding.UNKNOWN and outcome.valve_open_ms is None
    assert "boot 4" in outcome.why and "boot 6" in outcome.why and outcome.settled


def test_another_device_or_no_answer_leaves_the_cycle_open() -> None:
    other = reconcile(FACTS, "SIM-2", RAN)
    assert other.finding is Finding.UNRESOLVED and not other.settled and "SIM-2" in other.why
    silent = reconcile(FACTS, None, None, "no answer to HELLO")
    assert silent.finding is Finding.UNRESOLVED and "no answer to HELLO" in silent.why


def test_a_freeze_that_never_got_a_txn_cannot_match_a_record() -> None:
    facts = FreezeFacts("SIM-1", 4, None, False, False, 10, 700)
    assert reconcile(facts, "SIM-1", replace(RAN, freezes_started=10, last_txn=700)).finding is Finding.NOT_STARTED
    assert reconcile(facts, "SIM-1", RAN).finding is Finding.UNKNOWN
