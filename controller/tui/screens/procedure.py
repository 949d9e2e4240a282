"""The treatment screen: one lesion's freeze-thaw cycles, readable at a metre, STOP on space."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Digits, Footer, ProgressBar, Sparkline, Static

from controller.clinic import Clinic
from controller.procedure.driver import Procedure, StartRefused
from controller.procedure.states import State
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.summary import SummaryScreen
from controller.tui.text import PHASES
from controller.tui.widgets.alarm_bar import AlarmBar
from controller.tui.widgets.title_bar import TitleBar
from firmware_bridge.messages import TriggerMode
from firmware_bridge.session import TelemetryReceived
from firmware_bridge.units import available_u16, celsius, date_of_day
from profiles.schema import DeviceKindName

REFRESH_S = 0.1
SPARK_SAMPLES = 60  # 6 s of readings at the refresh rate
VALVE_SENSED_OPEN = 0b10  # Telemetry.valve bit1


class ProcedureScreen(GivreScreen):
    """Phase, countdown and readings, refreshed from the live procedure and link ten times a
    second; the keys send intents to the procedure, which the controller's thread drives."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "stop", "STOP", key_display="space/esc", show=True, priority=True),
        Binding("escape", "stop", "STOP", show=False, priority=True),
        Binding("a", "arm", "Arm", show=True),
        Binding("f", "fire", "Fire", show=True),
        Binding("h", "halo", "Mark halo", show=True),
        Binding("enter", "thaw_done", "Thaw complete", show=True, priority=True),
        Binding("k", "acknowledge", "Ack alarms", show=True),
        Binding("s", "summary", "Summary", show=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._samples: list[float] = []
        self._rang_for: set[tuple[int, str]] = set()
        self._summary_shown = False

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield AlarmBar(id="alarms")
        with Horizontal(id="top"):
            yield Digits("--.-", id="countdown")
            with Vertical():
                yield Static("", id="phase", classes="phase-idle", markup=False)
                yield Static("", id="cycle", markup=False)
                yield Static("", id="gas", markup=False)
        yield ProgressBar(total=100, show_eta=False, id="progress")
        with Horizontal(id="spark-row"):
            yield Sparkline([], id="spark")
            yield Static("", id="reading", markup=False)
        yield Static("", id="checklist", markup=False)
        yield Static("", id="message", markup=False)
        yield Static("■ STOP: space or escape, any time, no confirmation", id="stop-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#checklist", Static).update(checklist(self.app.clinic))
        self.set_interval(REFRESH_S, self.refresh_view)

    @property
    def procedure(self) -> Procedure:
        procedure = self.app.clinic.procedure
        assert procedure is not None  # the lesion screen attached it before pushing this screen
        return procedure

    def action_stop(self) -> None:
        """STOP in any state (it disarms an armed lesion); mid-freeze the app's own STOP binding takes the key first."""
        self.show_stop(self.procedure.stop())

    def show_stop(self, said: str) -> None:
        """What the device said to STOP."""
        self.query_one("#message", Static).update(f"■ STOP: {said}")

    def _refused_while_measuring(self) -> bool:
        """No arm or fire while a self-test or calibration step has the device (the message names only the self-test)."""
        if self.app.clinic.device_busy:
            self.query_one("#message", Static).update("✗ the self-test is using the device: wait for it to finish")
            return True
        return False

    def action_arm(self) -> None:
        if self._refused_while_measuring():
            return
        try:
            plan = self.procedure.arm()
        except StartRefused as exc:
            self.query_one("#message", Static).update("✗ cannot arm:\n" + "\n".join(f"  - {r}" for r in exc.reasons))
            return
        except Exception as exc:  # any refusal is shown, never a traceback
            self.query_one("#message", Static).update(f"✗ cannot arm: {exc}")
            return
        hold = "hold the trigger" if self.procedure.trigger is TriggerMode.DEAD_MAN else "press the trigger"
        how = hold if self.procedure.trigger is not TriggerMode.HOST else "press f to fire"
        self.query_one("#message", Static).update(
            f"ARMED: {plan.cycles} cycle(s) of {plan.dose.effective_ms / 1000:g} s (limited by {plan.dose.limited_by}); {how}"
            + "".join(f"\n! {w}" for w in self.procedure.warnings)
        )

    def action_fire(self) -> None:
        if not self._refused_while_measuring():
            self.procedure.fire()

    def action_halo(self) -> None:
        self.procedure.mark_halo()

    def action_thaw_done(self) -> None:
        self.procedure.confirm_thaw()

    def action_acknowledge(self) -> None:
        self.procedure.acknowledge_alarms()
        self.app.clinic.alarms.acknowledge_all()

    def action_summary(self) -> None:
        if self.procedure.finished:
            self.app.push_screen(SummaryScreen())

    def refresh_view(self) -> None:
        clinic = self.app.clinic
        p = self.procedure
        word, css = PHASES[p.state]
        phase = self.query_one("#phase", Static)
        phase.set_classes(css)
        phase.update(f"{'❄' if p.state is State.FREEZING else '●'} {word}")
        total = p.plan.cycles if p.plan else (p.requested_cycles or p.profile.cycles)
        self.query_one("#cycle", Static).update(f"cycle {max(1, len(p.cycles))}/{total}   {p.profile.name_fr} / {p.profile.name_en}")
        latest = clinic.link.latest_telemetry() if clinic.link else None
        seconds, fraction = self._countdown(p, latest)
        self.query_one("#countdown", Digits).update(f"{seconds:04.1f}" if seconds is not None else "--.-")
        self.query_one("#progress", ProgressBar).update(progress=round(fraction * 100))
        self._show_readings(latest)
        if p.status_text:
            self.query_one("#message", Static).update(p.status_text)
        self._bell(p)
        if p.finished and self.app.screen is self and not self._summary_shown:
            self._summary_shown = True
            self.app.push_screen(SummaryScreen())

    def _countdown(self, p: Procedure, latest: TelemetryReceived | None) -> tuple[float | None, float]:
        """Seconds left and fraction done, from the device's telemetry (freeze) or the controller (thaw)."""
        if p.state is State.FREEZING and latest is not None:
            t = latest.telemetry
            total = t.elapsed_ms + t.remaining_ms
            return t.remaining_ms / 1000, (t.elapsed_ms / total if total else 0.0)
        if p.state is State.THAWING:
            left, waiting = p.thaw_remaining()
            thaw_total = p.profile.thaw.min_s if p.profile.thaw else 0
            self.query_one("#message", Static).update(
                ("waiting for " + waiting if waiting else "thaw time done: press enter when the thaw is complete")
                if left <= 0 else f"THAW: {left:.0f} s left before the next cycle")
            return left, (1 - left / thaw_total) if thaw_total else 1.0
        return None, 1.0 if p.state is State.COMPLETED else 0.0

    def _show_readings(self, latest: TelemetryReceived | None) -> None:
        if latest is None:
            self.query_one("#reading", Static).update("no device data" if self.app.clinic.link else "manual: no sensors")
            return
        t = latest.telemetry
        tissue, tip, pressure_kpa = celsius(t.tissue_cdeg), celsius(t.tip_cdeg), available_u16(t.pressure_kpa)
        parts: list[str] = []
        value = tissue  # the sparkline follows the tissue, or the gas pressure on a device without a tissue probe
        if tissue is not None:
            parts.append(f"tissue {tissue:6.1f} °C")
        if tip is not None:
            parts.append(f"tip {tip:6.1f} °C")
        if pressure_kpa is not None:
            parts.append(f"gas {pressure_kpa / 100:4.1f} bar")
            value = pressure_kpa / 100 if value is None else value
        if value is not None:
            self._samples = [*self._samples, value][-SPARK_SAMPLES:]
            self.query_one("#spark", Sparkline).data = self._samples
        valve = "valve OPEN" if t.valve & VALVE_SENSED_OPEN else "valve closed"
        self.query_one("#reading", Static).update(" · ".join([*parts, valve]))
        status = self.procedure.ledger.status() if self.app.clinic.device_kind is DeviceKindName.SPRAY else None
        self.query_one("#gas", Static).update(
            f"cartridge: {status.remaining_s:.0f} s left (~{status.estimated_lesions_left} lesions)" if status else "")

    def _bell(self, p: Procedure) -> None:
        """Ring once at each cycle's start and once at its end, if the bell is on."""
        if not self.app.clinic.bell or not p.cycles:
            return
        key = (len(p.cycles), "end" if p.cycles[-1].end_reason else "start")
        if key not in self._rang_for:
            self._rang_for.add(key)
            self.app.bell()


def checklist(clinic: Clinic) -> str:
    """What the clinician checks before arming: patient and site, profile, cartridge, calibration, the keys."""
    p = clinic.procedure
    assert p is not None and clinic.treatment is not None
    lines = [f"✓ patient {clinic.treatment.info.patient}, site {p.lesion.site.describe()} ({p.lesion.site.zone.value})",
             f"✓ profile {p.profile.id}"]
    if clinic.device_kind is DeviceKindName.SPRAY:
        status = p.ledger.status()
        lines.append(f"{'✓' if status else '✗'} cartridge: " + (f"{status.remaining_s:.0f} s left" if status else "none registered (c)"))
    cal = p.calibration
    lines.append("! calibration: " + ("none recorded" if cal is None or not cal.due_on_day else f"due {date_of_day(cal.due_on_day)}"))
    lines.append("a: ARM, then f: FIRE" + (" (or the device trigger)" if clinic.trigger is not TriggerMode.HOST else ""))
    return "\n".join(lines)
