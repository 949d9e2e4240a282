"""`givre bench --load N`: N busy processes (pure CPU loops) competing with the host for the cores
while the measurements run, as a loaded laptop would (a browser, an antivirus scan, a video call).

Processes, not threads: a thread would only compete for the host's own interpreter lock, which
measures Python, not a machine under load. Each is a fresh interpreter running a few lines (not
multiprocessing's spawn, which re-imports the caller's main module, nor fork, which copies a host
that already runs threads). Each says when it spins, and ends by itself if the bench dies before
stopping it (its parent changes), so a killed bench leaves no loop behind.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STOP_TIMEOUT_S = 2.0
READY = b"r"
SPIN = f"""
import os, sys
parent = os.getppid()
sys.stdout.buffer.write({READY!r}); sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(200_000):  # a few ms of pure CPU between two looks at the parent
        pass
"""


@contextmanager
def busy_load(processes: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``processes`` busy loops and wait until each spins; yields them and stops them (our own
    children, by their handles) on leaving the block, whatever happened inside it."""
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(processes):
            workers.append(subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
        for worker in workers:  # measure only once every loop is spinning
            assert worker.stdout is not None
            if worker.stdout.read(len(READY)) != READY:
                raise RuntimeError(f"a busy-load process ended before it started spinning (exit code {worker.poll()})")
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(STOP_TIMEOUT_S)
            if worker.stdout is not None:
                worker.stdout.close()
