"""Nothing slow on the control loop starves the device's watchdog: the loop reads nothing from the
store but indexed rows (tests/controller/records/test_projections.py), and one durable write slower
than the watchdog is covered by the heartbeat lease; yet a loop that hangs stops the heartbeats, so
the device's watchdog still closes the valve."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_mock import MockerFixture

from controller.records.store import StoredEvent
from firmware_bridge.messages import Fault
from tests.support.rig import Rig
from tests.support.waiting import ticked, wait_until


def test_one_durable_write_slower_than_the_watchdog_does_not_trip_it(make_rig: Callable[..., Rig], mocker: MockerFixture) -> None:
    rig = make_rig(watchdog_ms=250)
    append = rig.store.append

    def slow_freeze_result(kind: str, payload: dict[str, Any], session_id: str | None = None, *,
                           patient_key: str | None = None) -> StoredEvent:
        if kind == "freeze_result":
            time.sleep(0.35)  # the slow seam (an fsync on a loaded laptop): past the 250 ms watchdog, within lease + watchdog
        return append(kind, payload, session_id, patient_key=patient_key)

    mocker.patch.object(rig.store, "append", side_effect=slow_freeze_result)
    _, procedure = rig.procedure("molluscum-contagiosum")
    procedure.arm()
    procedure.run()
    counters = rig.link.counters()
    assert counters.watchdog_trips == 0 and not counters.fault_flags & Fault.WATCHDOG_TRIP
    assert procedure.cycles and all(c.end_reason == "COMPLETED" for c in procedure.cycles)


def test_a_hung_loop_lets_the_device_watchdog_close_the_valve(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(watchdog_ms=250)
    _, procedure = rig.procedure("plantar-wart")
    procedure.arm()
    wait_until(lambda: ticked(procedure) and rig.device.valve_open, what="the valve to open")
    procedure.tick()
    last_renewal = rig.clock.monotonic()  # the loop hangs from here: no more turns
    wait_until(lambda: not rig.device.valve_open, timeout_s=10.0, what="the device's watchdog to close the valve")
    closed_at = rig.device.model.valve_log[-1].closed_at
    assert closed_at is not None and closed_at - last_renewal < 1.0  # lease (250 ms) + watchdog (250 ms), far before the freeze's end
    assert rig.link.counters().watchdog_trips == 1
