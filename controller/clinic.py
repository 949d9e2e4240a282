"""The application service: everything one running Givre shares (the store, the config, the
profiles, the device link, the supervisor loop, the open session and lesion). The UI, the bench
and the tests build it the same way; it knows nothing of any screen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from controller.config import Config
from controller.device import selftest
from controller.practice.billing import CcamTable, load_table
from controller.procedure.alarms import AlarmManager, Mode
from controller.procedure.driver import Procedure
from controller.procedure.gates import kind_name
from controller.procedure.recovery import connect, file_device_event, open_owner, recover
from controller.procedure.supervisor import Supervisor
from controller.procedure.treatment import Treatment, calibration_record
from controller.records.store import RecordStore
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import TriggerMode
from firmware_bridge.session import DeviceEventReceived
from firmware_bridge.transport import PortInfo, list_ports
from profiles.library import Library
from profiles.schema import DeviceKindName


class Simulator(Protocol):
    """The embedded simulator as the clinic sees it (demo mode): where it serves, its faults, a new
    cartridge screwed on (the demo's loads go to the device as a clinician's hands would), closing it."""

    def serve_pty(self) -> str: ...

    def inject(self, fault: str) -> None: ...

    def load_cartridge(self, size_g: int) -> None: ...

    def close(self) -> None: ...


SimulatorFactory = Callable[[str, Clock], Simulator]
"""Builds the embedded simulator of a device kind ("spray", "probe") on a clock; given by the launcher."""


@dataclass
class Clinic:
    """Everything the screens share: the store, the device link, the controller loop, the session."""

    store: RecordStore
    config: Config
    library: Library
    link: Link | None
    clock: Clock = SYSTEM_CLOCK
    device: Simulator | None = None  # the embedded simulator in demo mode (for the fault panel)
    trigger: TriggerMode = TriggerMode.HOST
    bell: bool = True
    alarms: AlarmManager = field(init=False)
    supervisor: Supervisor = field(init=False)
    treatment: Treatment | None = None
    procedure: Procedure | None = None
    recovered: list[str] = field(default_factory=list)
    calibration_status: str = "unknown"
    selftest_on_connect: bool = True  # the UI runs run_selftest after each connect (the bench and some tests turn it off)
    selftest_lines: list[str] = field(default_factory=list)
    last_operator: str = ""  # the UI fills it in for the next session: one GP treats patient after patient
    billing_table: CcamTable = field(default_factory=load_table)
    simulator_factory: SimulatorFactory | None = None  # offers the embedded simulator on the connect screen
    notices: list[str] = field(default_factory=list)  # warnings the UI shows once it opens (a store folder others can write)

    def __post_init__(self) -> None:
        self.alarms = AlarmManager(self._record_alarm, Mode.TREATMENT)
        self.supervisor = Supervisor(self.link, self.alarms, self._file_earlier)

    def _record_alarm(self, kind: str, payload: dict[str, object]) -> None:
        """An alarm raised between procedures belongs to no session."""
        self.store.append(kind, payload, None)

    def connect(self, link: Link) -> None:
        """Use a freshly opened link; close any unfinished session from a killed host first. The
        caller runs the pre-use self-test (run_selftest, blocking) if selftest_on_connect."""
        self.link = link
        self.supervisor.link = link
        self.recovered = [r.line() for r in recover(self.store, link, early_events_s=0)]
        cal = calibration_record(link.read_calibration())
        self.calibration_status = f"{cal['status']}" + (f", due {cal['due_on']}" if cal["due_on"] else "")

    def _file_earlier(self, item: DeviceEventReceived) -> None:
        """Under the session it was raised in while that session is still open (its recovery can use it)."""
        file_device_event(self.store, item, self.link.identity if self.link else None, open_owner(self.store, item.device_session))

    @property
    def device_busy(self) -> bool:
        """A self-test or calibration step has the device (see measuring)."""
        return self.supervisor.paused.is_set()

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """The device to a self-test or calibration step alone: the supervisor falls silent until the
        block ends, so its heartbeats and ticks never interleave with the measurement's commands."""
        self.supervisor.paused.set()
        try:
            yield
        finally:
            self.supervisor.paused.clear()

    def run_selftest(self) -> None:
        """The pre-use self-test, blocking for a few seconds (the UI runs it in a worker thread):
        selftest_lines say it is running, then hold each check and the verdict. Does nothing
        without a device, or while another measurement has it."""
        link = self.link
        if link is None or self.device_busy:
            return
        with self.measuring():
            self.selftest_lines = [f"self-test running (a few seconds; the device sprays {selftest.VALVE_CLICK_MS} ms)..."]
            try:
                checks = selftest.run_selftest(link, self.store, self.config)
                self.selftest_lines = [*(c.line() for c in checks), f"self-test {selftest.overall(checks).value}"]
            except Exception as exc:  # shown on screen, never a traceback
                self.selftest_lines = [f"self-test could not run: {exc}"]

    def open_simulator(self, kind: str) -> str:
        """Start the embedded simulator of this kind; returns the pty to connect to."""
        if self.simulator_factory is None:
            raise RuntimeError("no embedded simulator in this build of the clinic")
        self.device = self.simulator_factory(kind, self.clock)
        return self.device.serve_pty()

    @property
    def device_kind(self) -> DeviceKindName:
        return kind_name(self.link.identity.kind if self.link and self.link.identity else None)

    def serial_ports(self) -> list[PortInfo]:
        """The machine's serial ports, for the connect screen."""
        return list_ports()

    def open_port(self, port: str) -> Link:
        """Open and handshake a device on this port (what an earlier host left open is settled by connect())."""
        return connect(port, self.clock)
