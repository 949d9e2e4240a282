"""The real path: pyserial opens the simulator's pseudo-terminal exactly as it would a USB port."""

from __future__ import annotations

import os
import pty
import threading
import tty
from collections.abc import Callable

import pytest

from bench.run import device_timed_freeze
from controller.procedure.reconcile import Finding, FreezeFacts, read_and_reconcile
from firmware_bridge.errors import (
    CommandRejected,
    DeviceFault,
    DeviceRebooted,
    LinkLost,
    NotAGivreDevice,
    PortBusy,
    PortNotFound,
    VersionMismatch,
    WrongDeviceKind,
)
from firmware_bridge.link import Link, LinkDown, LinkEvent
from firmware_bridge.messages import (
    CalWrite,
    DeviceKind,
    DeviceState,
    EndReason,
    Event,
    EventCode,
    Fault,
    FreezeMode,
    Result,
    TriggerMode,
)
from firmware_bridge.session import RebootDetected
from sim.device import SimulatedDevice
from tests.support.rig import TEST_WATCHDOG_MS
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pty


def wait_for_event(link: Link, kind: type[LinkEvent], what: str) -> None:
    """Read the link's event queue until an event of that kind comes out of it."""
    wait_until(lambda: isinstance(link.next_event(0.05), kind), what=what)


def test_handshake_reports_the_device_identity(device: SimulatedDevice, link: Link) -> None:
    ident = link.identity
    assert ident is not None
    assert (ident.kind, ident.serial, ident.firmware, ident.protocol) == (DeviceKind.SPRAY, "SIM-TEST-1", "1.0.0", "1.1")
    assert ident.max_freeze_ms == 60_000 and ident.watchdog_ms == TEST_WATCHDOG_MS
    assert ident.port == device.url


def test_a_field_out_of_range_is_the_callers_error_and_the_link_lives_on(link: Link) -> None:
    with pytest.raises(ValueError, match="out of range"):
        link.handshake(watchdog_ms=100_000)  # the wire field is 16 bits
    assert link.counters().boot_count >= 1  # the link thread still answers


def test_a_device_timed_freeze_reports_the_device_measurement(device: SimulatedDevice, link: Link) -> None:
    outcome = device_timed_freeze(link, 300)
    assert outcome.end_reason is EndReason.COMPLETED and abs(outcome.valve_open_ms - 300) <= 5
    wait_until(lambda: device.model.valve_log and device.model.valve_log[-1].closed_at is not None, what="valve closed")
    edge = device.model.valve_log[-1]
    assert edge.closed_at is not None
    assert abs((edge.closed_at - edge.opened_at) * 1000 - 300) <= 20  # ground truth, valve latencies included


def test_stop_mid_freeze_closes_the_valve_and_answers_after(device: SimulatedDevice, link: Link) -> None:
    link.freeze(30_000)
    wait_until(lambda: device.valve_open, what="valve open")
    ack = link.stop()
    assert ack.result is Result.OK and ack.detail32 > 0
    assert not device.model.valve_commanded  # closed before the answer was sent
    wait_until(lambda: not device.valve_open, what="valve physically closed")


def test_the_device_refuses_above_its_cap_with_a_clear_message(link: Link) -> None:
    with pytest.raises(CommandRejected) as info:
        link.freeze(90_000)
    assert info.value.result == Result.OVER_CAP
    assert "90000 ms asked, the device's cap is 60000 ms" in str(info.value)


def test_halo_freeze_over_the_wire(device: SimulatedDevice, link: Link) -> None:
    def mark_halo(lnk: Link) -> None:
        latest = lnk.latest_telemetry()
        if latest and latest.telemetry.elapsed_ms >= 200 and not marked:
            marked.append(lnk.end_in(300))

    marked: list[object] = []
    outcome = device_timed_freeze(link, 10_000, mode=FreezeMode.HALO, on_beat=mark_halo)
    assert outcome.end_reason is EndReason.COMPLETED
    assert abs(outcome.halo_to_off_ms - 300) <= 5 and outcome.valve_open_ms > outcome.halo_to_off_ms


