"""The host's control loop as the device sees it: the gaps between the host frames the simulator
RECEIVES while the real interactive loop (the clinic's Supervisor ticking a Procedure, intents sent
from another thread as the UI sends them) runs lesions with freezes and thaws.

The device's watchdog trips when the host is silent for its timeout (250 ms by default), so the
worst gap is the figure that says whether a busy host can stop a treatment by accident. It is
timed on the simulator's thread at the moment each HEARTBEAT is read off the pty (its ground
truth), not on the host's heartbeat timer; only heartbeats count, as only the loop sends them.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from controller.clinic import Clinic
from controller.config import Config
from controller.errors import GivreError
from controller.procedure.driver import Procedure
from controller.procedure.states import State
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.errors import BridgeError
from firmware_bridge.link import Link
from firmware_bridge.messages import Heartbeat
from profiles.library import LoadedProfile, load_builtins
from profiles.schema import Profile
from sim.device import SimulatedDevice

# A bench-only profile: the built-in two-cycle plantar wart, shortened so a lesion (two freezes and
# the thaw between them) takes about three seconds of real time. Never offered to a clinician.
BENCH_FREEZE_S = 1.0
BENCH_THAW_S = 0.5
IDLE_BETWEEN_LESIONS_S = 0.3  # the supervisor's idle loop (no procedure) heartbeats meanwhile
INTENT_POLL_S = 0.02  # how often the stand-in for the UI looks at the procedure (the UI refreshes at 10 Hz)
INTENT_REPEAT_S = 1.0
LESION_TIMEOUT_S = 30.0
LESION_END_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class LoopFigures:
    gaps_ms: list[float]  # between consecutive heartbeats, as received by the simulator
    frames: int  # heartbeats received
    lesions_completed: int
    lesions: int
    watchdog_trips: int  # the device's own count over the run: a gap past its timeout trips it
    incidents: list[str]  # each lesion that did not complete, and why (the bench goes on)


def bench_profile() -> LoadedProfile:
    """The shortened two-cycle profile the loop measurement runs (validated by the profile schema)."""
    base = load_builtins().get("plantar-wart").profile
    data = base.model_dump()
    data.update(
        id="bench-short-two-cycles",
        freeze_s={"min": BENCH_FREEZE_S, "default": BENCH_FREEZE_S, "max": BENCH_FREEZE_S, "source": "givre bench"},
        thaw={"min_s": BENCH_THAW_S, "until_above_c": None, "source": "givre bench"},
    )
    return LoadedProfile(Profile.model_validate(data), origin="givre bench")


@contextmanager
def bench_clinic(url: str, scratch: Path, watchdog_ms: int = 0, *, connect: bool = True,
                 device: SimulatedDevice | None = None) -> Iterator[Clinic]:
    """A Clinic on the simulator at ``url`` as the UI builds it (link opened, a 23 g cartridge in the
    ledger, no self-test, clinic.connect unless the caller's app does it on mount; ``device`` for the
    fault panel when it runs in this process); its supervisor is not started. Everything is closed
    on leaving."""
    link = Link.open(url, watchdog_ms=watchdog_ms)
    store = RecordStore(scratch / "bench.sqlite")
    try:
        link.wait_for_telemetry()
        CartridgeLedger(store, Config()).load("23g", date.today())
        clinic = Clinic(store, Config(), load_builtins(), link, device=device, bell=False, selftest_on_connect=False)
        if connect:
            clinic.connect(link)
        try:
            yield clinic
        finally:
            clinic.supervisor.close()
    finally:
        link.close()
        store.close()


def start_session(clinic: Clinic) -> Treatment:
    assert clinic.link is not None
    treatment = Treatment(clinic.store, clinic.config, clinic.clock, SessionInfo(operator="bench", patient="P-bench"), clinic.link)
    treatment.start()
    clinic.treatment = treatment
    return treatment


def heartbeat_gaps(lesions: int, *, watchdog_ms: int = 0, between: Callable[[Clinic], None] | None = None) -> LoopFigures:
    """Run ``lesions`` two-cycle lesions through the clinic's supervisor and collect, on the simulator,
    the time each host frame arrived. ``between`` runs after each lesion (a test's slow host)."""
    arrivals: list[float] = []
    with tempfile.TemporaryDirectory() as scratch, SimulatedDevice() as device, \
            bench_clinic(device.serve_pty(), Path(scratch), watchdog_ms, device=device) as clinic:
        treatment = start_session(clinic)
        profile = bench_profile()
        trips_before = device.firmware.watchdog_trips
        completed = 0
        incidents: list[str] = []
        clinic.supervisor.start()
        device.on_host_frame = heartbeat_recorder(arrivals)
        try:
            for _ in range(lesions):
                time.sleep(IDLE_BETWEEN_LESIONS_S)
                procedure = treatment.lesion(Lesion(profile_id=profile.profile.id, site=Site(region=Region.HAND),
                                                    description="bench loop"), profile)
                clinic.procedure = procedure
                clinic.supervisor.attach(procedure)
                state, incident = _run_like_the_ui(procedure)
                completed += state is State.COMPLETED
                if incident:
                    incidents.append(f"loop: {incident}")
                    recover(clinic)
                if between is not None:
                    between(clinic)
            time.sleep(IDLE_BETWEEN_LESIONS_S)
        finally:
            device.on_host_frame = None
        trips = device.firmware.watchdog_trips - trips_before
        treatment.end()
    return LoopFigures(gaps_ms(arrivals), len(arrivals), completed, lesions, trips, incidents)


def heartbeat_recorder(arrivals: list[float]) -> Callable[[float, int], None]:
    """An on_host_frame hook keeping when each HEARTBEAT arrived. Only heartbeats: they come from
    the control loop alone, whereas the link thread answers device events by itself (an event's
    acknowledgement would hide a stalled loop, e.g. the one acknowledging the watchdog's own trip)."""

    def record(at: float, msg_type: int) -> None:
        if msg_type == Heartbeat.MSG_TYPE:
            arrivals.append(at)  # list.append: atomic, and cheap on the device thread

    return record


def gaps_ms(arrivals: list[float]) -> list[float]:
    """Milliseconds between consecutive arrivals (seconds)."""
    return [(later - earlier) * 1000 for earlier, later in itertools.pairwise(arrivals)]


def _run_like_the_ui(procedure: Procedure) -> tuple[State, str]:
    """Arm on this thread (as the treatment screen does), then send the clinician's intents: fire
    when armed, confirm the thaw when thawing, again each second while nothing moves (a refused
    fire leaves the procedure armed, as a clinician would press again). The supervisor's thread
    does everything else. Returns the lesion's end state and, unless it completed, what happened:
    a bench reports a refusal or a fault (a watchdog trip, typically), it never stops on one."""
    try:
        procedure.arm()
    except (GivreError, BridgeError) as exc:
        return _end(procedure), f"arm refused: {exc}"
    deadline = time.monotonic() + LESION_TIMEOUT_S
    last_intent: tuple[State, int, float] | None = None
    while not procedure.finished:
        now = time.monotonic()
        if now > deadline:
            return _end(procedure), f"no end within {LESION_TIMEOUT_S:g} s ({procedure.state.value}: {procedure.status_text})"
        step = (procedure.state, len(procedure.cycles))
        if step[0] in (State.ARMED, State.THAWING) and (last_intent is None or last_intent[:2] != step
                                                        or now - last_intent[2] > INTENT_REPEAT_S):
            if step[0] is State.ARMED:
                procedure.fire()
            else:
                procedure.confirm_thaw()
            last_intent = (*step, now)
        time.sleep(INTENT_POLL_S)
    state = procedure.state
    return state, "" if state is State.COMPLETED else f"lesion {state.value}: {procedure.status_text}"


def _end(procedure: Procedure) -> State:
    """STOP a lesion the bench gives up on and wait (bounded) for the loop to record its end."""
    procedure.stop()
    deadline = time.monotonic() + LESION_END_TIMEOUT_S
    while not procedure.finished and time.monotonic() < deadline:
        time.sleep(INTENT_POLL_S)
    return procedure.state


def recover(clinic: Clinic) -> None:
    """After a lesion that did not complete, do what the clinician does before the next one: clear
    the device's latched fault (a watchdog trip latches one) and acknowledge the alarms."""
    link = clinic.link
    if link is None:
        return
    with contextlib.suppress(BridgeError):  # a lost link: the next lesion's gate says so, and it is reported
        link.clear_fault()
        link.wait_for_telemetry()  # the next gate judges the device on data newer than the clearing
    clinic.alarms.acknowledge_all()
