"""SIGKILL the host process mid-freeze: the device closes the valve by itself, and the next host
reads back the true valve-open time from the device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from firmware_bridge.link import Link
from firmware_bridge.messages import EndReason, Fault
from sim.device import SimulatedDevice
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pty

WATCHDOG_MS = 250
# The device thread checks its watchdog on its own deadline; allow for the valve's close latency
# (10 ms in the model) and scheduling on a loaded 2-core machine.
CLOSE_SLACK_MS = 100

HOST = textwrap.dedent(
    """
    import sys
    from firmware_bridge.link import Link
    link = Link.open(sys.argv[1], watchdog_ms=250)
    link.freeze(20_000)
    print("FREEZING", flush=True)
    while True:  # the controller loop: heartbeats until killed
        link.heartbeat(3)
        link.next_event(link.heartbeat_period_s)
    """
)


def test_sigkill_mid_freeze_closes_the_valve_and_the_next_host_reads_the_truth() -> None:
    with SimulatedDevice(serial="SIM-KILL") as device:
        path = device.serve_pty()
        host = subprocess.Popen([sys.executable, "-c", HOST, path], stdout=subprocess.PIPE, text=True)
        try:
            assert host.stdout is not None and host.stdout.readline().strip() == "FREEZING"
            wait_until(lambda: device.valve_open, what="the valve opening")
            wait_until(lambda: device.now() - device.model.valve_log[-1].opened_at > 0.3, what="300 ms of freezing")
            assert device.valve_open  # heartbeats kept it going past the watchdog period
            os.kill(host.pid, signal.SIGKILL)
            host.wait(timeout=10)
        finally:
            if host.poll() is None:
                host.kill()
        wait_until(lambda: device.model.valve_log[-1].closed_at is not None, timeout_s=5, what="the valve closing")
        edge = device.model.valve_log[-1]
        assert edge.closed_at is not None and device.last_host_byte_at is not None
        silence_to_close_ms = (edge.closed_at - device.last_host_byte_at) * 1000
        assert silence_to_close_ms <= WATCHDOG_MS + CLOSE_SLACK_MS
        true_open_ms = (edge.closed_at - edge.opened_at) * 1000

        with Link.open(path, watchdog_ms=2000) as again:
            assert again.identity is not None and again.identity.fault_flags & Fault.WATCHDOG_TRIP
            counters = again.counters()
        assert counters.last_end_reason is EndReason.WATCHDOG
        assert counters.last_requested_ms == 20_000
        # Device-measured (command to command) vs ground truth (valve movement): they differ only
        # by the open/close latencies, 15 and 10 ms in the model.
        assert abs(counters.last_valve_open_ms - true_open_ms) <= 20
        assert counters.total_valve_open_ms == counters.last_valve_open_ms
