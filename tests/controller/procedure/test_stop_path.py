"""STOP reaches the device whatever the loop is doing: pressed while the device is read before a
FREEZE, the FREEZE never goes out; a STOP the device did not answer is sent again until it does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_mock import MockerFixture

from controller.procedure.states import State
from firmware_bridge.errors import CommandTimeout
from firmware_bridge.link import Link
from tests.support.rig import Rig
from tests.support.waiting import ticked, wait_until


def test_stop_pressed_while_the_device_is_read_before_a_freeze_sends_no_freeze(make_rig: Callable[..., Rig],
                                                                                mocker: MockerFixture) -> None:
    rig = make_rig(scale=10)
    _, procedure = rig.procedure("common-wart", auto=False)
    procedure.arm()
    real_counters = Link.counters

    def counters_then_stop(link: Link) -> Any:
        answer = real_counters(link)
        procedure.stop()  # the clinician's key lands while the loop is still reading the device
        return answer

    mocker.patch.object(Link, "counters", counters_then_stop)
    procedure.fire()
    wait_until(lambda: ticked(procedure) and procedure.finished, timeout_s=10, what="the lesion's end")
    assert procedure.state is State.ABORTED and not rig.device.model.valve_log  # no FREEZE ever reached the device


def test_a_stop_the_device_did_not_answer_is_sent_again_until_the_valve_closes(make_rig: Callable[..., Rig],
                                                                               mocker: MockerFixture) -> None:
    rig = make_rig()
    _, procedure = rig.procedure("plantar-wart", auto=False, requested_freeze_s=30)
    procedure.arm()
    procedure.fire()
    wait_until(lambda: ticked(procedure) and rig.device.valve_open, timeout_s=5, what="the valve open")
    real_stop = Link.stop
    calls = []

    def lost_once(link: Link, reason: int = 1) -> Any:
        calls.append(reason)
        if len(calls) == 1:  # the first STOP is lost on the way: the device never heard it
            raise CommandTimeout(link.port, "no answer to STOP after 3 attempts", "The outcome is unknown", 0)
        return real_stop(link, reason)

    mocker.patch.object(Link, "stop", lost_once)
    said = procedure.stop()
    assert "STOP is sent again until it answers" in said and rig.device.valve_open
    wait_until(lambda: ticked(procedure) and not rig.device.valve_open, timeout_s=2, what="the valve closed by a resent STOP")
    wait_until(lambda: ticked(procedure) and procedure.finished, timeout_s=5, what="the lesion's end")
    assert len(calls) >= 2 and procedure.state is State.ABORTED and procedure.cycles[-1].end_reason == "STOPPED"
