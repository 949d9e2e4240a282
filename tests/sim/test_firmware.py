"""The simulated device's protocol logic, driven by the host session on manual time (no I/O)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from firmware_bridge.codec import FrameDecoder
from firmware_bridge.messages import (
    PROTO_MAJOR,
    PROTO_MINOR,
    Ack,
    ClearFault,
    Counters,
    DeviceState,
    EndIn,
    EndReason,
    EventCode,
    Fault,
    Freeze,
    FreezeMode,
    GetCounters,
    Heartbeat,
    Hello,
    Message,
    Result,
    Stop,
    TriggerMode,
)
from firmware_bridge.session import DeviceEventReceived, HostSession, Reply
from firmware_bridge.units import DEFAULT_WATCHDOG_MS
from sim.firmware import Firmware, Identity, NonVolatile
from sim.model import DeviceModel


class Bench:
    """A host session and the device firmware joined by a perfect (or lossy) wire, on manual time."""

    def __init__(self, watchdog_ms: int = DEFAULT_WATCHDOG_MS) -> None:
        self.model = DeviceModel()
        self.nvm = NonVolatile()
        self.fw = Firmware(Identity(), self.model, self.nvm)
        self.host = HostSession()
        self.ms = 0.0
        self.fw.power_on(0.0, 0.0)
        self.to_device = FrameDecoder()
        self.to_host = FrameDecoder()
        self.replies: dict[int, Reply] = {}
        self.events: list[DeviceEventReceived] = []
        self.lose_to_device: Callable[[bytes], bool] = lambda wire: False
        self.lose_to_host: Callable[[bytes], bool] = lambda wire: False
        self.request(Hello(PROTO_MAJOR, PROTO_MINOR, watchdog_ms, 1))

    def _deliver_to_device(self, wires: list[bytes]) -> None:
        for wire in wires:
            if self.lose_to_device(wire):
                continue
            for frame in self.to_device.feed(wire):
                self._deliver_to_host(self.fw.on_frame(frame, self.ms, self.ms / 1000))

    def _deliver_to_host(self, wires: list[bytes]) -> None:
        for wire in wires:
            if self.lose_to_host(wire):
                continue
            for frame in self.to_host.feed(wire):
                out = self.host.receive(frame, self.ms / 1000)
                for event in out.events:
                    if isinstance(event, Reply):
                        self.replies[event.txn] = event
                    elif isinstance(event, DeviceEventReceived):
                        self.events.append(event)
                self._deliver_to_device(out.to_send)

    def request(self, msg: Message) -> int:
        txn, wire = self.host.request(msg, self.ms / 1000)
        self._deliver_to_device([wire])
        return txn

    def run(self, ms: float, heartbeat: bool = True) -> None:
        """Advance time 1 ms at a time: ticks, retransmissions, heartbeats every 50 ms."""
        end = self.ms + ms
        while self.ms < end:
            self.ms += 1
            if heartbeat and int(self.ms) % 50 == 0:
                self._deliver_to_device([self.host.unsolicited(Heartbeat(0))])
            self._deliver_to_host(self.fw.tick(self.ms, self.ms / 1000))
            self._deliver_to_device(self.host.poll(self.ms / 1000).to_send)

    def result(self, txn: int) -> Message:
        return self.replies[txn].message

    def ack(self, txn: int) -> Ack:
        """The reply to a request the device answers with an ACK."""
        reply = self.result(txn)
        assert isinstance(reply, Ack), reply
        return reply

    def done(self) -> list[DeviceEventReceived]:
        return [e for e in self.events if e.event.code is EventCode.FREEZE_DONE]


def freeze(ms: int, mode: FreezeMode = FreezeMode.TIMED, trigger: TriggerMode = TriggerMode.HOST) -> Freeze:
    return Freeze(mode, trigger, ms)


def test_device_times_the_freeze_and_reports_what_it_measured() -> None:
    bench = Bench()
    txn = bench.request(freeze(1000))
    assert bench.result(txn) == Ack(Freeze.MSG_TYPE, Result.OK, 0, 1000)
    bench.run(999)
    assert bench.model.valve_commanded
    bench.run(5)
    assert not bench.model.valve_commanded
    (done,) = bench.done()
    assert (done.event.end_reason, done.event.valve_open_ms, done.event.requested_ms) == (EndReason.COMPLETED, 1000, 1000)


def test_the_device_refuses_a_freeze_above_its_own_cap() -> None:
    bench = Bench()
    ack = bench.ack(bench.request(freeze(60_001)))
    assert ack.result is Result.OVER_CAP and ack.detail32 == 60_000
    assert not bench.model.valve_commanded


@pytest.mark.parametrize("bad", [0])
def test_a_zero_freeze_is_a_bad_request(bad: int) -> None:
    bench = Bench()
    assert bench.ack(bench.request(freeze(bad))).result is Result.BAD_REQUEST


def test_a_retransmitted_freeze_never_freezes_twice() -> None:
    bench = Bench()
    lost_acks = iter([True, True, False])  # the device's first two answers are lost on the wire
    bench.lose_to_host = lambda wire: wire[4] == 0x82 and next(lost_acks, False)  # header byte: msg type
    txn = bench.request(freeze(300))
    bench.run(400)
    assert bench.replies[txn].duplicate
    assert bench.fw.freezes_started == 1 and len(bench.done()) == 1


def test_host_silence_trips_the_watchdog_which_closes_the_valve_and_latches() -> None:
    bench = Bench(watchdog_ms=250)
    bench.request(freeze(10_000))
    bench.run(100)
    bench.run(300, heartbeat=False)
    assert not bench.model.valve_commanded
    assert bench.fw.state is DeviceState.FAULT and bench.fw.faults & Fault.WATCHDOG_TRIP
    assert bench.nvm.last_freeze.end_reason is EndReason.WATCHDOG
    assert 340 <= bench.nvm.last_freeze.valve_open_ms <= 352  # last host frame at 100 ms + 250 ms
    refused = bench.ack(bench.request(freeze(1000)))
    assert refused.result is Result.FAULT_LATCHED
    assert bench.ack(bench.request(ClearFault())).result is Result.OK
    assert bench.ack(bench.request(freeze(1000))).result is Result.OK


def test_stop_closes_the_valve_before_answering_and_is_idempotent() -> None:
    bench = Bench()
    bench.request(freeze(5000))
    bench.run(200)
    first = bench.ack(bench.request(Stop(0)))
    assert not bench.model.valve_commanded
    assert first.result is Result.OK and 199 <= first.detail32 <= 201
    second = bench.ack(bench.request(Stop(0)))
    assert second.result is Result.OK and second.detail32 == 0
    assert [d.event.end_reason for d in bench.done()] == [EndReason.STOPPED]


def test_halo_freeze_ends_at_the_mark_plus_remaining_and_reports_both_durations() -> None:
    bench = Bench()
    bench.request(freeze(30_000, FreezeMode.HALO))
    bench.run(4000)
    bench.request(EndIn(10_000))
    bench.run(10_010)
    (done,) = bench.done()
    assert done.event.end_reason is EndReason.COMPLETED
    assert done.event.valve_open_ms == 14_000 and done.event.halo_to_off_ms == 10_000


def test_halo_freeze_without_a_mark_ends_at_the_cap() -> None:
    bench = Bench()
    bench.request(freeze(3000, FreezeMode.HALO))
    bench.run(3010)
    (done,) = bench.done()
    assert done.event.end_reason is EndReason.CAP and done.event.valve_open_ms == 3000


def test_halo_end_in_never_extends_past_the_cap() -> None:
    bench = Bench()
    bench.request(freeze(5000, FreezeMode.HALO))
    bench.run(4000)
    ack = bench.ack(bench.request(EndIn(10_000)))
    assert ack.detail32 == 1000
    bench.run(1010)
    done = bench.done()[0].event
    assert done.valve_open_ms == 5000 and done.halo_to_off_ms == 1000 and done.end_reason is EndReason.CAP


def test_dead_man_sprays_only_while_the_trigger_is_held() -> None:
    bench = Bench()
    bench.request(freeze(10_000, trigger=TriggerMode.DEAD_MAN))
    bench.run(500)
    assert not bench.model.valve_commanded and bench.fw.state is DeviceState.WAIT_TRIGGER
    bench.fw.trigger_held = True
    bench.run(1000)
    assert bench.model.valve_commanded
    bench.fw.trigger_held = False
    bench.run(1)
    assert not bench.model.valve_commanded
    (done,) = bench.done()
    assert done.event.end_reason is EndReason.TRIGGER_RELEASED and 999 <= done.event.valve_open_ms <= 1001


def test_a_reset_mid_freeze_closes_the_valve_and_leaves_the_truth_in_the_counters() -> None:
    bench = Bench()
    txn = bench.request(freeze(10_000))
    bench.run(1234)
    bench.fw.power_on(bench.ms, bench.ms / 1000)
    assert not bench.model.valve_commanded and bench.fw.state is DeviceState.NO_SESSION
    assert bench.ack(bench.request(freeze(1000))).result is Result.NO_SESSION
    bench.request(Hello(PROTO_MAJOR, PROTO_MINOR, DEFAULT_WATCHDOG_MS, 2))
    counters = bench.result(bench.request(GetCounters()))
    assert isinstance(counters, Counters)
    assert (counters.last_txn, counters.last_end_reason, counters.boot_count) == (txn, EndReason.RESET, 2)
    assert 1230 <= counters.last_valve_open_ms <= 1234


def test_blocked_nozzle_ends_the_freeze_with_a_no_flow_fault() -> None:
    bench = Bench()
    bench.model.nozzle_blocked = True
    bench.request(freeze(5000))
    bench.run(600)
    assert not bench.model.valve_commanded and bench.fw.faults & Fault.NO_FLOW
    assert bench.done()[0].event.end_reason is EndReason.FAULT


def test_the_cartridge_running_out_mid_freeze_ends_it() -> None:
    bench = Bench()
    bench.model.cartridge.remaining_g = 0.05  # about 0.76 s of spray at the nominal 23 g / 350 s
    bench.request(freeze(5000))
    bench.run(1500)
    (done,) = bench.done()
    assert done.event.end_reason is EndReason.CARTRIDGE_EMPTY and 700 < done.event.valve_open_ms < 900
    codes = {e.event.code for e in bench.events}
    assert EventCode.CARTRIDGE_EMPTY in codes and EventCode.CARTRIDGE_LOW in codes
    assert bench.ack(bench.request(freeze(1000))).result is Result.CARTRIDGE_EMPTY


def test_a_stuck_open_valve_is_detected_and_cannot_be_cleared_while_stuck() -> None:
    bench = Bench()
    bench.request(freeze(500))
    bench.run(100)
    bench.model.valve_stuck_open = True
    bench.run(800)
    assert bench.model.valve_open and bench.fw.faults & Fault.VALVE_STUCK_OPEN
    assert bench.ack(bench.request(ClearFault())).result is Result.FAULT_LATCHED
