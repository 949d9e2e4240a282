"""Nothing slow on the control loop starves the device's watchdog: a store that takes far longer
than the watchdog to read (the ledger scans every event at ARM) is read while the loop heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_mock import MockerFixture

from controller.records.ledger import CartridgeLedger, CartridgeStatus
from firmware_bridge.messages import Fault
from tests.support.rig import Rig


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