@pytest.mark.slow
def test_200_freezes_through_corrupt_and_lossy_wire_each_run_exactly_once() -> None:
    with SimulatedDevice(seed=7) as dev:
        dev.serve_pty()
        dev.faults.corrupt_pct = 1.0
        dev.faults.drop_pct = 1.0
        with Link.open(dev.url, watchdog_ms=TEST_WATCHDOG_MS) as lnk:
            outcomes = [device_timed_freeze(lnk, 20) for _ in range(200)]
            counters = lnk.counters()
            stats = lnk.stats()
    assert all(o.end_reason is EndReason.COMPLETED for o in outcomes)
    assert len({o.freeze_txn for o in outcomes}) == 200
    assert counters.freezes_started == 200  # the device opened the valve exactly 200 times
    assert len(dev.model.valve_log) == 200
    assert dev.faults.corrupted > 0 and dev.faults.dropped > 0  # the faults really happened
    assert stats.decoder.crc_errors + stats.decoder.framing_errors + stats.decoder.short_frames > 0
    assert stats.session.retransmits > 0


def test_a_device_reboot_mid_freeze_is_detected_and_the_truth_read_back(device: SimulatedDevice, link: Link) -> None:
    before = link.counters()
    device.at(0.3, device.reboot)
    txn = link.freeze(5000)
    wait_until(lambda: link.needs_handshake, what="the reboot seen in telemetry")
    facts = FreezeFacts("SIM-TEST-1", before.boot_count, txn, True, False, before.freezes_started, before.last_txn)
    outcome = read_and_reconcile(link, facts)
    assert outcome.finding is Finding.RECONCILED and outcome.end_reason == "RESET"
    assert outcome.valve_open_ms is not None and 250 <= outcome.valve_open_ms <= 350
    assert not device.model.valve_commanded
    assert len(device.model.valve_log) == 1  # the freeze was not resent after the reboot
    assert link.identity is not None and link.identity.boot_count == 2  # reconciling handshook again


def test_nothing_is_sent_across_a_reboot_until_a_new_handshake(device: SimulatedDevice, link: Link) -> None:
    device.reboot()
    wait_until(lambda: link.needs_handshake, what="reboot seen in telemetry")
    with pytest.raises(DeviceRebooted, match="not allowed while the session is rebooted"):
        link.freeze(1000)
    link.handshake()
    assert link.freeze(100) > 0


def test_losing_the_port_mid_freeze_is_reported_and_the_device_still_closes_the_valve() -> None:
    with SimulatedDevice() as dev:
        dev.serve_pty()
        lnk = Link.open(dev.url, watchdog_ms=300)
        before = lnk.counters()
        dev.at(0.2, dev.disconnect)
        txn = lnk.freeze(5000)
        wait_until(lambda: lnk.lost, what="the port failing")
        facts = FreezeFacts(dev.firmware.identity.serial, before.boot_count, txn, True, False, before.freezes_started, before.last_txn)
        outcome = read_and_reconcile(lnk, facts)
        assert outcome.finding is Finding.UNRESOLVED and outcome.valve_open_ms is None  # kept open, never guessed
        wait_until(lambda: not dev.valve_open, timeout_s=3, what="watchdog closing the valve")
        assert dev.firmware.faults & Fault.WATCHDOG_TRIP
        lnk.close()


