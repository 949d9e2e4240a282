"""The treatment screen: one lesion's freeze-thaw cycles, readable at a metre, STOP on space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Digits, Footer, ProgressBar, Sparkline, Static

from controller.clinic import Clinic
from controller.procedure.driver import Procedure
from controller.procedure.states import TERMINAL, State
from controller.procedure.view import ProcedureView
from controller.records.ledger import CartridgeLedger
from controller.tui.screens.base import GivreScreen
from controller.tui.screens.summary import SummaryScreen
from controller.tui.text import PHASES
from controller.tui.widgets.alarm_bar import AlarmBar
from controller.tui.widgets.title_bar import TitleBar
from firmware_bridge.messages import TriggerMode
from firmware_bridge.units import date_of_day
from profiles.schema import DeviceKindName

REFRESH_S = 0.1
SPARK_SAMPLES = 60  # 6 s of readings at the refresh rate


class ProcedureScreen(GivreScreen):
    """Phase, countdown and readings, rendered ten times a second from the procedure's published view
    (one frozen ProcedureView a refresh, never the procedure's live objects); the keys queue intents
    (arm included) for the controller's thread, which drives the procedure. STOP goes to the device at once."""

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
        self._note = ""  # what this screen said itself (the device's answer to STOP, the self-test has the device)
        self._status = ""  # the view's latest status, and the state it was first seen in (shown only in that state)
        self._status_state = State.IDLE
        self._how = ""  # how this lesion's cycles are fired (the trigger mode)
        self._checklist: Checklist | None = None  # read as the screen opens

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
        self._checklist = checklist(self.app.clinic)
        trigger = self.procedure.trigger  # the lesion's trigger mode: fixed when the procedure was built
        hold = "hold the trigger" if trigger is TriggerMode.DEAD_MAN else "press the trigger"
        self._how = hold if trigger is not TriggerMode.HOST else "press f to fire"
        self.refresh_view()
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
        self._note = f"■ STOP: {said}"
        self.query_one("#message", Static).update(self._note)

    def _refused_while_measuring(self) -> bool:
        """No arm or fire while a self-test or calibration step has the device (the message names only the self-test)."""
        if self.app.clinic.device_busy:
            self._note = "✗ the self-test is using the device: wait for it to finish"
            return True
        return False

    def action_arm(self) -> None:
        """Queue the ARM: the loop runs the start gate; the next views say ARMED, or REFUSED with every reason."""
        self._note = ""
        if not self._refused_while_measuring():
            self.procedure.request_arm()

    def action_fire(self) -> None:
        self._note = ""
        if not self._refused_while_measuring():
            self.procedure.fire()

    def action_halo(self) -> None:
        self._note = ""
        self.procedure.mark_halo()

    def action_thaw_done(self) -> None:
        self._note = ""
        self.procedure.confirm_thaw()

    def action_acknowledge(self) -> None:
        self.procedure.acknowledge_alarms()
        self.app.clinic.alarms.acknowledge_all()

    def action_summary(self) -> None:
        if self.procedure.view.finished:
            self.app.push_screen(SummaryScreen())

    def refresh_view(self) -> None:
        """Render one published view (read once: every line below shows the same moment)."""
        view = self.procedure.view
        word, css = phase(view)
        line = self.query_one("#phase", Static)
        line.set_classes(css)
        line.update(word)
        profile = self.procedure.profile  # the lesion's profile: fixed when the procedure was built
        self.query_one("#cycle", Static).update(f"cycle {view.cycle}/{view.cycles_total}   {profile.name_fr} / {profile.name_en}")
        seconds, fraction = countdown(view)
        self.query_one("#countdown", Digits).update(f"{seconds:04.1f}" if seconds is not None else "--.-")
        self.query_one("#progress", ProgressBar).update(progress=round(fraction * 100))
        self._show_readings(view)
        self.query_one("#gas", Static).update(f"cartridge: {view.cartridge_left_s:.0f} s left" if view.cartridge_left_s is not None else "")
        if self._checklist is not None:
            self.query_one("#checklist", Static).update(self._checklist.text(view))
        if view.status != self._status:
            self._status, self._status_state = view.status, view.state
        said = view.status if view.state is self._status_state else ""  # the latest thing said, in the state it was said in
        self.query_one("#message", Static).update("\n".join(x for x in (self._note, message(view, said, self._how)) if x))
        self._bell(view)
        if view.finished and self.app.screen is self and not self._summary_shown:
            self._summary_shown = True
            self.app.push_screen(SummaryScreen())

    def _show_readings(self, view: ProcedureView) -> None:
        """The believed readings of fresh device data (the view's), the sparkline on the tissue or the gas."""
        if not view.device_data_fresh:
            self.query_one("#reading", Static).update("no device data" if self.app.clinic.link else "manual: no sensors")
            return
        parts: list[str] = []
        value = view.tissue_c  # the sparkline follows the tissue, or the gas pressure on a device without a tissue probe
        if view.tissue_c is not None:
            parts.append(f"tissue {view.tissue_c:6.1f} °C")
        if view.tip_c is not None:
            parts.append(f"tip {view.tip_c:6.1f} °C")
        if view.pressure_bar is not None:
            parts.append(f"gas {view.pressure_bar:4.1f} bar")
            value = view.pressure_bar if value is None else value
        if value is not None:
            self._samples = [*self._samples, value][-SPARK_SAMPLES:]
            self.query_one("#spark", Sparkline).data = self._samples
        if view.valve_sensed_open is not None:
            parts.append("valve OPEN" if view.valve_sensed_open else "valve closed")
        self.query_one("#reading", Static).update(" · ".join(parts))

    def _bell(self, view: ProcedureView) -> None:
        """Ring once at each cycle's start and once at its end, if the bell is on."""
        if not self.app.clinic.bell or not view.cycles:
            return
        key = (len(view.cycles), "end" if view.cycles[-1].end_reason else "start")
        if key not in self._rang_for:
            self._rang_for.add(key)
            self.app.bell()


def phase(view: ProcedureView) -> tuple[str, str]:
    """The phase in a word and a symbol (never colour alone) and its CSS class; an ARM refused is REFUSED, not READY."""
    if view.state is State.IDLE and view.refused:
        return "✗ REFUSED: cannot arm", "phase-alarm"
    word, css = PHASES[view.state]
    return f"{'❄' if view.state is State.FREEZING else '●'} {word}", css


def countdown(view: ProcedureView) -> tuple[float | None, float]:
    """Seconds left and fraction done: the device's own countdown while freezing, the thaw's minimum while thawing."""
    if view.state is State.FREEZING:
        return view.freeze_remaining_s, view.freeze_fraction
    if view.state is State.THAWING:
        return view.thaw_left_s, view.thaw_fraction
    return None, view.freeze_fraction if view.state is State.COMPLETED else 0.0


def message(view: ProcedureView, said: str, how: str) -> str:
    """What the clinician is told to do now, from the view alone (its state, its cycle), then what was said in this state."""
    cycle = f"cycle {view.cycle}/{view.cycles_total}"
    lines: list[str] = []
    if view.state is State.IDLE and view.refused:
        lines += ["✗ cannot arm:", *(f"  - {r}" for r in view.refused)]
        said = "" if said == "; ".join(view.refused) else said
    elif view.state is State.ARMED:
        dose = f"{view.dose_ms / 1000:g} s" if view.dose_ms is not None else "the planned dose"
        lines.append(f"ARMED for {cycle}: {dose} (limited by {view.limited_by}); {how}")
        lines += [f"! {w}" for w in view.warnings]
    elif view.state is State.FREEZING:
        lines.append(f"FREEZE {cycle}: the device times it; space or escape STOPs")
    elif view.state is State.UNCERTAIN:
        lines.append(f"{cycle}: reading the freeze's outcome from the device")
    elif view.state is State.THAWING:
        lines.append(thaw_line(view))
    elif view.state in TERMINAL:
        lines += [f"! {w}" for w in view.warnings]
        lines.append("s: summary" if view.finished else "closing the lesion's record...")
    return "\n".join([*lines, *([said] if said else [])])


def thaw_line(view: ProcedureView) -> str:
    """The thaw between two cycles: time left, then what else it waits for, then the clinician's enter."""
    following = f"cycle {view.cycle + 1}/{view.cycles_total}" if view.cycle < view.cycles_total else "the end"
    if view.thaw_left_s is None:
        return f"THAW after cycle {view.cycle}/{view.cycles_total}"
    if view.thaw_left_s > 0:
        return f"THAW: {view.thaw_left_s:.0f} s left before {following}"
    if view.thaw_waiting:
        return f"THAW: waiting for {view.thaw_waiting}"
    return f"thaw time done: press enter when the thaw is complete ({following} next)"


@dataclass(frozen=True, slots=True)
class Checklist:
    """What the clinician checks before arming, as the screen opened: patient and site, profile, the
    cartridge (the ledger's, until the ARM reserves it: then the view's seconds left), calibration, the keys."""

    head: tuple[str, ...]
    cartridge: str | None  # None: no cartridge to check (a probe, manual mode)
    tail: tuple[str, ...]

    def text(self, view: ProcedureView) -> str:
        cartridge = f"✓ cartridge: {view.cartridge_left_s:.0f} s left" if view.cartridge_left_s is not None else self.cartridge
        return "\n".join([*self.head, *([cartridge] if cartridge else []), *self.tail])


def checklist(clinic: Clinic) -> Checklist:
    """The checklist's facts, read once as the treatment screen opens (one ledger read, as the cartridge pop-up does)."""
    p = clinic.procedure
    assert p is not None and clinic.treatment is not None
    site = p.lesion.site
    zone = site.zone_for(clinic.config.zoning).value + (", an unsourced choice (config: zoning)" if site.zone_unsourced else "")
    head = (f"✓ patient {clinic.treatment.info.patient}, site {site.describe()} ({zone})",
            f"✓ profile {p.profile.id}")
    cartridge = None
    if clinic.device_kind is DeviceKindName.SPRAY:
        status = CartridgeLedger(clinic.store, clinic.config).status()
        cartridge = f"{'✓' if status else '✗'} cartridge: " + (f"{status.remaining_s:.0f} s left" if status else "none registered (c)")
    cal = p.calibration
    tail = ("! calibration: " + ("none recorded" if cal is None or not cal.due_on_day else f"due {date_of_day(cal.due_on_day)}"),
            "a: ARM, then f: FIRE" + (" (or the device trigger)" if clinic.trigger is not TriggerMode.HOST else ""))
    return Checklist(head, cartridge, tail)
