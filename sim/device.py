"""A simulated device served on a real pseudo-terminal (or TCP), with fault injection.

The firmware and physics run in one thread that also owns the pty master, exactly one process
boundary away from the host: the host opens the pty's path with pyserial as it would a USB port.
Test code drives the clinician's trigger and the faults through this class's methods, which are
thread-safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pty
import random
import select
import socket
import threading
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from firmware_bridge import messages
from firmware_bridge.clock import SYSTEM_CLOCK, Clock
from firmware_bridge.codec import FrameDecoder
from firmware_bridge.messages import Capability, Cryogen, DeviceKind
from sim.firmware import DEFECTS, LIES, Firmware, Identity, NonVolatile
from sim.model import DeviceModel, SensorFault

SPRAY_CAPABILITIES = Capability.PRESSURE_SENSOR | Capability.HAND_TRIGGER | Capability.HALO_TIMING | Capability.DEAD_MAN
PROBE_CAPABILITIES = (
    Capability.PRESSURE_SENSOR | Capability.TIP_THERMOCOUPLE | Capability.TISSUE_THERMOCOUPLE | Capability.FOOT_SWITCH
    | Capability.DEAD_MAN | Capability.HALO_TIMING
)
MAX_IDLE_WAIT_S = 0.02
FRAME_ENDS = 2  # a frame on the wire starts and ends with a 0x00 delimiter


@dataclass(slots=True)
class LinkFaults:
    """Wire-level faults, applied per frame in both directions (corruption flips a bit on the wire)."""

    drop_pct: float = 0.0
    corrupt_pct: float = 0.0
    delay_pct: float = 0.0
    delay_ms: float = 0.0
    dropped: int = 0
    corrupted: int = 0
    delayed: int = 0


@dataclass(order=True, slots=True)
class _Scheduled:
    at: float
    order: int
    action: Callable[[], None] = field(compare=False)


class _PtyEndpoint:
    def __init__(self) -> None:
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # before the host opens it: no echo, no CR/LF translation
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def fds(self) -> list[int]:
        return [self.master]

    def read(self, ready: list[int]) -> bytes:
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no host has the port open (we keep our slave fd open)
                return b""
            raise

    def write(self, data: bytes) -> bool:
        try:
            return os.write(self.master, data) == len(data)
        except (BlockingIOError, OSError):
            return False  # host not reading: the bytes are lost, as on a full UART

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)


class _TcpEndpoint:
    def __init__(self, host: str, port: int) -> None:
        self._server = socket.create_server((host, port))
        self._server.setblocking(False)
        self._client: socket.socket | None = None
        bound_host, bound_port = self._server.getsockname()[:2]
        self.path = f"socket://{bound_host}:{bound_port}"

    def fds(self) -> list[int]:
        return [self._server.fileno()] + ([self._client.fileno()] if self._client else [])

    def read(self, ready: list[int]) -> bytes:
        if self._server.fileno() in ready:
            client, _ = self._server.accept()
            if self._client is not None:
                self._client.close()  # one host at a time: the newest wins, as on a replugged cable
            client.setblocking(False)
            self._client = client
        if self._client is None or self._client.fileno() not in ready:
            return b""
        try:
            data = self._client.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self._client.close()
            self._client = None
        return data

    def drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def write(self, data: bytes) -> bool:
        if self._client is None:
            return False
        try:
            self._client.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._server.close()


class SimulatedDevice:
    def __init__(  # noqa: PLR0913 - every knob a test or `givre sim` turns, all keyword-only with the plain device as default
        self,
        *,
        kind: str = "spray",
        cryogen: str | None = None,
        serial: str = "SIM-0001",
        firmware_version: tuple[int, int, int] = (1, 0, 0),
        max_freeze_ms: int = 60_000,
        capabilities: Capability | None = None,
        clock: Clock = SYSTEM_CLOCK,
        drift_ppm: float = 0.0,
        cartridge_g: int = 23,
        seed: int = 0,
        proto_major: int | None = None,
        proto_minor: int | None = None,
        schema_hash: int | None = None,
        defects: Iterable[str] = (),
        lies: Iterable[str] = (),
    ) -> None:
        if kind not in ("spray", "probe"):
            raise ValueError(f"device kind {kind!r}: allowed values are 'spray' and 'probe'")
        defects = frozenset(defects)
        if not defects <= DEFECTS.keys():
            raise ValueError(f"defect {', '.join(sorted(defects - DEFECTS.keys()))}: allowed values are {', '.join(sorted(DEFECTS))}")
        lies = frozenset(lies)
        if not lies <= LIES.keys():
            raise ValueError(f"lie {', '.join(sorted(lies - LIES.keys()))}: allowed values are {', '.join(sorted(LIES))}")
        cryogen = cryogen or ("n2o" if kind == "spray" else "ln2")
        self.clock = clock
        self.drift_ppm = drift_ppm
        self.faults = LinkFaults()
        self._rng = random.Random(seed)
        self.model = DeviceModel(cryogen=cryogen, has_tissue_sensor=kind == "probe", seed=seed)
        self.model.load_cartridge(cartridge_g)
        identity = Identity(
            kind=DeviceKind.SPRAY if kind == "spray" else DeviceKind.PROBE,
            cryogen=Cryogen.N2O if cryogen == "n2o" else Cryogen.LN2,
            serial=serial,
            firmware=firmware_version,
            max_freeze_ms=max_freeze_ms,
            capabilities=capabilities if capabilities is not None else (SPRAY_CAPABILITIES if kind == "spray" else PROBE_CAPABILITIES),
        )
        if proto_major is not None:
            identity = dataclasses.replace(identity, proto_major=proto_major)
        if proto_minor is not None:  # e.g. 0 plays a 1.0 device: no BYE, events not bound to their session
            identity = dataclasses.replace(identity, proto_minor=proto_minor, schema_hash=messages.schema_hash(proto_minor))
        if schema_hash is not None:
            identity = dataclasses.replace(identity, schema_hash=schema_hash)
        self.nvm = NonVolatile()
        self.firmware = Firmware(identity, self.model, self.nvm)
        self.firmware.defects = defects  # deliberately broken behaviours, for the conformance kit's own tests
        for lie in sorted(lies):  # false figures on a valid wire, for the host's plausibility checks
            self.firmware.start_lying(lie)
        # In virtual time, at most 50 telemetry frames per second of wall time (the protocol's rate in real time).
        self.firmware.min_telemetry_period_ms = 20.0 * clock.scale if clock.scale > 1 else 0.0
        self._origin = clock.monotonic()
        self._device_ms = 0.0
        self._last_true_s = 0.0
        self._lock = threading.RLock()
        self._decoder = FrameDecoder()
        self._endpoint: _PtyEndpoint | _TcpEndpoint | None = None
        self._held: list[tuple[float, bytes]] = []  # delayed outgoing bytes, in order
        self._stalled_until = 0.0
        self._schedule: list[_Scheduled] = []
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_host_byte_at: float | None = None  # true seconds
        # Ground truth for the bench: called on the device thread with (true s, message type) of each host frame received.
        self.on_host_frame: Callable[[float, int], None] | None = None
        with self._lock:
            self.firmware.power_on(*self._now())

    # ---- serving ---------------------------------------------------------------------------------

    def serve_pty(self) -> str:
        """Open a pseudo-terminal and serve on it; returns the path a host opens."""
        return self._serve(_PtyEndpoint())

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on TCP; returns the socket:// URL a host opens."""
        return self._serve(_TcpEndpoint(host, port))

    @property
    def url(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the simulator is not serving")
        return self._endpoint.path

    def _serve(self, endpoint: _PtyEndpoint | _TcpEndpoint) -> str:
        self._endpoint = endpoint
        if self._thread is None:
            self._running.set()
            self._thread = threading.Thread(target=self._loop, name="givre-sim", daemon=True)
            self._thread.start()
        return endpoint.path

    def inject(self, fault: str) -> None:
        """One of FAULT_ACTIONS by name (the demo's fault panel, `givre sim --at`)."""
        FAULT_ACTIONS[fault](self)

    def close(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            if self._endpoint is not None:
                self._endpoint.close()
                self._endpoint = None

    def __enter__(self) -> SimulatedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- time ------------------------------------------------------------------------------------

    def now(self) -> float:
        """True simulation time in seconds since the device was created."""
        return self.clock.monotonic() - self._origin

    def _now(self) -> tuple[float, float]:
        """(device clock ms, true s). The device clock runs fast or slow by drift_ppm, corrected by
        the calibrated timer_ppm; it is integrated so a new calibration never makes it jump."""
        true_s = self.now()
        rate = (1.0 + self.drift_ppm / 1e6) * (1.0 + self.nvm.calibration.timer_ppm / 1e6)
        self._device_ms += (true_s - self._last_true_s) * 1000.0 * rate
        self._last_true_s = true_s
        return self._device_ms, true_s

    # ---- the device thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while self._running.is_set():
            with self._lock:
                device_ms, true_s = self._now()
                wait_ms = self.firmware.next_deadline_ms(device_ms) - device_ms
                if self._schedule:
                    wait_ms = min(wait_ms, (self._schedule[0].at - true_s) * 1000)
                endpoint = self._endpoint
                fds = endpoint.fds() if endpoint is not None and true_s >= self._stalled_until else []
            timeout = min(MAX_IDLE_WAIT_S, self.clock.real_seconds(max(0.0, wait_ms) / 1000))
            try:
                ready = select.select(fds, [], [], timeout)[0] if fds else []
            except (OSError, ValueError):
                ready = []
            if not fds:
                self._running.wait(timeout)
            with self._lock:
                self._step(ready)

    def _step(self, ready: list[int]) -> None:
        device_ms, true_s = self._now()
        while self._schedule and self._schedule[0].at <= true_s:
            self._schedule.pop(0).action()
            device_ms, true_s = self._now()
        out: list[bytes] = []
        if ready and self._endpoint is not None:
            data = self._endpoint.read(ready)
            if data:
                self.last_host_byte_at = true_s
                for frame in self._decoder.feed(data):
                    if self._lose_frame():
                        continue
                    if self.on_host_frame is not None:
                        self.on_host_frame(true_s, frame.msg_type)
                    out += self.firmware.on_frame(frame, device_ms, true_s)
        out += self.firmware.tick(device_ms, true_s)
        self._transmit(out, true_s)

    def _lose_frame(self) -> bool:
        roll = self._rng.random() * 100
        if roll < self.faults.drop_pct:
            self.faults.dropped += 1
            return True
        if roll < self.faults.drop_pct + self.faults.corrupt_pct:
            self.faults.corrupted += 1  # inbound corruption: the CRC would reject it
            return True
        return False

    def _transmit(self, frames: list[bytes], true_s: float) -> None:
        faults = self.faults
        for wire in frames:
            roll = self._rng.random() * 100
            if roll < faults.drop_pct:
                faults.dropped += 1
                continue
            sent = wire
            if roll < faults.drop_pct + faults.corrupt_pct:
                faults.corrupted += 1
                sent = _flip_bit(wire, self._rng)
            release = true_s
            if self._rng.random() * 100 < faults.delay_pct:
                faults.delayed += 1
                release = true_s + faults.delay_ms / 1000
            self._held.append((release, sent))
        while self._held and self._held[0][0] <= true_s:  # a serial stream never reorders
            _, wire = self._held.pop(0)
            if self._endpoint is not None and true_s >= self._stalled_until:
                self._endpoint.write(wire)

    # ---- test and demo API (thread-safe) ---------------------------------------------------------

    def press_trigger(self) -> None:
        with self._lock:
            self.firmware.trigger_held = True

    def release_trigger(self) -> None:
        with self._lock:
            self.firmware.trigger_held = False

    def reboot(self) -> None:
        """Reset the device: valve closed, session lost, boot counter + 1."""
        with self._lock:
            self.firmware.power_on(*self._now())

    def disconnect(self) -> None:
        """Unplug the cable: the host's port fails. The device keeps running on its own."""
        with self._lock:
            if self._endpoint is not None:
                self._endpoint.close()
                self._endpoint = None

    def drop_host(self) -> None:
        """TCP: cut the current host's connection (a pulled cable); the next host may connect again."""
        with self._lock:
            if isinstance(self._endpoint, _TcpEndpoint):
                self._endpoint.drop_client()

    def reconnect_pty(self) -> str:
        """Plug back in on a new pseudo-terminal (a new path, as a replugged USB port may get)."""
        with self._lock:
            return self._serve(_PtyEndpoint())

    def send_raw(self, wire: bytes) -> None:
        """Put bytes on the wire to the host as they are: a frame recorded earlier and delivered
        late (a buffer that held it across a reboot), or garbage. The device's state is untouched."""
        with self._lock:
            if self._endpoint is not None:
                self._endpoint.write(wire)

    def stall(self, seconds: float) -> None:
        """The device's link stops reading and writing for a while; its timers keep running."""
        with self._lock:
            self._stalled_until = self.now() + seconds

    def immerse(self, bath_c: float | None) -> None:
        """Put the probe's thermocouples in a reference bath (None takes them out)."""
        with self._lock:
            self.model.bath_c = bath_c

    def break_watchdog(self) -> None:
        """A defective device whose host-silence watchdog never fires (what the self-test must catch)."""
        with self._lock:
            self.firmware.defects |= {"no-watchdog"}

    def lie(self, lie: str) -> None:
        """Start one of sim.firmware.LIES (false figures, valid wire) until stop_lying()."""
        with self._lock:
            self.firmware.start_lying(lie)

    def stop_lying(self) -> None:
        """End every lie: the figures are true again from now on."""
        with self._lock:
            self.firmware.stop_lying()

    def set_silent(self, silent: bool = True) -> None:
        with self._lock:
            self.firmware.silent = silent

    def block_nozzle(self, blocked: bool = True) -> None:
        with self._lock:
            self.model.nozzle_blocked = blocked

    def empty_cartridge(self) -> None:
        with self._lock:
            self.model.empty_cartridge()

    def load_cartridge(self, size_g: int) -> None:
        with self._lock:
            self.model.load_cartridge(size_g)

    def stick_valve(self, position: str | None) -> None:
        """'open' or 'closed' to jam the valve there; None frees it."""
        if position not in ("open", "closed", None):
            raise ValueError(f"valve position {position!r}: allowed values are 'open', 'closed' or None")
        with self._lock:
            if position is None:
                self.model.release_stuck_valve(self.now())
            elif position == "closed":
                self.model.jam_closed(self.now())
            else:
                self.model.valve_stuck_open = True  # it will fail to close at the next close command

    def sensor_fault(self, sensor: str, fault: str) -> None:
        """sensor: 'tip' or 'tissue'; fault: 'open', 'short' or 'none'."""
        with self._lock:
            getattr(self.model, sensor).fault = SensorFault(fault)

    def at(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the device thread ``delay_s`` seconds of simulation time from now."""
        with self._lock:
            self._schedule.append(_Scheduled(self.now() + delay_s, len(self._schedule), action))
            self._schedule.sort()

    @property
    def valve_open(self) -> bool:
        with self._lock:
            return self.model.valve_open


def _flip_bit(wire: bytes, rng: random.Random) -> bytes:
    """One bit flipped between the frame's two 0x00 delimiters, which stay (the frame is lost, not merged)."""
    if len(wire) <= FRAME_ENDS:
        return wire
    data = bytearray(wire)
    index = rng.randrange(1, len(data) - 1)
    data[index] ^= 1 << rng.randrange(8)
    return bytes(data)


def _start_lie(lie: str) -> Callable[[SimulatedDevice], None]:
    return lambda device: device.lie(lie)


FAULT_ACTIONS: dict[str, Callable[[SimulatedDevice], None]] = {
    "disconnect": SimulatedDevice.disconnect,
    "reboot": SimulatedDevice.reboot,
    "silent": SimulatedDevice.set_silent,
    "block-nozzle": SimulatedDevice.block_nozzle,
    "empty-cartridge": SimulatedDevice.empty_cartridge,
    "valve-stuck-open": lambda d: d.stick_valve("open"),
    "valve-stuck-closed": lambda d: d.stick_valve("closed"),
    "tip-open": lambda d: d.sensor_fault("tip", "open"),
    "tip-short": lambda d: d.sensor_fault("tip", "short"),
    "tissue-open": lambda d: d.sensor_fault("tissue", "open"),
    "tissue-short": lambda d: d.sensor_fault("tissue", "short"),
    "stall": lambda d: d.stall(2.0),
    "press-trigger": SimulatedDevice.press_trigger,
    "release-trigger": SimulatedDevice.release_trigger,
    # Lying devices (sim.firmware.LIES): "lie-<name>" starts one, "stop-lying" ends them all.
    **{f"lie-{name}": _start_lie(name) for name in LIES},
    "stop-lying": SimulatedDevice.stop_lying,
}
