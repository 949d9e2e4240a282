"""The controller's own loop for an interactive session: one thread that heartbeats the device and
runs the active procedure's ticks (except while a self-test or calibration step holds the device:
that step's own commands keep the device's watchdog fed, and this loop stands aside); between procedures it raises the alarms the link's
events call for (link lost, reboot, watchdog trip) and files an earlier session's events.

The UI never times anything and never drives the procedure: from its own thread it queues intents
(Procedure.request_arm, fire, mark_halo, confirm_thaw, acknowledge_alarms), sends STOP (which goes
straight to the device), and reads Procedure.view, the frozen ProcedureView this loop publishes after
each turn (docs/procedure.md). The procedure's live objects (its state, cycles, alarms) are this
loop's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from controller.procedure.alarms import AlarmManager
from controller.procedure.driver import Procedure
from firmware_bridge.link import Link, LinkDown
from firmware_bridge.messages import EventCode
from firmware_bridge.session import DeviceEventReceived, RebootDetected


class Supervisor:
    def __init__(self, link: Link | None, alarms: AlarmManager,
                 file_earlier: Callable[[DeviceEventReceived], None] | None = None) -> None:
        self.link = link
        self.alarms = alarms  # alarms raised between procedures (link lost, reboot, watchdog trip)
        self.file_earlier = file_earlier  # records an earlier session's event that comes between procedures
        self.procedure: Procedure | None = None
        self._stopping = threading.Event()
        self.paused = threading.Event()  # set while a self-test or calibration step owns the device (the loop falls silent)
        self._thread = threading.Thread(target=self._loop, name="givre-controller", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def attach(self, procedure: Procedure) -> None:
        self.procedure = procedure

    def close(self) -> None:
        procedure = self.procedure
        if procedure is not None and not procedure.finished:
            procedure.stop()
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            procedure = self.procedure
            if self.paused.is_set():
                self._stopping.wait(0.05)
                continue
            try:
                if procedure is not None and not procedure.finished:
                    procedure.tick()
                elif self.link is not None:
                    self._idle_tick(self.link)
                else:
                    self._stopping.wait(0.05)
            except Exception as exc:  # kept for the UI to show; the device watchdog is the backstop
                self.error = exc
                self._stopping.wait(0.2)

    def _idle_tick(self, link: Link) -> None:
        link.keep_alive(0)
        item = link.next_event(link.heartbeat_period_s)
        if isinstance(item, LinkDown):
            self.alarms.raise_("link_lost", item.error.problem)
        elif isinstance(item, RebootDetected):
            self.alarms.raise_("device_rebooted", f"boot {item.old_boot_count} -> {item.new_boot_count}")
        elif isinstance(item, DeviceEventReceived) and item.earlier_session:
            if self.file_earlier is not None:
                self.file_earlier(item)
        elif isinstance(item, DeviceEventReceived) and item.event.code is EventCode.WATCHDOG_TRIP:
            self.alarms.raise_("watchdog_trip")
