"""How every bench figure is taken from its samples: one timing, one pair of percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed_ms(action: Callable[[], object]) -> float:
    """Milliseconds ``action`` took on the host's performance counter."""
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def p99(samples: list[float]) -> float:
    """The 99th percentile (nearest rank): with 100 samples, the second slowest."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def percentiles(prefix: str, samples: list[float]) -> dict[str, float | None]:
    """p50 and p99; None when no sample could be taken (the incidents say why)."""
    if not samples:
        return {f"{prefix}_p50": None, f"{prefix}_p99": None}
    return {f"{prefix}_p50": round(statistics.median(samples), 3), f"{prefix}_p99": round(p99(samples), 3)}
