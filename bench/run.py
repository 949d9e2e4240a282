"""`givre bench --json`: speed and latency, measured against the simulator on a real pty.

A benchmark, not a test: it reports numbers and never fails on them. The host's own latencies are
measured on its monotonic clock around the real pyserial path (pty, link thread, simulator thread);
the figures that judge the host from the device's side (the STOP key to the valve, the heartbeat
gaps, the freezes' true error) end at the simulator's ground truth: when its valve model really
moved (``DeviceModel.valve_log``) and when its thread read each host frame (``on_host_frame``).
``--load N`` runs all of it with N busy processes competing for the cores (bench/load.py).
"""

from __future__ import annotations

import functools
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.clinic_day import clinic_day
from bench.figures import percentiles, timed_ms
from bench.load import busy_load
from bench.loop import gaps_ms, heartbeat_gaps
from bench.store import bench_event, measure_stores
from bench.tui import measure_tui
from controller.practice.billing import load_table
from controller.practice.export import checked_sessions, to_csv, to_fhir
from controller.practice.report import build_report
from controller.records.store import RecordStore
from firmware_bridge.codec import Frame, FrameDecoder, encode_frame
from firmware_bridge.conformance import run_conformance
from firmware_bridge.link import Link
from firmware_bridge.messages import (
    NOT_AVAILABLE_TEMP,
    PROTO_MAJOR,
    PROTO_MINOR,
    DeviceState,
    Event,
    EventCode,
    FreezeMode,
    Telemetry,
    TriggerMode,
)
from firmware_bridge.session import DeviceEventReceived
from sim.device import SimulatedDevice

WATCHDOG_MS = 250
HOST_TIMED_CAP_MS = 30_000  # the device's own cap on a host-timed freeze: far past any duration the host sleeps


def measure(quick: bool = False, load: int = 0, store_events: list[int] | None = None, store_only: bool = False) -> dict[str, object]:
    """Every figure, with ``load`` busy processes competing for the cores the whole time; with
    ``store_events``, the aged stores' figures too (bench/store.py), under the key "store"."""
    with busy_load(load):
        results: dict[str, object] = {"machine": _machine()} if store_only else _measure(quick)
        if store_events:
            results["store"] = measure_stores(store_events)
    results["load_processes"] = load
    return results


