"""`givre bench --load N`: N busy processes (pure CPU loops) competing with the host for the cores
while the measurements run, as a loaded laptop would (a browser, an antivirus scan, a video call).

Processes, not threads: a thread would only compete for the host's own interpreter lock, which
measures Python, not a machine under load. They are spawned (not forked: the host already runs
threads) and stopped, then joined, when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from multiprocessing.synchronize import Semaphore as SemaphoreType

START_TIMEOUT_S = 30.0  # a spawned interpreter starts in well under a second, even on a loaded machine
STOP_POLL_EVERY = 100_000  # loop turns between two looks at the stop flag (a few ms of pure CPU)
JOIN_TIMEOUT_S = 2.0


def spin(stop: EventType, ready: SemaphoreType) -> None:
    """One core's worth of pure CPU until told to stop (the child process's target)."""
    ready.release()
    x = 0
    while not stop.is_set():
        for i in range(STOP_POLL_EVERY):
            x = (x + i) % 1_000_003


@contextmanager
def busy_load(processes: int) -> Iterator[list[BaseProcess]]:
    """Start ``processes`` busy loops and wait until each spins; yields them and stops them on leaving the block."""
    if processes <= 0:
        yield []
        return
    context = multiprocessing.get_context("spawn")
    stop, ready = context.Event(), context.Semaphore(0)
    workers: list[BaseProcess] = [context.Process(target=spin, args=(stop, ready), name=f"givre-bench-load-{n}", daemon=True)
                                  for n in range(processes)]
    try:
        for worker in workers:
            worker.start()
        for _ in workers:  # measure only once every loop is spinning
            if not ready.acquire(timeout=START_TIMEOUT_S):
                raise RuntimeError(f"a busy-load process did not start within {START_TIMEOUT_S:g} s")
        yield workers
    finally:
        stop.set()
        for worker in workers:
            worker.join(JOIN_TIMEOUT_S)
            if worker.is_alive():
                worker.terminate()  # only our own children, by their handle
                worker.join(JOIN_TIMEOUT_S)
