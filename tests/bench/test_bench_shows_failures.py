"""The bench's host figures can show a failure: each measurement, run against a host or a device
made deliberately slow, reports the injected delay (large effects, so nothing here is timing-flaky).
A figure that cannot move when the host is late would only ever say "fine"."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.load import busy_load
from bench.loop import heartbeat_gaps
from bench.remote_device import RemoteDevice
from bench.run import device_timed_freeze, host_timed_freeze, valve_open_ms
from bench.tui import measure_tui
from controller.clinic import Clinic
from firmware_bridge.link import Link
from sim.device import SimulatedDevice

INJECTED_S = 0.3
SHOWN_MS = 250  # of the 300 ms injected, at least this much must show
WATCHDOG_MS = 2000  # longer than any injected silence: the device's watchdog must not end the freeze first


@pytest.fixture
def device_and_link() -> Iterator[tuple[SimulatedDevice, Link]]:
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=WATCHDOG_MS) as link:
        yield device, link


@pytest.mark.pty
def test_the_host_timed_baseline_shows_a_host_that_stops_late(device_and_link: tuple[SimulatedDevice, Link]) -> None:
    device, link = device_and_link
    on_time = host_timed_freeze(device, link, 100)
    late = host_timed_freeze(device, link, 100, late_s=INJECTED_S)
    assert abs(on_time - 100) < SHOWN_MS / 2
    assert late - 100 >= SHOWN_MS


@pytest.mark.pty
def test_the_true_freeze_error_shows_a_valve_that_closes_late_when_the_device_figure_cannot(
        device_and_link: tuple[SimulatedDevice, Link]) -> None:
    device, link = device_and_link
    device.model.close_latency_s = INJECTED_S  # a sluggish valve: the device's timer still says 100 ms
    reported = device_timed_freeze(link, 100).valve_open_ms
    assert abs(reported - 100) < SHOWN_MS / 2
    assert valve_open_ms(device) - 100 >= SHOWN_MS


@pytest.mark.pty
@pytest.mark.slow
def test_the_heartbeat_gap_shows_a_loop_that_falls_silent() -> None:
    lease_s = 0.25  # the link thread beats on for one watchdog period after the loop's last renewal

    def silent_host(clinic: Clinic) -> None:
        with clinic.measuring():  # the supervisor stands aside: it renews no lease meanwhile
            time.sleep(lease_s + INJECTED_S)

    figures = heartbeat_gaps(1, between=silent_host)
    assert figures.lesions_completed == 1
    assert max(figures.gaps_ms) >= SHOWN_MS
    assert figures.watchdog_trips >= 1  # 300 ms of silence is past the 250 ms watchdog: the device saw it too
    # (the gap still shows in full: the host's link thread acknowledged the trip's event meanwhile, which is no heartbeat)


@pytest.mark.pty
@pytest.mark.slow
def test_the_stop_key_figure_shows_a_device_that_reads_its_port_late() -> None:
    def stalled(device: RemoteDevice) -> None:
        device.stall(INJECTED_S)
        time.sleep(0.05)  # the device thread may be waiting on the port already: past its next turn, the stall holds

    figures = measure_tui(1, before_key=stalled)
    # The STOP frame waits out the stall, unless the device's own 250 ms watchdog closes the valve first.
    assert figures.key_to_valve_closed_ms[0] >= 100


def test_the_load_processes_spin_during_the_block_and_are_gone_after() -> None:
    with busy_load(2) as workers:
        assert len(workers) == 2 and all(w.poll() is None for w in workers)
    assert all(w.poll() is not None for w in workers)
