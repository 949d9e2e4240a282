"""Waiting for a condition by polling it, so that no test sleeps a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.procedure.driver import Procedure


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll a condition instead of sleeping a fixed time; fail with a message if it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.002)


def ticked(procedure: Procedure) -> bool:
    """One turn of the controller loop (the test is the loop here); True, to chain in a wait condition."""
    procedure.tick()
    return True
