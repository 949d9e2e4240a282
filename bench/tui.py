"""TUI figures for `givre bench`, driving the app from above with Textual's test pilot: launch to
the first screen ready, and a STOP key mid-freeze delivered as a terminal delivers it.

A terminal's keys reach a Textual app from the driver's input thread, which hands each parsed key
to ``Driver.process_message`` (it sets the sender and schedules the post on the app's event loop).
The bench does exactly that from a thread of its own, so the figure includes the hop from the
input thread to the app's loop, the binding, the procedure's STOP from the UI thread, the link
thread, the pty, and the simulator reading the frame. It ends at the simulator's ground truth:
the time its valve model really closed (``valve_log``), which includes the model's close latency
(reported apart as ``valve_close_latency_ms``). The older ``tui_stop_ms`` (the screen says the
device closed its valve) is taken from the same key presses.

The simulator runs in a process of its own (bench/remote_device.py), as a real device has its own
processor: in the host's process its thread would share the host's interpreter lock and collector
pauses, and the figures would measure both.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual import events
from textual.pilot import Pilot

from bench.loop import bench_clinic, recover, start_session
from bench.remote_device import RemoteDevice
from controller.clinic import Clinic
from controller.errors import GivreError
from controller.procedure.driver import Procedure
from controller.records.lesion import Lesion, Region, Site
from controller.tui.app import GivreApp
from controller.tui.screens.procedure import ProcedureScreen
from controller.tui.screens.session import SessionScreen
from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import EndReason

STOP_TIMEOUT_S = 5.0  # the device's watchdog would have closed the valve long before
TEXT_TIMEOUT_S = 2.0
STOP_WORDS = "■ STOP:"  # the treatment screen's answer to the key, whatever the device said
CLOSED_WORDS = "closed its valve"


@dataclass(slots=True)
class TuiFigures:
    start_ms: float = 0.0
    key_to_valve_closed_ms: list[float] = field(default_factory=list)  # key posted -> the model's valve really closed
    key_to_valve_commanded_ms: list[float] = field(default_factory=list)  # key posted -> the firmware commanded it shut
    key_to_text_ms: list[float] = field(default_factory=list)  # key posted -> the screen says the device closed its valve
    incidents: list[str] = field(default_factory=list)  # each sample that went wrong, and how (the bench goes on)
    valve_close_latency_ms: float = 0.0
    heartbeat_arrivals: list[float] = field(default_factory=list)  # every heartbeat the simulator received meanwhile
    watchdog_trips: int = 0  # the device's own count over the session
    host_heartbeat_gap_ms_max: float = 0.0  # the same gaps as the host's link thread wrote them (LinkStats)


def measure_tui(samples: int, before_key: Callable[[RemoteDevice], None] | None = None) -> TuiFigures:
    """``samples`` STOP keys, each mid-freeze. ``before_key`` runs just before each key (a test's slow device)."""
    figures = TuiFigures()
    with tempfile.TemporaryDirectory() as scratch, RemoteDevice() as device, \
            bench_clinic(device.url, Path(scratch), connect=False) as clinic:
        figures.valve_close_latency_ms = device.close_latency_s * 1000
        trips_before = device.watchdog_trips()
        ready_at = asyncio.run(_drive(clinic, device, samples, figures, before_key))
        figures.heartbeat_arrivals = [t for t in device.heartbeat_arrivals() if t >= ready_at]  # from the first screen on
        figures.watchdog_trips = device.watchdog_trips() - trips_before
        if clinic.link is not None:
            figures.host_heartbeat_gap_ms_max = clinic.link.stats().heartbeat_gap_max_s * 1000
    return figures


def post_key_as_a_terminal(app: GivreApp, key: str, character: str | None, device: RemoteDevice) -> float:
    """From a new thread, hand a key to the app's driver as a terminal's input thread does; returns
    when it was handed over, on the simulator's clock."""
    driver = app._driver  # the app's own driver: the same call a terminal's input thread makes
    if driver is None:
        raise RuntimeError("the app is not running")
    posted: list[float] = []

    def terminal_input_thread() -> None:
        posted.append(device.now())
        driver.process_message(events.Key(key, character))

    thread = threading.Thread(target=terminal_input_thread, name="bench-terminal-input")
    thread.start()
    thread.join()
    return posted[0]


async def _drive(clinic: Clinic, device: RemoteDevice, samples: int, figures: TuiFigures,
                 before_key: Callable[[RemoteDevice], None] | None) -> float:
    """The samples; returns when the first screen was ready (the device's clock)."""
    started = time.perf_counter()
    app = GivreApp(clinic)
    async with app.run_test(size=(80, 24)) as pilot:
        while not isinstance(app.screen, SessionScreen):
            await pilot.pause(0.001)
        figures.start_ms = (time.perf_counter() - started) * 1000
        ready_at = device.now()
        treatment = start_session(clinic)
        profile = clinic.library.get("seborrheic-keratosis-thick")
        bench = _Bench(pilot, device, figures, before_key)
        for _ in range(samples):
            procedure = treatment.lesion(Lesion(profile_id=profile.profile.id, site=Site(region=Region.BACK), description="bench"), profile)
            clinic.procedure = procedure
            clinic.supervisor.attach(procedure)
            screen = ProcedureScreen()
            await app.push_screen(screen)
            incident = await _stop_sample(bench, screen, procedure)
            if incident:  # reported, never fatal: end the lesion, clear what latched, go on
                figures.incidents.append(f"tui: {incident}")
                if not procedure.finished:
                    procedure.stop()
                    await _until(lambda: procedure.finished, device, STOP_TIMEOUT_S)  # noqa: B023 - awaited in this turn
                recover(clinic)
            while not isinstance(app.screen, SessionScreen):
                app.pop_screen()
                await pilot.pause(0.01)
        treatment.end()
    return ready_at


@dataclass(frozen=True, slots=True)
class _Bench:
    """What every sample uses: the pilot driving the app, the simulator, where figures go, a test's slow device."""

    pilot: Pilot[None]
    device: RemoteDevice
    figures: TuiFigures
    before_key: Callable[[RemoteDevice], None] | None


async def _stop_sample(bench: _Bench, screen: ProcedureScreen, procedure: Procedure) -> str:
    """Arm, fire with the f key, then one STOP key mid-freeze. Returns what went wrong, if anything
    ("" for a clean sample)."""
    try:
        procedure.arm()
    except (GivreError, BridgeError) as exc:
        return f"arm refused: {exc}"
    await bench.pilot.press("f")
    if await asyncio.to_thread(bench.device.wait_valve, True, STOP_TIMEOUT_S) is None:  # waited in the device process
        return f"the valve did not open within {STOP_TIMEOUT_S:g} s of the fire key ({procedure.state.value}: {procedure.status_text})"
    return await _stop_key(bench, screen, procedure)


async def _stop_key(bench: _Bench, screen: ProcedureScreen, procedure: Procedure) -> str:
    """The STOP key, timed to the simulator's valve really closing and to the screen's answer."""
    device, figures = bench.device, bench.figures
    opening = device.last_edge()  # the opening this freeze made
    message = screen.query_one("#message")
    if bench.before_key is not None:
        bench.before_key(device)
    t0 = post_key_as_a_terminal(screen.app, "space", " ", device)
    text_at = await _until(lambda: STOP_WORDS in str(message.render()), device, TEXT_TIMEOUT_S)
    if text_at is not None and CLOSED_WORDS in str(message.render()):
        figures.key_to_text_ms.append((text_at - t0) * 1000)
    edge = await asyncio.to_thread(device.wait_valve, False, STOP_TIMEOUT_S)
    if edge is None or opening is None or edge.opened_at != opening.opened_at or edge.closed_at is None:
        return f"the valve did not close within {STOP_TIMEOUT_S:g} s of the STOP key"
    if edge.closed_at < t0:
        return "the freeze had ended before the STOP key"
    figures.key_to_valve_closed_ms.append((edge.closed_at - t0) * 1000)
    figures.key_to_valve_commanded_ms.append((edge.closed_at - device.close_latency_s - t0) * 1000)
    if await _until(lambda: procedure.finished, device, STOP_TIMEOUT_S) is None:
        return "the procedure did not record its end after STOP"
    ended = procedure.cycles[-1].end_reason if procedure.cycles else None
    if ended != EndReason.STOPPED.name:  # the sample stands (the valve closed then), but it was not STOP that closed it
        return f"the freeze ended {ended}, not STOPPED"
    return ""


async def _until(predicate: Callable[[], bool], device: RemoteDevice, timeout_s: float) -> float | None:
    """Poll on the app's loop (yielding to it); when the predicate first held, on the simulator's clock."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.0005)
    return device.now()
