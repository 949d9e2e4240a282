"""Nothing slow on the control loop starves the device's watchdog: a store that takes far longer
than the watchdog to read (the ledger scans every event at ARM) is read while the loop renews its
heartbeat lease, and one durable write slower than the watchdog is covered by the lease; yet a loop
that hangs stops the heartbeats, so the device's watchdog still closes the valve."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_mock import MockerFixture

from controller.records.ledger import CartridgeLedger, CartridgeStatus
from controller.records.store import StoredEvent
from firmware_bridge.messages import Fault
from tests.support.rig import Rig
from tests.support.waiting import ticked, wait_until


def test_arming_on_a_store_that_reads_for_a_second_does_not_trip_the_watchdog(make_rig: Callable[..., Rig],
                                                                              mocker: MockerFixture) -> None:
    rig = make_rig()
    real_status = CartridgeLedger.status

    def slow_status(ledger: CartridgeLedger, *args: Any, **kwargs: Any) -> CartridgeStatus | None:
        time.sleep(1.0)  # the slow seam itself (a store aged to a million events), not a wait in the test
        return real_status(ledger, *args, **kwargs)

    mocker.patch.object(CartridgeLedger, "status", slow_status)
    _, procedure = rig.procedure("common-wart", auto=False)
    procedure.arm()  # the gate reads the cartridge twice: about 2 s, eight watchdog periods
    counters = rig.link.counters()
    assert counters.watchdog_trips == 0 and not counters.fault_flags & Fault.WATCHDOG_TRIP
    assert procedure.plan is not None


def test_one_durable_write_slower_than_the_watchdog_does_not_trip_it(make_rig: Callable[..., Rig], mocker: MockerFixture) -> None:
    rig = make_rig(watchdog_ms=250)
    append = rig.store.append

    def slow_freeze_result(kind: str, payload: dict[str, Any], session_id: str | None = None) -> StoredEvent:
        if kind == "freeze_result":
            time.sleep(0.35)  # the slow seam (an fsync on a loaded laptop): past the 250 ms watchdog, within lease + watchdog
        return append(kind, payload, session_id)

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
