"""Physics of the simulated device: valve, cryogen supply, pressure, thermocouples. No I/O.

Figures marked SHEET come from the practice sheet (cartridge sizes and seconds). Everything
else here is an illustrative model constant, chosen to give plausible curves for testing the
software; none of it is a clinical figure. See docs/simulator.md.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

BODY_C = 37.0
ROOM_C = 22.0
# Boiling points at 1 atm (domain.md §1.1): N2O about -88.5 C, liquid nitrogen -195.8 C.
CRYOGEN_TIP_C = {"n2o": -89.0, "ln2": -196.0}
# N2O vapour pressure is about 50 bar at 20 C while liquid remains (domain.md §2, Porter Nitronox
# manuals); the gauge then says nothing until the liquid is gone. 500 kPa for an LN2 dewar is an
# illustrative working pressure.
SUPPLY_KPA = {"n2o": 5000.0, "ln2": 500.0}
FLOWING_PRESSURE_FRACTION = 0.6  # pressure seen behind the valve while gas flows (illustrative)
LIQUID_GONE_FRACTION = 0.10  # below this fraction left, pressure falls toward zero
# SHEET: 8 g = 120 s, 16 g = 140 s, 23 g = 350 s of spray ("durée maximum des cartouches").
CARTRIDGE_SECONDS = {8: 120.0, 16: 140.0, 23: 350.0}
TIP_TAU_S = 1.5
TISSUE_TAU_S = 15.0
TISSUE_FRACTION_OF_TIP = 0.4  # the tissue thermocouple settles toward 0.4 x tip temperature
WARM_TIP_TAU_S = 5.0
WARM_TISSUE_TAU_S = 30.0
SENSOR_NOISE_C = 0.1


class SensorFault(enum.Enum):
    NONE = "none"
    OPEN = "open"  # broken wire: no reading
    SHORT = "short"  # shorted junction: reads the cold-junction (room) temperature


@dataclass(slots=True)
class Cartridge:
    size_g: float
    nominal_s: float
    remaining_g: float

    @classmethod
    def new(cls, size_g: int) -> Cartridge:
        if size_g not in CARTRIDGE_SECONDS:
            raise ValueError(f"cartridge size {size_g} g: allowed sizes are {sorted(CARTRIDGE_SECONDS)} g")
        return cls(float(size_g), CARTRIDGE_SECONDS[size_g], float(size_g))

    @property
    def fraction_left(self) -> float:
        return self.remaining_g / self.size_g


@dataclass(slots=True)
class ThermocoupleCal:
    """What the sensor reads, given the truth: raw = true * gain + offset (the error to calibrate away)."""

    gain: float = 1.0
    offset_c: float = 0.0
    fault: SensorFault = SensorFault.NONE

    def read(self, true_c: float, rng: random.Random) -> float | None:
        if self.fault is SensorFault.OPEN:
            return None
        if self.fault is SensorFault.SHORT:
            return ROOM_C
        return true_c * self.gain + self.offset_c + rng.gauss(0.0, SENSOR_NOISE_C)


@dataclass(slots=True)
class ValveEdge:
    """Ground truth for tests: when the valve really moved, in true (simulation) seconds."""

    opened_at: float
    closed_at: float | None = None


@dataclass
class DeviceModel:
    cryogen: str = "n2o"
    has_tissue_sensor: bool = False
    open_latency_s: float = 0.015
    close_latency_s: float = 0.010
    flow_g_per_s: float | None = None  # None: the cartridge's nominal rate
    seed: int = 0
    cartridge: Cartridge = field(default_factory=lambda: Cartridge.new(23))
    tip: ThermocoupleCal = field(default_factory=ThermocoupleCal)
    tissue: ThermocoupleCal = field(default_factory=ThermocoupleCal)
    nozzle_blocked: bool = False
    valve_stuck_open: bool = False
    valve_stuck_closed: bool = False
    bath_c: float | None = None  # calibration: the probe sits in a reference bath at this temperature

    def __post_init__(self) -> None:
        if self.cryogen not in CRYOGEN_TIP_C:
            raise ValueError(f"cryogen {self.cryogen!r}: allowed values are {sorted(CRYOGEN_TIP_C)}")
        self.rng = random.Random(self.seed)
        self.valve_commanded = False
        self.valve_open = False
        self._transitions: list[tuple[float, bool]] = []  # (when, open?) in command order
        self.tip_c = BODY_C
        self.tissue_c = BODY_C
        self.valve_log: list[ValveEdge] = []
        self._now = 0.0

    def load_cartridge(self, size_g: int) -> None:
        self.cartridge = Cartridge.new(size_g)

    def empty_cartridge(self) -> None:
        self.cartridge.remaining_g = 0.0

    def command_valve(self, open_: bool, now: float) -> None:
        if open_ == self.valve_commanded:
            return
        self.valve_commanded = open_
        self._transitions.append((now + (self.open_latency_s if open_ else self.close_latency_s), open_))

    @property
    def flowing(self) -> bool:
        return self.valve_open and not self.nozzle_blocked and self.cartridge.remaining_g > 0

    @property
    def pressure_kpa(self) -> float:
        fraction = self.cartridge.fraction_left
        static = SUPPLY_KPA[self.cryogen] * min(1.0, fraction / LIQUID_GONE_FRACTION)
        return static * (FLOWING_PRESSURE_FRACTION if self.flowing else 1.0)

    def _rate_g_per_s(self) -> float:
        if self.flow_g_per_s is not None:
            return self.flow_g_per_s
        return self.cartridge.size_g / self.cartridge.nominal_s

    def step(self, now: float) -> None:
        """Advance the physics to true time ``now`` (seconds)."""
        dt = max(0.0, now - self._now)
        self._now = now
        self._move_valve(now)
        if self.flowing:
            self.cartridge.remaining_g = max(0.0, self.cartridge.remaining_g - self._rate_g_per_s() * dt)
        if self.flowing:
            tip_target, tip_tau = CRYOGEN_TIP_C[self.cryogen], TIP_TAU_S
            tissue_target, tissue_tau = TISSUE_FRACTION_OF_TIP * tip_target, TISSUE_TAU_S
        else:
            tip_target, tip_tau = BODY_C, WARM_TIP_TAU_S
            tissue_target, tissue_tau = BODY_C, WARM_TISSUE_TAU_S
        self.tip_c += (tip_target - self.tip_c) * min(1.0, dt / tip_tau)
        self.tissue_c += (tissue_target - self.tissue_c) * min(1.0, dt / tissue_tau)
        if self.bath_c is not None:
            self.tip_c = self.tissue_c = self.bath_c

    def _move_valve(self, now: float) -> None:
        while self._transitions and self._transitions[0][0] <= now:
            moved_at, target = self._transitions.pop(0)
            if (target and self.valve_stuck_closed) or (not target and self.valve_stuck_open):
                continue
            if target != self.valve_open:
                self.valve_open = target
                if target:
                    self.valve_log.append(ValveEdge(moved_at))
                elif self.valve_log:
                    self.valve_log[-1].closed_at = moved_at

    def jam_closed(self, now: float) -> None:
        """The valve seizes shut, wherever it was: gas stops even though it is commanded open."""
        self.valve_stuck_closed = True
        if self.valve_open:
            self.valve_open = False
            if self.valve_log:
                self.valve_log[-1].closed_at = now

    def release_stuck_valve(self, now: float) -> None:
        """A technician frees the valve: it follows its command again."""
        self.valve_stuck_open = self.valve_stuck_closed = False
        self._transitions.append((now, self.valve_commanded))

    def read_tip(self) -> float | None:
        return self.tip.read(self.tip_c, self.rng)

    def read_tissue(self) -> float | None:
        return self.tissue.read(self.tissue_c, self.rng) if self.has_tissue_sensor else None
