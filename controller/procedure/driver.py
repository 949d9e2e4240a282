"""One lesion's procedure, driven: the pure core (procedure/core.py) decides, this driver does.

The driver owns the link, the store and the cartridge ledger and is the only code that touches
them: it feeds the core typed inputs (the clinician's intents, the device's telemetry and events,
the answers to the commands it ran, the passing of time) and executes the core's outputs in order
(records, ledger operations, device commands, each command's answer fed back at once). After each
loop turn and each intent it publishes ``view``, a frozen ProcedureView, replaced whole.

Threads: the loop (a headless run, or the Supervisor's thread) calls ``tick``/``run`` and, when it
is the loop itself, ``arm``. Any other thread (the UI) only enqueues intents (``request_arm``,
``fire``, ``mark_halo``, ``confirm_thaw``, ``acknowledge_alarms``) and reads ``view``; ``arm`` from
such a thread is queued too and waits for the loop's answer. STOP is the exception: ``stop`` goes
straight to the device from the caller's thread, the fastest path there is, and the loop records it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from controller.config import Config
from controller.procedure.alarms import AlarmManager
from controller.procedure.core import (
    AUTO_FIRE_PATIENCE_S,
    DONE_OVERDUE_S,
    FLOOD_EVENTS_PER_S,
    RECONCILE_RETRY_S,
    VALVE_CLOSED_CONFIRM_S,
    Acknowledge,
    Arm,
    CartridgeChecked,
    CartridgeRefused,
    CartridgeReserved,
    CheckCartridge,
    Command,
    Commit,
    ConfirmThaw,
    ConfirmValveClosed,
    CoreSetup,
    CountersRead,
    CountersUnread,
    CycleRecord,
    DeviceEvent,
    Fire,
    FreezeAccepted,
    FreezeFailed,
    FreezeNotSent,
    FreezeRejected,
    FreezeUnanswered,
    HaloAcked,
    HaloNotTaken,
    Input,
    LedgerOp,
    LinkLost,
    LinkUp,
    MarkHalo,
    Output,
    Plan,
    ProcedureCore,
    ProcedureError,
    ReadAndReconcile,
    ReadCounters,
    Rebooted,
    Reconciled,
    Reconnected,
    ReconnectFailed,
    ReconnectIfLost,
    Record,
    RecordFailed,
    Release,
    Reserve,
    SendEndIn,
    SendFreeze,
    StartRefused,
    Stop,
    StopPressed,
    TelemetrySeen,
    Tick,
    ValveChecked,
)
from controller.procedure.dose import BelowMinimumOverride
from controller.procedure.reconcile import read_and_reconcile
from controller.procedure.states import FREEZE_MAY_RUN, TERMINAL, State
from controller.procedure.view import ProcedureView
from controller.records.ledger import CartridgeLedger, CartridgeStatus, LedgerError
from controller.records.lesion import Lesion
from controller.records.store import RecordNotSaved, RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.errors import BridgeError, CommandRejected, CommandTimeout
from firmware_bridge.link import Link, LinkDown
from firmware_bridge.messages import CalData, TriggerMode
from firmware_bridge.session import DeviceEventReceived, RebootDetected, TelemetryReceived
from profiles.library import LoadedProfile

__all__ = [
    "AUTO_FIRE_PATIENCE_S", "DONE_OVERDUE_S", "EVENTS_PER_TICK", "FLOOD_EVENTS_PER_S", "MANUAL_TICK_S", "RECONCILE_RETRY_S",
    "VALVE_CLOSED_CONFIRM_S", "ClinicalChoice", "CycleRecord", "DeviceAccess", "Plan", "Procedure", "ProcedureError", "Recording",
    "StartRefused",
]

MANUAL_TICK_S = 0.05
STOP_RESEND_S = 0.5  # STOP again this often until the device reports the freeze's end
EVENTS_PER_TICK = 32  # device events handled per loop turn: the heartbeat and STOP never wait behind a flood
MAX_INTENTS = 64  # intents queued for the loop; past it an intent is dropped (and counted): STOP never queues
ARM_ANSWER_S = 5.0  # wall seconds a caller off the loop waits for the loop to run the start gate


@dataclass(frozen=True, slots=True)
class Recording:
    """Where the procedure records each step: the store, under its session and lesion."""

    store: RecordStore
    session_id: str
    lesion_id: str


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """The device as the procedure reaches it; no link is a manual treatment (the host only times it)."""

    link: Link | None
    calibration: CalData | None
    reconnect: Callable[[], Link] | None  # a new link, tried while a freeze's outcome is unknown and the link is lost
    reconnect_window_s: float  # how long an unknown outcome is retried before the cycle is left open


@dataclass(frozen=True, slots=True)
class ClinicalChoice:
    """What the clinician chose for this lesion."""

    lesion: Lesion
    profile: LoadedProfile
    requested_freeze_s: float | None = None  # None: the profile's default
    cycles: int | None = None  # None: the profile's number of cycles
    trigger: TriggerMode = TriggerMode.HOST
    auto: bool = False  # headless: fire each cycle and confirm each thaw by itself
    below_minimum: BelowMinimumOverride | None = None  # the clinician accepts a dose below the profile's minimum


class _ArmWaiter:
    """An ARM queued by a thread off the loop, and the loop's answer to it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Plan | BaseException | None = None