def test_a_new_connection_after_a_host_vanished_sees_the_trip_and_clears_it(device: SimulatedDevice) -> None:
    first = Link.open(device.url, watchdog_ms=250)
    first.freeze(10_000)
    first.close(end_session=False)  # vanishes: no BYE
    wait_until(lambda: not device.valve_open and device.model.valve_log, what="watchdog closing the valve")
    with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as second:
        assert second.identity is not None and second.identity.fault_flags & Fault.WATCHDOG_TRIP
        counters = second.counters()
        assert counters.last_end_reason is EndReason.WATCHDOG and counters.watchdog_trips == 1
        with pytest.raises(DeviceFault, match="latched fault WATCHDOG_TRIP") as info:
            second.freeze(100)
        assert info.value.fault_flags & Fault.WATCHDOG_TRIP and "read the counters" in str(info.value)
        assert second.clear_fault().result is Result.OK
        assert device_timed_freeze(second, 100).end_reason is EndReason.COMPLETED


def test_a_clean_exit_ends_the_session_and_latches_nothing(device: SimulatedDevice) -> None:
    for _ in range(3):  # a second time in a row, and a third
        with Link.open(device.url, watchdog_ms=250) as link:
            assert link.identity is not None and not link.identity.fault_flags
            link.counters()
        assert device.firmware.state is DeviceState.NO_SESSION  # BYE answered: no session, so no watchdog
    with Link.open(device.url, watchdog_ms=250) as link:
        counters = link.counters()
        assert counters.watchdog_trips == 0 and not counters.fault_flags


def test_bye_during_a_freeze_closes_the_valve_before_answering(device: SimulatedDevice) -> None:
    link = Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS)
    link.freeze(10_000)
    wait_until(lambda: device.valve_open, what="the valve opening")
    link.close()
    assert not device.model.valve_commanded
    with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as again:
        counters = again.counters()
        assert counters.last_end_reason is EndReason.STOPPED and counters.watchdog_trips == 0


def test_calibration_is_stored_in_the_device(link: Link) -> None:
    cal = CalWrite(-300, 65_700, -400, 1_010_000, 0, 1_000_000, 15, 10, 20_000, 20_365)
    assert link.write_calibration(cal).result is Result.OK
    stored = link.read_calibration()
    assert (stored.timer_ppm, stored.tip_offset_cdeg, stored.due_on_day) == (-300, -400, 20_365)


def test_reboot_event_reaches_the_host_queue(device: SimulatedDevice, link: Link) -> None:
    device.reboot()
    wait_for_event(link, RebootDetected, "reboot")


# ---- bad ports, bad devices: each a clear error naming the port -------------------------------


def test_absent_port() -> None:
    with pytest.raises(PortNotFound) as info:
        Link.open("/dev/ttyGIVRE-NOPE")
    assert "/dev/ttyGIVRE-NOPE: no such port" in str(info.value)


def test_busy_port(device: SimulatedDevice, link: Link) -> None:
    with pytest.raises(PortBusy, match="in use by another program"):
        Link.open(device.url)


def test_version_mismatch_is_refused_with_both_versions() -> None:
    with SimulatedDevice(proto_major=2) as dev:
        dev.serve_pty()
        with pytest.raises(VersionMismatch) as info:
            Link.open(dev.url)
    assert "speaks protocol 2.1; this Givre speaks 1.1" in str(info.value)


def test_different_message_layouts_are_refused() -> None:
    with SimulatedDevice(schema_hash=0xDEADBEEF) as dev:
        dev.serve_pty()
        with pytest.raises(VersionMismatch, match="different message layouts"):
            Link.open(dev.url)


def test_wrong_device_kind() -> None:
    with SimulatedDevice(kind="probe") as dev:
        dev.serve_pty()
        with pytest.raises(WrongDeviceKind, match=r"this is a probe device .* not a spray"):
            Link.open(dev.url, expect_kind=DeviceKind.SPRAY)


def test_silent_device() -> None:
    with SimulatedDevice() as dev:
        dev.serve_pty()
        dev.set_silent()
        with pytest.raises(NotAGivreDevice, match="no answer to HELLO"):
            Link.open(dev.url)