def _measure(quick: bool) -> dict[str, object]:
    n = 20 if quick else 200
    results: dict[str, object] = {"machine": _machine()}
    results["codec_frames_per_s"] = round(_codec_frames_per_s(0.2 if quick else 1.0))
    with _device_and_link() as (device, link):
        results.update(percentiles("roundtrip_ms", _roundtrips(link, n)))
        results.update(percentiles("stop_latency_ms", _stop_latencies(device, link, n // 2)))
        freezes = _freeze_errors(device, link, n // 4)
        results.update(percentiles("freeze_error_ms", freezes.device_measured))
        results.update(percentiles("freeze_true_error_ms", freezes.device_timed))
        results.update(percentiles("device_timed_error_ms", freezes.device_timed))
        results.update(percentiles("host_timed_error_ms", freezes.host_timed))
        results["valve_open_latency_ms"] = round(device.model.open_latency_s * 1000, 3)
        results["valve_close_latency_ms"] = round(device.model.close_latency_s * 1000, 3)
    watchdog = _watchdog_closes(5 if quick else 20)
    results.update(percentiles("watchdog_close_ms", watchdog))
    results["watchdog_timeout_ms"] = WATCHDOG_MS
    results["conformance_s"] = _conformance_seconds()
    with tempfile.TemporaryDirectory() as scratch:
        results.update(percentiles("record_event_ms", _record_appends(Path(scratch) / "bench.sqlite", n)))
        day = clinic_day(Path(scratch) / "day.sqlite", sessions=4 if quick else 40)
        results.update(_exports(Path(scratch) / "day.sqlite"))
    results["clinic_day_wall_s"] = day.wall_s
    loop = heartbeat_gaps(2 if quick else 8)
    tui = measure_tui(5 if quick else 50)
    results["tui_start_ms"] = round(tui.start_ms, 1)
    results.update(percentiles("tui_stop_ms", tui.key_to_text_ms))
    results.update(percentiles("stop_key_to_valve_closed_ms", tui.key_to_valve_closed_ms))
    results.update(percentiles("stop_key_to_valve_commanded_ms", tui.key_to_valve_commanded_ms))
    tui_gaps = gaps_ms(tui.heartbeat_arrivals)
    results["heartbeat_gap_ms_max"] = _max(loop.gaps_ms + tui_gaps)  # the worst the device saw, either run
    results["heartbeat_gap_ms_p99"] = percentiles("gap", loop.gaps_ms + tui_gaps)["gap_p99"]
    results["loop_heartbeat_gap_ms_max"] = _max(loop.gaps_ms)  # the clinic's loop alone, lesions with freezes
    results["tui_heartbeat_gap_ms_max"] = _max(tui_gaps)  # the same loop beside the UI, STOP keys mid-freeze
    # The same run's gaps as the host wrote them: the device-side figure above also holds the
    # simulator thread's own delays (it shares this process), this one only the host's.
    results["tui_host_heartbeat_gap_ms_max"] = round(tui.host_heartbeat_gap_ms_max, 3)
    results["heartbeat_watchdog_trips"] = loop.watchdog_trips + tui.watchdog_trips
    results["incidents"] = loop.incidents + tui.incidents  # lesions or samples that went wrong (the bench went on)
    results["clinic_day"] = {"sessions": day.sessions, "completed": day.completed, "freezes": day.freezes_recorded,
                             "duplicates": day.duplicate_results, "events": day.events, "frames_corrupted": day.frames_corrupted}
    results["samples"] = {"roundtrip": n, "stop": n // 2, "freeze": n // 4, "watchdog": len(watchdog), "record_event": n,
                          "tui_stop": len(tui.key_to_text_ms), "stop_key": len(tui.key_to_valve_closed_ms),
                          "heartbeat_lesions": loop.lesions, "heartbeat_lesions_completed": loop.lesions_completed,
                          "heartbeats": loop.frames + len(tui.heartbeat_arrivals)}
    return results


def _exports(db: Path) -> dict[str, float]:
    """The clinic day's whole store read back: each export verifies the chain first, as the CLI does."""
    table = load_table()
    with RecordStore(db, writer=False) as store:
        return {
            "export_fhir_ms": round(timed_ms(lambda: to_fhir(checked_sessions(store), table, store.read_photo)), 1),
            "export_csv_ms": round(timed_ms(lambda: to_csv(checked_sessions(store))), 1),
            "day_report_ms": round(timed_ms(lambda: build_report(store, date.today(), table)), 1),
        }


def _record_appends(db: Path, n: int) -> list[float]:
    """Durable appends (WAL, synchronous=FULL): each returns only once the event is on disk."""
    with RecordStore(db) as store:
        return [timed_ms(functools.partial(store.append, *bench_event(i), "S-bench")) for i in range(n)]


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _max(samples: list[float]) -> float | None:
    return round(max(samples), 3) if samples else None


def _codec_frames_per_s(seconds: float) -> float:
    """Encode and decode telemetry frames, the most frequent frame on the wire."""
    payload = Telemetry(123456, 7, DeviceState.FREEZING, 3, 1, 42, 5000, 5000, 4980, -8500, NOT_AVAILABLE_TEMP, 0).pack()
    decoder = FrameDecoder()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for seq in range(100):
            wire = encode_frame(Frame(PROTO_MAJOR, PROTO_MINOR, Telemetry.MSG_TYPE, 0, seq, 0, payload))
            decoder.feed(wire)
        count += 100
    return count / (time.perf_counter() - start)


@contextmanager
def _device_and_link(watchdog_ms: int = 1000) -> Iterator[tuple[SimulatedDevice, Link]]:
    with SimulatedDevice() as device, Link.open(device.serve_pty(), watchdog_ms=watchdog_ms) as link:
        yield device, link


def _roundtrips(link: Link, n: int) -> list[float]:
    return [timed_ms(link.counters) for _ in range(n)]


def _stop_latencies(device: SimulatedDevice, link: Link, n: int) -> list[float]:
    """STOP asked -> the device's 'valve closed' answer read back; the valve state is then checked."""
    samples: list[float] = []
    for _ in range(n):
        link.freeze(30_000)
        samples.append(timed_ms(link.stop))
        if device.model.valve_commanded:
            raise RuntimeError("the simulator's valve is still commanded open after STOP was answered")
    return samples


@dataclass(frozen=True, slots=True)
class FreezeErrors:
    device_measured: list[float]  # |what the device reports - requested|: its own clock, so 0 on the simulator
    device_timed: list[float]  # |the valve's real opening (the model's ground truth) - requested|, the device timing
    host_timed: list[float]  # the same truth for the baseline: a long device cap, the host sleeps, then STOP


def _freeze_errors(device: SimulatedDevice, link: Link, n: int) -> FreezeErrors:
    """Device-timed and host-timed freezes of 50-140 ms, alternated so both see the same machine."""
    figures = FreezeErrors([], [], [])
    for i in range(n):
        requested = 50 + 10 * (i % 10)
        figures.device_measured.append(abs(device_timed_freeze(link, requested).valve_open_ms - requested))
        figures.device_timed.append(abs(valve_open_ms(device) - requested))
        figures.host_timed.append(abs(host_timed_freeze(device, link, requested) - requested))
    return figures


def valve_open_ms(device: SimulatedDevice, timeout_s: float = 1.0) -> float:
    """How long the simulator's valve really stayed open, the last time it opened (once it has closed)."""
    opened_at, closed_at = _last_opening(device, timeout_s)
    return (closed_at - opened_at) * 1000


def host_timed_freeze(device: SimulatedDevice, link: Link, duration_ms: int, *, late_s: float = 0.0) -> float:
    """The baseline a host-timed design would give: open with a long device cap, sleep the duration
    on the host, STOP. Returns how long the valve really stayed open. ``late_s`` is a test's slow host."""
    link.freeze(HOST_TIMED_CAP_MS)
    time.sleep(duration_ms / 1000 + late_s)
    link.stop()
    return valve_open_ms(device)


def device_timed_freeze(  # noqa: PLR0913 - a FREEZE's mode and trigger and two optional observers, keyword-only
    link: Link, duration_ms: int, *, mode: FreezeMode = FreezeMode.TIMED, trigger: TriggerMode = TriggerMode.HOST,
    on_beat: Callable[[Link], None] | None = None, seen: list[Event] | None = None,
) -> Event:
    """One FREEZE, heartbeating until its FREEZE_DONE, which is returned. A measurement harness for the
    bench and the link's tests: anything but a clean report raises, nothing is reconciled here (the
    product's one path for that is controller/procedure/reconcile.py). ``seen`` collects the other events."""
    txn = link.freeze(duration_ms, mode, trigger)
    deadline = link.clock.monotonic() + link.clock.wall(duration_ms / 1000 + 2.0)
    while link.clock.monotonic() < deadline:
        link.heartbeat()
        if on_beat is not None:
            on_beat(link)
        item = link.next_event(link.heartbeat_period_s)
        if isinstance(item, DeviceEventReceived) and not item.earlier_session and item.event.code is EventCode.FREEZE_DONE \
                and item.event.freeze_txn == txn:
            return item.event
        if isinstance(item, DeviceEventReceived) and seen is not None:
            seen.append(item.event)
        if item is not None and not isinstance(item, DeviceEventReceived):
            raise RuntimeError(f"freeze txn {txn} lost its report: {item}")
    raise RuntimeError(f"no FREEZE_DONE for freeze txn {txn} ({duration_ms} ms)")


def _conformance_seconds() -> float:
    """Wall seconds of the whole conformance kit against a fresh simulator on a pty, timed around the kit."""
    with SimulatedDevice() as device:
        url = device.serve_pty()
        start = time.perf_counter()
        run_conformance(url)
        return round(time.perf_counter() - start, 2)


def _watchdog_closes(n: int) -> list[float]:
    """The host goes silent mid-freeze: last host byte -> valve physically closed."""
    samples: list[float] = []
    for _ in range(n):
        with SimulatedDevice() as device:
            link = Link.open(device.serve_pty(), watchdog_ms=WATCHDOG_MS)
            link.freeze(10_000)
            link.close(end_session=False)  # silence: no BYE, no frame, the port closed as a killed host's would be
            _, closed_at = _last_opening(device, 3.0)
            assert device.last_host_byte_at is not None
            samples.append((closed_at - device.last_host_byte_at) * 1000)
    return samples


def _last_opening(device: SimulatedDevice, timeout_s: float) -> tuple[float, float]:
    """When the simulator's valve last opened and closed (true seconds), once it has closed."""
    _wait(lambda: bool(device.model.valve_log) and device.model.valve_log[-1].closed_at is not None, timeout_s)
    edge = device.model.valve_log[-1]
    assert edge.closed_at is not None
    return edge.opened_at, edge.closed_at


def _wait(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the simulator did not reach the expected state in time")
        time.sleep(0.001)
