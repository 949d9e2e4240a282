"""A simulated device in a process of its own, for the figures that judge the host from the device's
side beside the UI (the STOP key to the valve, the heartbeat gaps).

In the host's process the simulator's thread shares the host's interpreter lock and collector
pauses: a late host and a late simulator then look the same, and the figure measures both. A real
device has its own processor; so does this one. The bench asks it for its ground truth over a pipe:
the valve's physical edges and the heartbeats it received, stamped by its own clock and sent as
the system's monotonic clock (scale 1), which the host's is too.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.loop import heartbeat_recorder
from sim.device import SimulatedDevice

ANSWER_TIMEOUT_S = 10.0
POLL_S = 0.0005  # the device process looks at its valve this often while asked to wait for an edge


@dataclass(frozen=True, slots=True)
class Edge:
    """A physical valve opening, and its closing once it closed (device clock, seconds)."""

    opened_at: float
    closed_at: float | None


class RemoteDevice:
    """The device process: started on entry (its pty path in ``url``), stopped on exit."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the host's threads or lock
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="givre-bench-device", daemon=True)
        self._lock = threading.Lock()
        self.url = ""
        self.close_latency_s = 0.0

    def __enter__(self) -> RemoteDevice:
        self._process.start()
        self.url, self.close_latency_s = self._ask("hello")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._ask("bye")
        finally:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()

    def now(self) -> float:
        return time.monotonic()  # the device's clock is the system's monotonic clock, in both processes

    def valve_open(self) -> bool:
        return bool(self._ask("valve_open"))

    def wait_valve(self, is_open: bool, timeout_s: float) -> Edge | None:
        """Wait (in the device process) until the valve is physically open / closed; the last edge, or
        None if it did not happen within the timeout."""
        answer = self._ask("wait_valve", is_open, timeout_s)
        return None if answer is None else Edge(*answer)

    def last_edge(self) -> Edge | None:
        answer = self._ask("last_edge")
        return None if answer is None else Edge(*answer)

    def heartbeat_arrivals(self) -> list[float]:
        return list(self._ask("heartbeats"))

    def watchdog_trips(self) -> int:
        return int(self._ask("trips"))

    def stall(self, seconds: float) -> None:
        self._ask("stall", seconds)

    def _ask(self, request: str, *args: object) -> Any:
        with self._lock:
            self._pipe.send((request, args))
            if not self._pipe.poll(ANSWER_TIMEOUT_S):
                raise TimeoutError(f"the bench's device process did not answer {request!r} within {ANSWER_TIMEOUT_S:g} s")
            return self._pipe.recv()


def _serve(pipe: Connection) -> None:
    """The device process: a SimulatedDevice on a pty, answering the bench's questions until 'bye'."""
    arrivals: list[float] = []
    with SimulatedDevice() as device:
        url = device.serve_pty()
        device.on_host_frame = heartbeat_recorder(arrivals)
        origin = time.monotonic() - device.now()  # the simulation's seconds count from its creation: to system time
        answers: dict[str, Callable[..., object]] = {
            "hello": lambda: (url, device.model.close_latency_s),
            "valve_open": lambda: device.valve_open,
            "wait_valve": lambda is_open, timeout_s: _system(_wait_valve(device, is_open, timeout_s), origin),
            "last_edge": lambda: _system(_last_edge(device), origin),
            "heartbeats": lambda: [origin + t for t in arrivals],
            "trips": lambda: device.firmware.watchdog_trips,
            "stall": device.stall,
        }
        while True:
            request, args = pipe.recv()
            if request == "bye":
                pipe.send(None)
                return
            pipe.send(answers[request](*args))


def _system(edge: tuple[float, float | None] | None, origin: float) -> tuple[float, float | None] | None:
    if edge is None:
        return None
    opened, closed = edge
    return origin + opened, None if closed is None else origin + closed


def _last_edge(device: SimulatedDevice) -> tuple[float, float | None] | None:
    log = device.model.valve_log
    return (log[-1].opened_at, log[-1].closed_at) if log else None


def _wait_valve(device: SimulatedDevice, is_open: bool, timeout_s: float) -> tuple[float, float | None] | None:
    deadline = time.monotonic() + timeout_s
    while device.valve_open is not is_open:
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
    return _last_edge(device)