def test_a_modem_on_the_port_is_not_a_givre_device() -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def chatty_modem() -> None:
        while not stop.wait(0.02):
            try:
                os.write(master, b"\r\nOK\r\nAT+CSQ\r\n")
            except OSError:
                return

    thread = threading.Thread(target=chatty_modem, daemon=True)
    thread.start()
    try:
        with pytest.raises(NotAGivreDevice, match="not in the Givre protocol"):
            Link.open(os.ttyname(slave))
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


def test_loop_url_is_accepted_by_the_transport_but_nothing_answers() -> None:
    with pytest.raises(NotAGivreDevice):
        Link.open("loop://")


def test_socket_url_reaches_a_tcp_simulator() -> None:
    with SimulatedDevice(serial="SIM-TCP") as dev:
        url = dev.serve_tcp()
        assert url.startswith("socket://127.0.0.1:")
        with Link.open(url, watchdog_ms=TEST_WATCHDOG_MS) as lnk:
            assert lnk.identity is not None and lnk.identity.serial == "SIM-TCP"
            assert device_timed_freeze(lnk, 100).end_reason is EndReason.COMPLETED


def test_link_down_is_delivered_as_an_event(device: SimulatedDevice, link: Link) -> None:
    device.disconnect()
    wait_for_event(link, LinkDown, "link down")
    with pytest.raises(LinkLost):
        link.counters()


def test_dead_man_trigger_over_the_wire(device: SimulatedDevice, link: Link) -> None:
    def clinician(lnk: Link) -> None:
        latest = lnk.latest_telemetry()
        if latest is None:
            return
        t = latest.telemetry
        if t.state.name == "WAIT_TRIGGER" and not pressed:
            pressed.append(True)
            device.press_trigger()
        elif t.elapsed_ms >= 200 and t.trigger & 1:
            device.release_trigger()

    pressed: list[bool] = []
    outcome = device_timed_freeze(link, 10_000, trigger=TriggerMode.DEAD_MAN, on_beat=clinician)
    assert outcome.end_reason is EndReason.TRIGGER_RELEASED
    assert outcome.valve_open_ms is not None and 200 <= outcome.valve_open_ms < 1000


@pytest.mark.parametrize(
    ("inject", "fault", "end_reason"),
    [
        (SimulatedDevice.block_nozzle, Fault.NO_FLOW, EndReason.FAULT),
        (lambda d: d.stick_valve("closed"), Fault.VALVE_STUCK_CLOSED, EndReason.FAULT),
        (SimulatedDevice.empty_cartridge, None, EndReason.CARTRIDGE_EMPTY),
    ],
    ids=["blocked-nozzle", "valve-stuck-closed", "empty-cartridge"],
)
def test_device_faults_end_the_freeze_and_reach_the_host(
        device: SimulatedDevice, link: Link, inject: Callable[[SimulatedDevice], None], fault: Fault | None, end_reason: EndReason) -> None:
    device.at(0.1, lambda: inject(device))
    seen: list[Event] = []
    outcome = device_timed_freeze(link, 5000, seen=seen)
    assert outcome.end_reason is end_reason
    codes = {e.code for e in seen}
    if fault is not None:
        assert EventCode.FAULT_RAISED in codes
        assert any(e.fault_flags & fault for e in seen if e.code is EventCode.FAULT_RAISED)
    else:
        assert EventCode.CARTRIDGE_EMPTY in codes
    assert not device.model.valve_commanded


def test_each_link_draws_its_own_first_txn_and_a_non_zero_session_id(device: SimulatedDevice) -> None:
    """Two host processes must never reuse each other's txns or session ids (docs/protocol.md §5.1, §5.3)."""
    seen_txns, seen_sessions = set(), set()
    for _ in range(4):
        with Link.open(device.url, watchdog_ms=TEST_WATCHDOG_MS) as link:
            assert link.identity is not None and link.identity.device_session != 0
            seen_sessions.add(link.identity.device_session)
            seen_txns.add(link.freeze(50))
    assert len(seen_txns) >= 3 and len(seen_sessions) == 4  # drawn at random: two equal txns happen 1 time in 11 000
