"""The simulator's lying devices on the real pty: each lie shows on the wire as it says, the frames
stay valid, and the plausibility checks (controller/procedure/plausibility.py) refuse the figures.
The valve log is the ground truth the lies contradict."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from controller.procedure.plausibility import (
    Channel,
    FreezeAsked,
    FreezeReported,
    Reading,
    check_freeze_duration,
    check_target_reached,
    check_temperature,
)
from firmware_bridge.errors import CommandRejected
from firmware_bridge.link import Link
from firmware_bridge.messages import Cryogen, DeviceState, EndReason, EventCode, FreezeMode, Result, Telemetry
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.units import available_u32, celsius
from sim.device import FAULT_ACTIONS, SimulatedDevice
from sim.firmware import LIE_FREEZE_MS, LIE_TISSUE_CDEG, LIES
from sim.model import CRYOGEN_TIP_C, TISSUE_FRACTION_OF_TIP
from tests.support.rig import TEST_WATCHDOG_MS

VALVE_COMMANDED = 0x01


@contextmanager
def connected(**options: Any) -> Iterator[tuple[SimulatedDevice, Link]]:
    with SimulatedDevice(serial="SIM-LIAR-1", **options) as device:
        device.serve_pty()
        with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as link:
            link.wait_for_telemetry()
            yield device, link


def pump(link: Link, done: Callable[[list[DeviceEventReceived]], bool], timeout_s: float = 5.0,
         what: str = "condition") -> list[DeviceEventReceived]:
    """Heartbeat and read every device event (nothing left to pile up) until ``done(events)``."""
    events: list[DeviceEventReceived] = []
    deadline = time.monotonic() + timeout_s
    while not done(events):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({len(events)} events)")
        link.heartbeat()
        item = link.next_event(0.005)
        while item is not None:
            if isinstance(item, DeviceEventReceived):
                events.append(item)
            item = link.next_event(0)
    return events


def telemetry_when(link: Link, predicate: Callable[[Telemetry], bool], what: str) -> Telemetry:
    found: list[Telemetry] = []

    def check(_: list[DeviceEventReceived]) -> bool:
        latest = link.latest_telemetry()
        if latest is not None and predicate(latest.telemetry):
            found.append(latest.telemetry)
        return bool(found)

    pump(link, check, what=what)
    return found[0]


def freeze_done(txn: int) -> Callable[[list[DeviceEventReceived]], bool]:
    return lambda events: any(e.event.code is EventCode.FREEZE_DONE and e.event.freeze_txn == txn for e in events)


def the_done(events: list[DeviceEventReceived], txn: int) -> DeviceEventReceived:
    return next(e for e in events if e.event.code is EventCode.FREEZE_DONE and e.event.freeze_txn == txn)


def true_valve_ms(device: SimulatedDevice) -> float:
    edge = device.model.valve_log[-1]
    assert edge.closed_at is not None
    return (edge.closed_at - edge.opened_at) * 1000


def assert_wire_clean(link: Link) -> None:
    decoder = link.stats().decoder
    assert (decoder.crc_errors, decoder.framing_errors, decoder.short_frames, decoder.overflows) == (0, 0, 0, 0)
    assert link.stats().session.undecodable == 0


def test_every_lie_is_a_fault_action_and_an_unknown_one_is_refused() -> None:
    assert {f"lie-{name}" for name in LIES} | {"stop-lying"} <= FAULT_ACTIONS.keys()
    with pytest.raises(ValueError, match="lie bogus: allowed values are event-flood, freeze-ms-huge"):
        SimulatedDevice(lies=["bogus"])


def test_tissue_cold_reads_minus_327_67_from_the_moment_a_freeze_starts() -> None:
    with connected(kind="probe") as (device, link):
        device.inject("lie-tissue-cold")
        before = telemetry_when(link, lambda t: t.state is DeviceState.READY, "telemetry before the freeze")
        tissue_before = celsius(before.tissue_cdeg)
        assert tissue_before is not None and tissue_before > 30  # not before the freeze starts
        link.freeze(2000)
        first = telemetry_when(link, lambda t: bool(t.valve & VALVE_COMMANDED), "the first telemetry with the valve open")
        assert first.tissue_cdeg == LIE_TISSUE_CDEG and celsius(first.tissue_cdeg) == -327.67
        tip = celsius(first.tip_cdeg)
        assert tip is not None and tip > -100  # the tip tells the truth: it has only begun to cool
        later = telemetry_when(link, lambda t: t.elapsed_ms >= 300, "telemetry 300 ms into the freeze")
        assert later.tissue_cdeg == LIE_TISSUE_CDEG
        # The host's check refuses it: below absolute zero, and a target "reached" ms into the freeze.
        verdict = check_temperature(Channel.TISSUE, -327.67, first.uptime_ms / 1000, Reading(tissue_before, before.uptime_ms / 1000),
                                    Cryogen.LN2)
        assert not verdict.plausible and "below absolute zero" in verdict.reason
        assert not check_target_reached(-327.67, first.uptime_ms / 1000, Reading(tissue_before, before.uptime_ms / 1000), -50,
                                        Cryogen.LN2).plausible
        link.stop()
        device.inject("stop-lying")
        truthful = telemetry_when(link, lambda t: t.tissue_cdeg != LIE_TISSUE_CDEG, "a true tissue reading")
        assert (celsius(truthful.tissue_cdeg) or 0) > -100
        assert_wire_clean(link)


def test_temperature_jump_reads_frozen_values_at_once() -> None:
    with connected(kind="probe") as (device, link):
        device.lie("temperature-jump")
        before = telemetry_when(link, lambda t: t.state is DeviceState.READY, "telemetry before the freeze")
        tissue_before = celsius(before.tissue_cdeg)
        assert tissue_before is not None and tissue_before > 30
        link.freeze(2000)
        first = telemetry_when(link, lambda t: bool(t.valve & VALVE_COMMANDED), "the first telemetry with the valve open")
        assert first.elapsed_ms < 100
        assert first.tip_cdeg == round(CRYOGEN_TIP_C["ln2"] * 100)  # -196 C at once
        assert first.tissue_cdeg == round(TISSUE_FRACTION_OF_TIP * CRYOGEN_TIP_C["ln2"] * 100)  # -78.4 C, past a -50 C target
        tissue = celsius(first.tissue_cdeg)
        assert tissue is not None and -196 < tissue < -50  # within physical bounds: only the rate gives it away
        start = Reading(tissue_before, before.uptime_ms / 1000)
        at_s = first.uptime_ms / 1000
        assert not check_temperature(Channel.TISSUE, tissue, at_s, start, Cryogen.LN2).plausible
        tip_start = Reading(celsius(before.tip_cdeg) or 37.0, start.at_s)
        assert not check_temperature(Channel.TIP, -196.0, at_s, tip_start, Cryogen.LN2).plausible
        verdict = check_target_reached(tissue, at_s, start, -50, Cryogen.LN2)
        assert not verdict.plausible and "a tissue cools at most" in verdict.reason
        assert device.model.tissue_c > 30  # the truth: the tissue has barely begun to cool
        link.stop()
        after = telemetry_when(link, lambda t: not t.valve & VALVE_COMMANDED, "telemetry with the valve closed")
        assert (celsius(after.tissue_cdeg) or 0) > 30  # the valve closed: true readings again
        assert_wire_clean(link)


def test_freeze_ms_huge_reports_4294967294_ms() -> None:
    with connected() as (device, link):
        device.inject("lie-freeze-ms-huge")
        sent = link.clock.monotonic()
        txn = link.freeze(300)
        events = pump(link, freeze_done(txn), what="FREEZE_DONE")
        done = the_done(events, txn)
        host_elapsed_ms = (done.received_at - sent) * 1000
        assert done.event.valve_open_ms == LIE_FREEZE_MS == 4_294_967_294
        assert done.event.end_reason is EndReason.COMPLETED
        pump(link, lambda _: not device.valve_open and device.model.valve_log[-1].closed_at is not None, what="the valve closed")
        assert 250 < true_valve_ms(device) < 1000  # the valve really moved for about the 300 ms asked
        counters = link.counters()
        assert (counters.last_valve_open_ms, counters.last_end_reason, counters.last_txn) == (LIE_FREEZE_MS, EndReason.COMPLETED, txn)
        assert link.identity is not None
        verdict = check_freeze_duration(FreezeAsked(FreezeMode.TIMED, 300), FreezeReported(done.event.valve_open_ms, done.event.end_reason,
                                        available_u32(done.event.halo_to_off_ms)), link.identity.max_freeze_ms, host_elapsed_ms)
        assert not verdict.plausible and verdict.ledger_ms <= 310
        assert_wire_clean(link)


def test_freeze_ms_zero_reports_0_ms_completed_however_it_ended() -> None:
    with connected() as (device, link):
        device.lie("freeze-ms-zero")
        txn = link.freeze(300)
        done = the_done(pump(link, freeze_done(txn), what="FREEZE_DONE"), txn)
        assert (done.event.valve_open_ms, done.event.end_reason) == (0, EndReason.COMPLETED)
        assert not check_freeze_duration(FreezeAsked(FreezeMode.TIMED, 300), FreezeReported(0, EndReason.COMPLETED), 60_000, None).plausible
        pump(link, lambda _: device.model.valve_log[-1].closed_at is not None, what="the valve closed")
        assert true_valve_ms(device) > 250
        # A freeze the host STOPs is reported COMPLETED at 0 ms too, in STOP's answer as in FREEZE_DONE.
        txn = link.freeze(5000)
        telemetry_when(link, lambda t: t.elapsed_ms >= 200, "a freeze under way")
        ack = link.stop()
        assert ack.result is Result.OK and ack.detail32 == 0
        done = the_done(pump(link, freeze_done(txn), what="FREEZE_DONE"), txn)
        assert (done.event.valve_open_ms, done.event.end_reason) == (0, EndReason.COMPLETED)
        pump(link, lambda _: device.model.valve_log[-1].closed_at is not None, what="the valve closed")
        assert 150 < true_valve_ms(device) < 5000
        assert_wire_clean(link)


def test_event_flood_raises_new_event_ids_by_the_thousand_until_cleared() -> None:
    with connected() as (device, link):
        txn = link.freeze(200)
        done = the_done(pump(link, freeze_done(txn), what="FREEZE_DONE"), txn)
        device.inject("lie-event-flood")
        started = time.monotonic()
        flood = pump(link, lambda events: len({e.event.event_id for e in events}) >= 2000, timeout_s=20, what="2000 flood events")
        elapsed_s = time.monotonic() - started
        ids = [e.event.event_id for e in flood]
        assert len(set(ids)) >= 2000 and min(ids) > done.event.event_id  # every one a new id
        # Each repeats the last event raised (this FREEZE_DONE), with its figures; the ids are the only news.
        assert {(e.event.code, e.event.freeze_txn, e.event.valve_open_ms) for e in flood} == {
            (EventCode.FREEZE_DONE, txn, done.event.valve_open_ms)}
        assert len(set(ids)) / elapsed_s > 500, f"{len(set(ids)) / elapsed_s:.0f} events/s"
        device.inject("stop-lying")
        with device._lock:  # the device thread's state, read between two of its steps
            next_id = device.firmware.next_event_id
        mark = telemetry_when(link, lambda t: True, "telemetry").uptime_ms
        telemetry_when(link, lambda t: t.uptime_ms >= mark + 300, "300 ms of device time")
        with device._lock:
            assert device.firmware.next_event_id == next_id  # the flood stopped


def test_event_flood_with_nothing_raised_yet_repeats_a_fault_cleared_of_nothing() -> None:
    with connected(lies=["event-flood"]) as (_, link):
        flood = pump(link, lambda events: len(events) >= 50, what="50 flood events")
        assert {(e.event.code, e.event.fault_flags) for e in flood} == {(EventCode.FAULT_CLEARED, 0)}
        assert len({e.event.event_id for e in flood}) == len(flood)


def test_a_device_cap_below_a_profiles_minimum_is_declared_and_enforced() -> None:
    """Item 5's device (cap 8 s, common wart minimum 10 s) already exists: SimulatedDevice(max_freeze_ms=...)."""
    with connected(max_freeze_ms=8000) as (_, link):
        assert link.identity is not None and link.identity.max_freeze_ms == 8000
        with pytest.raises(CommandRejected) as refused:
            link.freeze(10_000)
        assert refused.value.result == Result.OVER_CAP and "the device's cap is 8000 ms" in refused.value.problem
        txn = link.freeze(8000)
        telemetry_when(link, lambda t: bool(t.valve & VALVE_COMMANDED), "the valve open")
        link.stop()
        pump(link, freeze_done(txn), what="FREEZE_DONE")
