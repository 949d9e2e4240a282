"""An injectable clock shared by the host and the simulator.

``Clock(scale=1)`` is wall time. ``Clock(scale=50)`` runs virtual time 50 times faster than the
wall so a test can run an hour of device time in about a minute and a clinic day in seconds:
every timeout, heartbeat period and device timer reads this clock, so all of them scale together.
Nothing under test calls ``time.sleep`` directly.
"""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"clock scale must be > 0, got {scale}")
        self.scale = scale
        self._origin_real = time.monotonic()

    def monotonic(self) -> float:
        """Seconds of (virtual) time; only differences are meaningful."""
        return self._origin_real + (time.monotonic() - self._origin_real) * self.scale

    def real_seconds(self, seconds: float) -> float:
        """Wall seconds that ``seconds`` of this clock's time take, for OS-level timeouts."""
        return max(0.0, seconds / self.scale)

    def wall(self, seconds: float) -> float:
        """``seconds`` of wall time expressed in this clock's time.

        Limits that guard against the host's own scheduling (retransmission, request timeouts,
        staleness) keep their wall-time value in virtual time: the operating system does not speed up.
        """
        return seconds * self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(self.real_seconds(seconds))

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(None if timeout is None else self.real_seconds(timeout))


SYSTEM_CLOCK = Clock()