_INTENTS: dict[str, Callable[[], Input]] = {
    "mark_halo": MarkHalo,
    "confirm_thaw": ConfirmThaw,
    "ack": Acknowledge,
}


class Procedure:
    """One lesion's procedure, built by Treatment.lesion; the record, the device and the clinician's choice come grouped."""

    def __init__(self, recording: Recording, device: DeviceAccess, choice: ClinicalChoice, *, config: Config, clock: Clock) -> None:
        self.store, self.session_id, self.lesion_id = recording.store, recording.session_id, recording.lesion_id
        self.link, self.calibration = device.link, device.calibration  # link: replaced by a reconnection
        self.reconnect, self.reconnect_window_s = device.reconnect, device.reconnect_window_s
        self.lesion, self.loaded, self.profile = choice.lesion, choice.profile, choice.profile.profile
        self.requested_freeze_s, self.requested_cycles = choice.requested_freeze_s, choice.cycles
        self.trigger, self.auto, self.below_minimum = choice.trigger, choice.auto, choice.below_minimum
        self.config = config
        self.clock = clock
        self.today = date.today()
        identity = None
        if self.link is not None:
            assert self.link.identity is not None  # Link.open handshakes, so a link has one
            identity = self.link.identity
        self.core = ProcedureCore(CoreSetup(
            self.profile, config, identity, self.calibration, self.today, clock.scale, self.reconnect_window_s,
            self.requested_freeze_s, self.requested_cycles, self.trigger, self.auto, self.below_minimum))
        self.ledger = CartridgeLedger(self.store, config)
        self.intents_dropped = 0
        self._intents: queue.Queue[tuple[str, _ArmWaiter | None]] = queue.Queue(maxsize=MAX_INTENTS)
        self._stop_unrecorded = threading.Event()  # STOP was pressed and the loop has not fed it to the core yet
        self._lesion_recorded = threading.Event()
        self._stop_sent_at = 0.0  # host clock of the last STOP sent to the device
        self._step = threading.RLock()  # one thread at a time drives the core (the loop; or arm() before any loop runs)
        self._loop_thread: int | None = None
        self._failure: RecordNotSaved | None = None
        self.view: ProcedureView = self.core.view(clock.monotonic(), finished=False)

    # ---- what others read (the loop's objects: read them on the loop; another thread reads ``view``) --

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def plan(self) -> Plan | None:
        return self.core.plan

    @property
    def cycles(self) -> list[CycleRecord]:
        return self.core.cycles

    @property
    def warnings(self) -> list[str]:
        return self.core.warnings

    @property
    def status_text(self) -> str:
        return self.core.status_text

    @property
    def alarms(self) -> AlarmManager:
        return self.core.alarms

    @property
    def cartridge(self) -> CartridgeStatus | None:
        return self.core.cartridge

    @property
    def cartridge_seconds_used(self) -> float:
        return self.core.cartridge_seconds_used

    @property
    def halo_marked(self) -> bool:
        return self.core.halo_marked

    def freeze_elapsed_s(self) -> float | None:
        """Seconds since the current freeze was fired (host clock: for the clinician's cues only)."""
        return self.core.freeze_elapsed_s(self.clock.monotonic())

    def thaw_remaining(self) -> tuple[float, str]:
        """(seconds left on the thaw's minimum, what else it waits for)."""
        return self.core.thaw_remaining(self.clock.monotonic())

    @property
    def finished(self) -> bool:
        """True once the lesion's end is recorded, not merely once its state is terminal: a screen that
        reads the record (summary, billing) must never see the lesion half-closed."""
        return self.core.state in TERMINAL and self._lesion_recorded.is_set()

    # ---- intents (any thread) ------------------------------------------------------------------

    def stop(self) -> str:
        """Emergency stop: straight to the device from the caller's thread, then recorded by the loop.
        Returns what the device said, in words, for the screen."""
        self._stop_unrecorded.set()
        said = "stopped"
        link = self.link
        if link is not None and (self.core.state is State.ARMED or self.core.state in FREEZE_MAY_RUN):
            self._stop_sent_at = self.clock.monotonic()
            try:
                ack = link.stop(reason=1)
                said = f"the device closed its valve after {ack.detail32} ms of freeze"
            except BridgeError as exc:
                said = (f"no answer from the device ({exc.problem}): STOP is sent again until it answers; "
                        "if Givre goes silent, the device's watchdog closes the valve")
        return said

    def request_arm(self) -> None:
        """Queue an ARM: the loop runs the start gate; ``view`` then says armed, or every reason it was refused."""
        self._queue("arm")

    def fire(self) -> None:
        self._queue("fire")

    def mark_halo(self) -> None:
        self._queue("mark_halo")

    def confirm_thaw(self) -> None:
        self._queue("confirm_thaw")

    def acknowledge_alarms(self) -> None:
        """Queued for the loop; once the lesion's end is recorded no loop runs it any more, so the
        caller feeds it to the core itself: recorded (alarm_acknowledged) and the view republished."""
        if self.finished:
            with self._step:
                self._feed(Acknowledge())
                self._publish()
            return
        self._queue("ack")

    def _queue(self, intent: str, waiter: _ArmWaiter | None = None) -> bool:
        try:
            self._intents.put_nowait((intent, waiter))
        except queue.Full:
            self.intents_dropped += 1
            return False
        return True

    def arm(self) -> Plan:
        """Check everything that must hold before a first freeze (gates.start_gate); refuse with every
        reason at once (StartRefused). On the loop's thread (or before any loop runs) it runs at once;
        from another thread it is queued and waits for the loop's answer (an ARM the loop has not taken
        within ARM_ANSWER_S stays queued: ``view`` shows its outcome once the loop runs it)."""
        loop = self._loop_thread
        if loop is not None and loop != threading.get_ident():
            waiter = _ArmWaiter()
            if not self._queue("arm", waiter):
                raise ProcedureError("the control loop is busy: press ARM again")
            if not waiter.done.wait(ARM_ANSWER_S):
                raise ProcedureError("the control loop did not answer the ARM")
            result = waiter.result
        else:
            with self._step:
                self._feed(Arm(self._latest()))
                self._publish()
                self._raise_failure()
                result = self.core.arm_result
        if isinstance(result, Plan):
            return result
        if isinstance(result, BaseException):
            raise result
        raise ProcedureError("arming did not settle")

    # ---- the controller loop --------------------------------------------------------------------

    def run(self) -> None:
        """Headless: drive the protocol to its end from this thread."""
        while not self.finished:
            self.tick()

    def tick(self) -> None:
        """One loop iteration: heartbeat, intents, device events, telemetry, timers; then publish the view."""
        with self._step:
            self._loop_thread = threading.get_ident()
            self._keep_alive()
            self._drain_intents()
            self._resend_stop_if_unanswered()
            if self.link is not None:
                item = self.link.next_event(self.link.heartbeat_period_s)
                handled = 0
                while item is not None:
                    self._keep_alive()
                    self._on_link_event(item)
                    handled += 1
                    item = self.link.next_event(0) if handled < EVENTS_PER_TICK else None
                self._feed(TelemetrySeen(self.link.latest_telemetry()))
            else:
                now = self.clock.monotonic()
                timer = self.core.next_timer(now)  # a timer already due waits for something else (the clinician): no busy loop
                self.clock.sleep(MANUAL_TICK_S if timer is None or timer <= now else min(MANUAL_TICK_S, timer - now))
            self._feed(Tick())
            self._publish()
            self._raise_failure()

    def _latest(self) -> TelemetryReceived | None:
        return self.link.latest_telemetry() if self.link is not None else None

    def _take_stop(self) -> bool:
        """Hand the core a STOP pressed on another thread since the last look; True if there was one."""
        if not self._stop_unrecorded.is_set():
            return False
        self._stop_unrecorded.clear()
        self._feed(StopPressed())
        self._feed(Stop())
        self._publish()
        return True

    def _resend_stop_if_unanswered(self) -> None:
        """STOP was pressed and the device has not reported the freeze's end: STOP again every
        STOP_RESEND_S (a lost frame or a busy device must never let the freeze run to its end)."""
        link = self.link
        now = self.clock.monotonic()
        if link is None or not self.core.stop_pressed or self.core.state not in FREEZE_MAY_RUN:
            return
        if now - self._stop_sent_at < self.clock.wall(STOP_RESEND_S):
            return
        self._stop_sent_at = now
        with contextlib.suppress(BridgeError):
            link.stop(reason=1)

    def _drain_intents(self) -> None:
        self._take_stop()
        while True:
            try:
                intent, waiter = self._intents.get_nowait()
            except queue.Empty:
                return
            if intent == "arm":
                self._feed(Arm(self._latest()))
            elif intent == "fire":
                self._feed(Fire(self._latest()))
            else:
                self._feed(_INTENTS[intent]())
            self._publish()
            if waiter is not None:
                failure, self._failure = self._failure, None
                waiter.result = failure or self.core.arm_result
                waiter.done.set()

    def _on_link_event(self, item: object) -> None:
        if isinstance(item, DeviceEventReceived):
            self._feed(DeviceEvent(item))
        elif isinstance(item, RebootDetected):
            self._feed(Rebooted(item.old_boot_count, item.new_boot_count))
        elif isinstance(item, LinkDown):
            self._feed(LinkLost(item.error.problem))

    def _publish(self) -> None:
        self.view = self.core.view(self.clock.monotonic(), self.finished)

    def _raise_failure(self) -> None:
        """A record that could not be saved: its alarm is raised; the loop's caller hears of it too."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    # ---- executing the core's outputs -------------------------------------------------------------

    def _feed(self, inp: Input) -> None:
        self._execute(self.core.handle(inp, self.clock.monotonic()))

    def _execute(self, out: Output) -> None:
        """Each effect in order; a command's answer is fed (and its output executed) before the next effect.
        A FREEZE whose request could not be recorded is not sent."""
        unsaved = False
        try:
            for effect in out.effects:
                self._keep_alive()  # a lesion's end is a chain of durable writes: the lease outlives each of them
                if isinstance(effect, Record):
                    unsaved = not self._append(effect) or unsaved
                elif isinstance(effect, CheckCartridge | Reserve | Commit | Release):
                    self._ledger(effect)
                elif isinstance(effect, SendFreeze) and unsaved:
                    self._feed(FreezeNotSent("its request could not be recorded"))
                else:
                    self._command(effect)
        finally:
            if out.closes_lesion:
                self._lesion_recorded.set()  # even unsaved or with the link gone (their alarms are raised): the lesion is over

    def _append(self, record: Record) -> bool:
        """Every step is committed before it is reported. A failed write raises the 'record not saved'
        alarm in memory (it cannot be written) and never blocks STOP."""
        try:
            if record.lesion:
                self.store.append(record.kind, {"lesion_id": self.lesion_id, **record.payload}, self.session_id)
            else:
                self.store.append(record.kind, record.payload, None)
        except RecordNotSaved as exc:
            if record.best_effort:
                return True
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: RecordNotSaved) -> None:
        self._failure = self._failure or exc
        self._feed(RecordFailed(str(exc)))

    def _keep_alive(self) -> None:
        """Renew the link's heartbeat lease: its thread feeds the device while this loop is alive."""
        if self.link is not None:
            with contextlib.suppress(BridgeError):  # the link's loss arrives as an event
                self.link.keep_alive(list(State).index(self.core.state))

    def _ledger(self, op: LedgerOp) -> None:
        if isinstance(op, CheckCartridge):
            try:
                self._feed(CartridgeChecked(self.ledger.status(op.flow_mg_per_s, op.today)))  # one indexed read (the projection)
            except LedgerError as exc:
                self._feed(CartridgeRefused(str(exc)))
        elif isinstance(op, Reserve):
            try:
                status = self.ledger.reserve(self.session_id, op.seconds, op.flow_mg_per_s)
            except (LedgerError, RecordNotSaved) as exc:  # a reservation that could not be written reserves nothing
                self._feed(CartridgeRefused(str(exc)))
            else:
                self._feed(CartridgeReserved(status))
        elif isinstance(op, Commit):
            try:
                self.ledger.commit(self.session_id, op.cartridge_id, op.seconds, lesion_done=op.lesion_done)
            except RecordNotSaved as exc:
                self._failed(exc)
        else:
            with contextlib.suppress(RecordNotSaved):  # lesion_ended still tries; a store that fails it raises the alarm
                self.ledger.release(self.session_id, op.cartridge_id)

    def _command(self, command: Command) -> None:
        if isinstance(command, ConfirmValveClosed):
            self._feed(ValveChecked(self._valve_closed(command.within_s)))
        elif isinstance(command, ReconnectIfLost):
            self._reconnect_if_lost()
        elif isinstance(command, ReadAndReconcile):
            outcome = read_and_reconcile(self.link, command.facts)
            flags = None
            if outcome.settled and self.link is not None and self.link.identity is not None:
                with contextlib.suppress(BridgeError):  # best effort: a latched fault also blocks the next arming
                    flags = self.link.counters().fault_flags
            self._feed(Reconciled(outcome, flags))
        else:
            self._device_command(command)

    def _device_command(self, command: ReadCounters | SendFreeze | SendEndIn) -> None:
        link = self.link
        assert link is not None  # a manual procedure sends the device nothing
        if isinstance(command, ReadCounters):
            try:
                counters = link.counters()
            except BridgeError as exc:
                self._feed(CountersUnread(str(exc)))
            else:
                self._take_stop()  # a STOP pressed meanwhile is heard before the FREEZE could go out
                self._feed(CountersRead(counters))
        elif isinstance(command, SendFreeze):
            if self._take_stop():
                self._feed(FreezeNotSent("STOP was pressed before it went out"))
                return
            try:
                txn = link.freeze(command.ms, command.mode, command.trigger)
            except CommandTimeout as exc:
                self._feed(FreezeUnanswered(exc.txn, exc.problem))
            except CommandRejected as exc:
                self._feed(FreezeRejected(exc.problem, exc.result, str(exc)))
            except BridgeError as exc:
                self._feed(FreezeFailed(str(exc)))
            else:
                self._feed(FreezeAccepted(txn))
        else:
            try:
                ack = link.end_in(command.ms)
            except BridgeError as exc:
                self._feed(HaloNotTaken(str(exc)))
            else:
                self._feed(HaloAcked(ack.detail32))

    def _reconnect_if_lost(self) -> None:
        if self.link is None or not self.link.lost or self.reconnect is None:
            self._feed(LinkUp())
            return
        try:
            self.link = self.reconnect()
        except BridgeError as exc:
            self._feed(ReconnectFailed(exc.problem))
            return
        self._feed(Reconnected(self.link.identity))

    def _valve_closed(self, within_s: float) -> bool | None:
        """See the device's valve sensor say 'closed' within ``within_s`` wall seconds (None: no link to ask)."""
        link = self.link
        if link is None or link.lost:
            return None
        deadline = self.clock.monotonic() + self.clock.wall(within_s)
        while self.clock.monotonic() < deadline:
            latest = link.wait_for_telemetry(within_s)
            if latest is not None and not latest.telemetry.valve & 0b10:
                return True
        return False
