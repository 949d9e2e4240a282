"""The Givre terminal UI: the clinician's flow and the technician's screens.

The UI never times a freeze: the device does, the controller's own thread (Supervisor) runs the
procedure, and this app only shows snapshots (10 times a second) and sends intents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from pydantic import ValidationError
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Digits,
    Footer,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Select,
    Sparkline,
    Static,
)
from textual.widgets.option_list import Option

from controller.clinic import Clinic
from controller.procedure.driver import Procedure, StartRefused, State
from controller.procedure.recovery import connect
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger, LedgerError
from controller.records.lesion import FACE_REGIONS, Lesion, Region, SessionInfo, Site
from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import NOT_AVAILABLE_TEMP, NOT_AVAILABLE_U16, TriggerMode
from profiles.library import LoadedProfile

PHASES = {
    State.IDLE: ("READY", "phase-idle"),
    State.ARMED: ("ARMED", "phase-armed"),
    State.FREEZING: ("FREEZE", "phase-freeze"),
    State.THAWING: ("THAW", "phase-thaw"),
    State.COMPLETED: ("DONE", "phase-done"),
    State.ABORTED: ("STOPPED", "phase-alarm"),
    State.FAULTED: ("FAULT", "phase-alarm"),
    State.UNCERTAIN: ("CHECKING DEVICE", "phase-alarm"),
}


class TitleBar(Static):
    """Product and device on one line (a plain Static: screens come and go fast during a procedure)."""

    def __init__(self) -> None:
        super().__init__("", markup=False)

    def on_mount(self) -> None:
        self.update(f"Givre · {device_line(self.app.clinic)}")  # type: ignore[attr-defined]


class AlarmBar(Static):
    """Latched alarms in words and symbols (never colour alone), on every treatment screen."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", markup=False, **kwargs)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.set_interval(0.1, self.show)
        self.show()

    def show(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        try:
            latched = list(clinic.alarms.latched.values())
            if clinic.procedure is not None:
                latched += list(clinic.procedure.alarms.latched.values())
        except RuntimeError:
            return  # the controller changed them while we copied: next refresh
        self.update("  ".join(a.line() for a in sorted(latched, key=lambda a: -a.priority)) or "no alarm")
        high = any(a.priority.name == "HIGH" for a in latched)
        self.set_classes("alarm-bar " + ("alarm-high" if high else "alarm-some" if latched else "alarm-none"))


class ConnectScreen(Screen[None]):
    """Pick the device: a serial port (with its USB description and serial number), the embedded
    simulator, or manual mode (cotton tip: Givre only times)."""

    BINDINGS = [Binding("enter", "connect", "Connect", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        from firmware_bridge.transport import list_ports

        yield TitleBar()
        yield Label("Device")
        options = [Option(f"{p.device} · {p.description} · serial {p.serial_number or '-'}", id=p.device) for p in list_ports()]
        if self.app.clinic.simulator_factory is not None:  # type: ignore[attr-defined]
            options += [Option("Embedded simulator (spray)", id="sim:spray"), Option("Embedded simulator (probe)", id="sim:probe")]
        options.append(Option("Manual mode: no device, Givre times only", id="manual"))
        yield OptionList(*options, id="ports")
        yield Static("", id="error", classes="error", markup=False)
        yield Footer()

    def action_connect(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        ports = self.query_one("#ports", OptionList)
        choice = ports.get_option_at_index(ports.highlighted).id if ports.highlighted is not None else None
        if choice is None:
            return
        try:
            if choice.startswith("sim:"):
                choice = clinic.open_simulator(choice.removeprefix("sim:"))
            if choice != "manual":
                clinic.connect(connect(choice, clinic.clock))
        except BridgeError as exc:
            self.query_one("#error", Static).update(f"✗ {exc}")
            return
        self.app.switch_screen(SessionScreen())


class SessionScreen(Screen[None]):
    BINDINGS = [Binding("enter", "start", "Start session", show=True, priority=True),
                Binding("ctrl+t", "selftest", "Self-test", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        yield TitleBar()
        with VerticalScroll():
            yield Static(device_line(clinic), id="device", markup=False)
            for line in clinic.recovered:
                yield Static(f"! {line}", classes="warning", markup=False)
            yield Label("Operator (pseudonymous id)")
            yield Input(placeholder="e.g. dr-martin", id="operator")
            yield Label("Patient (pseudonymous id: never a name)")
            yield Input(placeholder="e.g. P-0042", id="patient")
            yield Static("", id="error", classes="error", markup=False)
            yield Button("Start session (enter)", id="start", variant="primary")
            yield Static("", id="selftest", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#operator", Input).focus()
        self.set_interval(0.2, self._show_selftest)

    def _show_selftest(self) -> None:
        self.query_one("#selftest", Static).update("\n".join(self.app.clinic.selftest_lines))  # type: ignore[attr-defined]

    def action_selftest(self) -> None:
        self.app.clinic.start_selftest()  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_start()

    def action_start(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        try:
            info = SessionInfo(operator=self.query_one("#operator", Input).value.strip(), patient=self.query_one("#patient", Input).value.strip())
        except ValidationError as exc:
            field_name = str(exc.errors()[0]["loc"][0])
            self.query_one("#error", Static).update(
                f"✗ {field_name}: letters, digits, '.', '_' or '-' (1-40, no spaces; a pseudonymous id, never a name)"
            )
            return
        clinic.treatment = Treatment(clinic.store, clinic.config, clinic.clock, info, clinic.link)
        clinic.treatment.start()
        self.app.push_screen(LesionScreen())


class LesionScreen(Screen[None]):
    BINDINGS = [Binding("ctrl+n", "next", "Checklist", show=True, priority=True)]

    def compose(self) -> ComposeResult:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        face = [(f"face: {r.value}", r.value) for r in Region if r in FACE_REGIONS]
        body = [(f"body: {r.value}", r.value) for r in Region if r not in FACE_REGIONS]
        yield TitleBar()
        with Horizontal():
            with VerticalScroll(id="lesion-form"):
                yield Label("Site")
                yield Select(face + body, prompt="region (face / body)", id="region")
                yield Select([("left", "left"), ("right", "right"), ("midline", "midline")], prompt="side", id="side")
                yield Input(placeholder="site detail (free text)", id="detail")
                yield Input(placeholder="size in mm", id="size")
                yield Input(placeholder="description (or a photo)", id="description")
                yield Input(placeholder="photo file path (optional)", id="photo")
                yield Checkbox("aesthetic act (not reimbursable)", id="aesthetic")
                yield Static("", id="error", classes="error", markup=False)
            with Vertical(id="profile-pane"):
                yield Input(placeholder="search profiles", id="search")
                yield OptionList(*profile_options(clinic), id="profiles")
                yield Static("", id="profile-detail", markup=False)
        yield Button("Continue to checklist (ctrl+n)", id="next", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#region", Select).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            options = self.query_one("#profiles", OptionList)
            options.clear_options()
            options.add_options(profile_options(self.app.clinic, event.value))  # type: ignore[attr-defined]

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.query_one("#profile-detail", Static).update(profile_detail(self.app.clinic, event.option.id))  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_next()

    def action_next(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        error = self.query_one("#error", Static)
        options = self.query_one("#profiles", OptionList)
        highlighted = options.get_option_at_index(options.highlighted) if options.highlighted is not None else None
        if highlighted is None or not highlighted.id:
            error.update("✗ profile: pick one in the list (arrows, then ctrl+n)")
            return
        region = self.query_one("#region", Select).value
        side = self.query_one("#side", Select).value
        size_text = self.query_one("#size", Input).value.strip()
        photo_text = self.query_one("#photo", Input).value.strip()
        try:
            size = float(size_text) if size_text else None
        except ValueError:
            error.update(f"✗ size: {size_text!r} is not a number of mm (e.g. 4 or 4.5)")
            return
        try:
            lesion = Lesion(
                profile_id=highlighted.id,
                site=Site(region=region if isinstance(region, str) else "", side=side if isinstance(side, str) else None,
                          detail=self.query_one("#detail", Input).value),
                size_mm=size, description=self.query_one("#description", Input).value,
                photo=Path(photo_text).expanduser() if photo_text else None,
                reimbursable=not self.query_one("#aesthetic", Checkbox).value,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "lesion"
            hint = " (pick a region: face or body)" if "region" in where else ""
            error.update(f"✗ {where}: {str(first['msg']).removeprefix('Value error, ')}{hint}")
            return
        assert clinic.treatment is not None
        procedure = clinic.treatment.lesion(lesion, clinic.library.get(highlighted.id), trigger=clinic.trigger)
        clinic.procedure = procedure
        clinic.supervisor.attach(procedure)
        self.app.push_screen(ProcedureScreen())


class ProcedureScreen(Screen[None]):
    BINDINGS = [
        Binding("space", "stop", "STOP", show=True, priority=True),
        Binding("escape", "stop", "STOP", show=False, priority=True),
        Binding("a", "arm", "Arm", show=True),
        Binding("f", "fire", "Fire", show=True),
        Binding("h", "halo", "Mark halo", show=True),
        Binding("enter", "thaw_done", "Thaw complete", show=True, priority=True),
        Binding("k", "acknowledge", "Ack alarms", show=True),
        Binding("s", "summary", "Summary", show=True),
    ]

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
        self._samples: list[float] = []
        self._rang_for: set[tuple[int, str]] = set()
        self._summary_shown = False
        self.query_one("#checklist", Static).update(checklist(self.app.clinic))  # type: ignore[attr-defined]
        self.set_interval(0.1, self.refresh_view)

    @property
    def procedure(self) -> Procedure:
        procedure = self.app.clinic.procedure  # type: ignore[attr-defined]
        assert procedure is not None
        return procedure

    def action_stop(self) -> None:
        said = self.procedure.stop()
        self.query_one("#message", Static).update(f"■ STOP: {said}")

    def _selftest_running(self) -> bool:
        if self.app.clinic.supervisor.paused.is_set():  # type: ignore[attr-defined]
            self.query_one("#message", Static).update("✗ the self-test is using the device: wait for it to finish")
            return True
        return False

    def action_arm(self) -> None:
        if self._selftest_running():
            return
        try:
            plan = self.procedure.arm()
        except StartRefused as exc:
            self.query_one("#message", Static).update("✗ cannot arm:\n" + "\n".join(f"  - {r}" for r in exc.reasons))
            return
        except Exception as exc:  # noqa: BLE001 - any refusal is shown, never a traceback
            self.query_one("#message", Static).update(f"✗ cannot arm: {exc}")
            return
        hold = "hold the trigger" if self.procedure.trigger is TriggerMode.DEAD_MAN else "press the trigger"
        how = hold if self.procedure.trigger is not TriggerMode.HOST else "press f to fire"
        self.query_one("#message", Static).update(
            f"ARMED: {plan.cycles} cycle(s) of {plan.dose.effective_ms / 1000:g} s (limited by {plan.dose.limited_by}); {how}"
            + "".join(f"\n! {w}" for w in self.procedure.warnings)
        )

    def action_fire(self) -> None:
        if not self._selftest_running():
            self.procedure.fire()

    def action_halo(self) -> None:
        self.procedure.mark_halo()

    def action_thaw_done(self) -> None:
        self.procedure.confirm_thaw()

    def action_acknowledge(self) -> None:
        self.procedure.acknowledge_alarms()
        self.app.clinic.alarms.acknowledge_all()  # type: ignore[attr-defined]

    def action_summary(self) -> None:
        if self.procedure.finished:
            self.app.push_screen(SummaryScreen())

    def refresh_view(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
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

    def _countdown(self, p: Procedure, latest: object) -> tuple[float | None, float]:
        """Seconds left and fraction done, from the device's telemetry (freeze) or the controller (thaw)."""
        if p.state is State.FREEZING and latest is not None:
            t = latest.telemetry  # type: ignore[attr-defined]
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

    def _show_readings(self, latest: object) -> None:
        if latest is None:
            self.query_one("#reading", Static).update("no device data" if self.app.clinic.link else "manual: no sensors")  # type: ignore[attr-defined]
            return
        t = latest.telemetry  # type: ignore[attr-defined]
        parts, value = [], None
        if t.tissue_cdeg != NOT_AVAILABLE_TEMP:
            value = t.tissue_cdeg / 100
            parts.append(f"tissue {value:6.1f} °C")
        if t.tip_cdeg != NOT_AVAILABLE_TEMP:
            parts.append(f"tip {t.tip_cdeg / 100:6.1f} °C")
        if t.pressure_kpa != NOT_AVAILABLE_U16:
            parts.append(f"gas {t.pressure_kpa / 100:4.1f} bar")
            value = t.pressure_kpa / 100 if value is None else value
        if value is not None:
            self._samples = (self._samples + [value])[-60:]
            self.query_one("#spark", Sparkline).data = self._samples
        valve = "valve OPEN" if t.valve & 0b10 else "valve closed"
        self.query_one("#reading", Static).update(" · ".join(parts + [valve]))
        status = self.procedure.ledger.status() if self.app.clinic.device_kind == "spray" else None  # type: ignore[attr-defined]
        self.query_one("#gas", Static).update(
            f"cartridge: {status.remaining_s:.0f} s left (~{status.estimated_lesions_left} lesions)" if status else "")

    def _bell(self, p: Procedure) -> None:
        if not self.app.clinic.bell or not p.cycles:  # type: ignore[attr-defined]
            return
        key = (len(p.cycles), "end" if p.cycles[-1].end_reason else "start")
        if key not in self._rang_for:
            self._rang_for.add(key)
            self.app.bell()


class SummaryScreen(Screen[None]):
    BINDINGS = [Binding("n", "next_lesion", "Next lesion", show=True), Binding("e", "end_session", "End session", show=True),
                Binding("k", "acknowledge", "Ack alarms", show=True)]

    def action_acknowledge(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        if clinic.procedure is not None:
            clinic.procedure.alarms.acknowledge_all()
        clinic.alarms.acknowledge_all()

    def compose(self) -> ComposeResult:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        p = clinic.procedure
        assert p is not None and clinic.treatment is not None
        yield TitleBar()
        yield AlarmBar(id="alarms")
        yield Static(f"{PHASES[p.state][0]}: {p.profile.name_fr} — session {clinic.treatment.session_id}, lesion {p.lesion_id}", id="verdict", markup=False)
        table: DataTable[str] = DataTable(id="cycles")
        table.add_columns("cycle", "requested ms", "device ms", "thaw ms", "limited by", "ended", "measured by")
        for c in p.cycles:
            table.add_row(str(c.cycle), str(c.dose.requested_ms), str(c.valve_open_ms), str(c.thaw_ms or "-"), c.dose.limited_by,
                          str(c.end_reason), c.measured_by)
        yield table
        yield Static(f"cartridge seconds used: {p.cartridge_seconds_used:.3f}   record: {clinic.store.path}", markup=False)
        yield Static(billing_line(clinic), id="billing", markup=False)
        yield Footer()

    def action_next_lesion(self) -> None:
        self.app.switch_to_lesion()  # type: ignore[attr-defined]

    def action_end_session(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        if clinic.treatment is None:
            self.app.switch_to_session()  # type: ignore[attr-defined]
            return
        session_id, operator = clinic.treatment.session_id, clinic.treatment.info.operator
        status = clinic.treatment.end()
        if status == "unresolved":
            self.app.notify(f"session {session_id} stays open: a freeze's outcome is read from the device at its next connection",
                            severity="warning", timeout=10)
        else:
            self.app.notify(f"session {session_id} ended: {status}")
        clinic.treatment = None
        self.app.push_screen(BillingScreen(session_id, operator))


class BillingScreen(ModalScreen[None]):
    """The session's proposed CCAM acts; the clinician confirms or changes them and the choice is recorded."""

    BINDINGS = [Binding("ctrl+b", "confirm", "Confirm billing", show=True, priority=True),
                Binding("escape", "later", "Decide later", show=True)]

    def __init__(self, session_id: str, operator: str) -> None:
        super().__init__()
        self.session_id = session_id
        self.operator = operator

    def compose(self) -> ComposeResult:
        from controller.practice.billing import acts_of, propose
        from controller.records.history import view_of

        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        self.table = clinic.billing_table
        self.proposal = propose(acts_of(view_of(clinic.store, self.session_id)), self.table)
        details = [f"{a.code} ({a.lesions} lesion(s)): {a.label}" for a in self.proposal.acts]
        details += [f"! {line}" for line in (*self.proposal.not_billed, *self.proposal.warnings)]
        with VerticalScroll(id="dialog"):
            yield Static(f"Billing for session {self.session_id}\nproposed: {self.proposal.line()}", id="proposal", markup=False)
            yield Label("Acts: CODE or CODE:ASSOC (1 = 100 %, 2 = 50 %); empty = none billed")
            yield Input(" ".join(f"{a.code}:{a.association_code}" if a.association_code else a.code for a in self.proposal.acts),
                        id="codes")
            yield Static("", id="billing-error", classes="error", markup=False)
            with Horizontal():
                yield Button("Confirm (ctrl+b)", id="confirm", variant="primary")
                yield Button("Decide later (esc)", id="later")
            yield Static("\n".join(details + [f"table: {self.table.version}"]), id="billing-details", markup=False)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_confirm() if event.button.id == "confirm" else self.action_later()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:
        from controller.practice.billing import BillingError, confirm, parse_choice

        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        try:
            chosen = parse_choice(self.query_one("#codes", Input).value.split(), self.table)
            recorded = confirm(clinic.store, self.session_id, self.proposal, chosen, self.table, by=self.operator)
        except BillingError as exc:
            self.query_one("#billing-error", Static).update(f"✗ {exc}")
            return
        acts = ", ".join(a["code"] for a in recorded["chosen"]) or "nothing billed"
        self.app.notify(f"billing recorded: {acts}" + (" (changed from the proposal)" if recorded["changed"] else ""))
        self._close()

    def action_later(self) -> None:
        self.app.notify(f"billing not confirmed; later: givre records bill {self.session_id}", severity="warning")
        self._close()

    def _close(self) -> None:
        self.app.pop_screen()
        self.app.switch_to_session()  # type: ignore[attr-defined]


class CartridgeScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close", show=True), Binding("l", "load", "Load", show=True)]

    def compose(self) -> ComposeResult:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        with Vertical(id="dialog"):
            yield Label("Cartridge")
            yield Select([(name, name) for name in clinic.config.cartridges], prompt="size", id="size")
            yield Input(value=date.today().isoformat(), placeholder="opened YYYY-MM-DD", id="opened")
            yield Static("", id="status", markup=False)
            yield Button("Load new cartridge (l)", id="load")

    def on_mount(self) -> None:
        self._show()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_load()

    def action_load(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        size = self.query_one("#size", Select).value
        text = self.query_one("#opened", Input).value.strip()
        try:
            opened = date.fromisoformat(text)
        except ValueError:
            self.query_one("#status", Static).update(f"✗ opened: {text!r} is not a date; write YYYY-MM-DD")
            return
        if not isinstance(size, str):
            self.query_one("#status", Static).update("✗ size: pick 8g, 16g or 23g")
            return
        try:
            CartridgeLedger(clinic.store, clinic.config).load(str(size), opened)
        except LedgerError as exc:
            self.query_one("#status", Static).update(f"✗ {exc}")
            return
        self._show()

    def _show(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        status = CartridgeLedger(clinic.store, clinic.config).status()
        if status is None:
            self.query_one("#status", Static).update("no cartridge registered")
            return
        warning = f"\n! past its keeping time of {status.keeping_days} days: load a new one" if status.past_keeping_time else ""
        self.query_one("#status", Static).update(
            f"{status.size}, opened {status.opened}: {status.remaining_s:.0f} s left of {status.capacity_s:.0f} s, "
            f"~{status.estimated_lesions_left} lesions{warning}\n{status.reminder}")


class RecordsScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close", show=True), Binding("v", "verify", "Verify chain", show=True)]

    def compose(self) -> ComposeResult:
        from controller.records.history import load_sessions

        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        with Vertical(id="dialog"):
            table: DataTable[str] = DataTable(id="sessions")
            table.add_columns("session", "started", "status", "patient", "lesions", "billing")
            for s in load_sessions(clinic.store):
                billing = "-" if s.billing is None else (", ".join(a["code"] for a in s.billing["chosen"]) or "none billed")
                table.add_row(s.session_id, s.started[:19], s.status, s.patient, ", ".join(lesion.profile_id for lesion in s.lesions),
                              billing)
            yield table
            yield Static("", id="verify", markup=False)

    def action_verify(self) -> None:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        bad = clinic.store.verify()
        count, head = clinic.store.head()
        self.query_one("#verify", Static).update(
            f"✓ chain intact: {count} events, head {head[:16]}" if bad is None else f"✗ TAMPERED from event {bad.seq} ({bad.kind})")


class DeviceScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close", show=True)]

    def compose(self) -> ComposeResult:
        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        lines = [device_line(clinic)]
        if clinic.link is not None and not clinic.link.lost:
            try:
                counters = clinic.link.counters()
                lines.append(f"counters: {counters.freezes_started} freezes, {counters.total_valve_open_ms} ms valve open since boot, "
                             f"{counters.watchdog_trips} watchdog trips; last freeze {counters.last_valve_open_ms} ms "
                             f"({counters.last_end_reason.name})")
            except BridgeError as exc:
                lines.append(f"counters unavailable: {exc}")
            stats = clinic.link.stats()
            lines.append(f"link: {stats.bytes_received} bytes in, {stats.session.retransmits} retransmits, "
                         f"{stats.decoder.crc_errors} CRC errors, {stats.session.seq_gaps} frames missed")
        with Vertical(id="dialog"):
            yield Static("\n".join(lines), markup=False)


class CalibrationScreen(ModalScreen[None]):
    """The technician's guided calibration: one step at a time, measured off the UI thread, results as a table."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Close", show=True)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label("Calibration (technician)")
            yield Input(placeholder="technician id", id="technician")
            with Horizontal():
                yield Button("Timer (10 s)", id="step-timer")
                yield Button("Valve latency", id="step-valve")
            yield Input(placeholder="flow: mass before (g)", id="mass-before")
            yield Input(placeholder="flow: mass after (g)", id="mass-after")
            yield Input(placeholder="flow: the spray's valve-open ms", id="valve-ms")
            yield Button("Flow rate", id="step-flow")
            yield Input(placeholder="thermocouple: point 1 as REF:READING, e.g. 0:3.8", id="point-1")
            yield Input(placeholder="thermocouple: point 2 as REF:READING, e.g. -196:-199.1", id="point-2")
            yield Button("Tip thermocouple", id="step-tip")
            yield Static("", id="progress", markup=False)
            table: DataTable[str] = DataTable(id="results")
            table.add_columns("step", "result", "measured", "written")
            yield table

    def on_mount(self) -> None:
        self._done: list[object] = []
        self._shown = 0
        self.set_interval(0.2, self._show)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        from controller.device import calibration

        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        if clinic.link is None or clinic.supervisor.paused.is_set():
            self.query_one("#progress", Static).update("✗ no device, or a measurement is already running")
            return
        step = (event.button.id or "").removeprefix("step-")
        try:
            job = self._job(step, calibration)
        except (ValueError, calibration.CalibrationError) as exc:
            self.query_one("#progress", Static).update(f"✗ {exc}; nothing was written")
            return
        technician = self.query_one("#technician", Input).value.strip() or "technician"
        self.query_one("#progress", Static).update(f"measuring: {step}...")
        threading.Thread(target=self._run, args=(job, technician), daemon=True).start()

    def _job(self, step: str, calibration: object):  # type: ignore[no-untyped-def]
        link = self.app.clinic.link  # type: ignore[attr-defined]
        cal = calibration
        value = lambda key: self.query_one(f"#{key}", Input).value.strip()
        if step == "timer":
            return lambda: cal.timer(link, 10.0)  # type: ignore[attr-defined]
        if step == "valve":
            return lambda: cal.valve(link)  # type: ignore[attr-defined]
        if step == "flow":
            before, after, ms = float(value("mass-before")), float(value("mass-after")), int(value("valve-ms"))
            return lambda: cal.flow(link, before, after, ms)  # type: ignore[attr-defined]
        points = []
        for key in ("point-1", "point-2"):
            ref, _, reading = value(key).partition(":")
            points.append((float(ref), float(reading)))
        return lambda: cal.thermocouple(link, "tip", points)  # type: ignore[attr-defined]

    def _run(self, job, technician: str) -> None:  # type: ignore[no-untyped-def]
        from controller.device import calibration

        clinic: Clinic = self.app.clinic  # type: ignore[attr-defined]
        clinic.supervisor.paused.set()
        try:
            result = job()
            clinic.supervisor.paused.clear()
            calibration.certify(clinic.link, clinic.store, technician, [result])  # type: ignore[arg-type]
            self._done.append(result)
        except Exception as exc:  # noqa: BLE001 - shown on screen, never a traceback
            self._done.append(f"✗ {exc}; nothing was written")
        finally:
            clinic.supervisor.paused.clear()

    def _show(self) -> None:
        while self._shown < len(self._done):
            item = self._done[self._shown]
            self._shown += 1
            if isinstance(item, str):
                self.query_one("#progress", Static).update(item)
                continue
            self.query_one("#progress", Static).update(f"done: {item.step}")  # type: ignore[attr-defined]
            self.query_one("#results", DataTable).add_row(
                item.step, "PASS" if item.passed else "FAIL", str(item.measurements), str(item.written or "-"))  # type: ignore[attr-defined]


class FaultScreen(ModalScreen[None]):
    """Demo only: the simulator's fault toggles, so a trainee can see each alarm."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Close", show=True)]
    FAULTS = {"disconnect": "Pull the cable", "block-nozzle": "Block the nozzle", "empty-cartridge": "Empty the cartridge",
              "reboot": "Reboot the device", "valve-stuck-open": "Jam the valve open"}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Simulator faults (demo)")
            for key, text in self.FAULTS.items():
                yield Button(text, id=f"fault-{key}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        device = self.app.clinic.device  # type: ignore[attr-defined]
        name = (event.button.id or "").removeprefix("fault-")
        if device is not None and name in self.FAULTS:
            device.inject(name)
            self.app.notify(f"simulator: {self.FAULTS[name]}")
        self.app.pop_screen()


class GivreApp(App[None]):
    TITLE = "Givre"
    CSS_PATH = "givre.tcss"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", show=True, priority=True),
        Binding("c", "cartridge", "Cartridge", show=True),
        Binding("r", "records", "Records", show=True),
        Binding("i", "device", "Device", show=True),
        Binding("x", "faults", "Sim faults", show=True),
        Binding("b", "toggle_bell", "Bell on/off", show=False),
        Binding("ctrl+l", "calibration", "Calibrate", show=True),
    ]

    def __init__(self, clinic: Clinic) -> None:
        super().__init__()
        self.clinic = clinic

    def on_mount(self) -> None:
        self.clinic.supervisor.start()
        if self.clinic.link is not None:
            self.clinic.connect(self.clinic.link)
            self.push_screen(SessionScreen())
        else:
            self.push_screen(ConnectScreen())

    def switch_to_lesion(self) -> None:
        self.pop_screen()  # summary
        self.pop_screen()  # procedure
        self.pop_screen()  # lesion form
        self.push_screen(LesionScreen())

    def switch_to_session(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.pop_screen()
        self.push_screen(SessionScreen())

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette lists every screen and the bell, beside Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Cartridge", "Load a cartridge, seconds left, keeping time (c)", self.action_cartridge)
        yield SystemCommand("Records", "Sessions and the hash-chain check (r)", self.action_records)
        yield SystemCommand("Device", "Identity, counters, link statistics (i)", self.action_device)
        yield SystemCommand("Bell", "Bell at freeze start and end on or off (b)", self.action_toggle_bell)
        yield SystemCommand("Calibration", "Technician calibration steps with a certificate (ctrl+l)", self.action_calibration)
        if self.clinic.device is not None:
            yield SystemCommand("Simulator faults", "Pull the cable, block the nozzle, empty the cartridge... (x)", self.action_faults)

    def action_toggle_bell(self) -> None:
        self.clinic.bell = not self.clinic.bell
        self.notify(f"bell at freeze start and end: {'on' if self.clinic.bell else 'off'}")

    def action_cartridge(self) -> None:
        self.push_screen(CartridgeScreen())

    def action_calibration(self) -> None:
        self.push_screen(CalibrationScreen())

    def action_records(self) -> None:
        self.push_screen(RecordsScreen())

    def action_device(self) -> None:
        self.push_screen(DeviceScreen())

    def action_faults(self) -> None:
        if self.clinic.device is not None:
            self.push_screen(FaultScreen())
        else:
            self.notify("the fault panel exists only in demo mode (the embedded simulator)")

    def on_unmount(self) -> None:
        self.clinic.supervisor.close()  # a running freeze is stopped; the device watchdog is the backstop
        device = self.clinic.device
        if device is not None:
            device.close()


def device_line(clinic: Clinic) -> str:
    if clinic.link is None or clinic.link.identity is None:
        return "manual mode: no device, Givre times only"
    ident = clinic.link.identity
    return (f"{ident.kind.name.lower()} {ident.serial} · firmware {ident.firmware} · protocol {ident.protocol} · "
            f"{ident.cryogen.name} · cap {ident.max_freeze_ms / 1000:g} s · calibration {clinic.calibration_status} · {ident.port}")


def profile_options(clinic: Clinic, search: str = "") -> list[Option]:
    needle = search.lower().strip()
    items: list[LoadedProfile] = sorted(clinic.library.for_device(clinic.device_kind), key=lambda lp: lp.profile.id)
    return [
        Option(f"{lp.profile.name_fr} / {lp.profile.name_en}  [{freeze_range(lp)} s × {lp.profile.cycles}]", id=lp.profile.id)
        for lp in items
        if not needle or needle in f"{lp.profile.id} {lp.profile.name_fr} {lp.profile.name_en}".lower()
    ]


def freeze_range(lp: LoadedProfile) -> str:
    f = lp.profile.freeze_s
    return f"{f.min:g}" if f.min == f.max else f"{f.min:g}-{f.max:g}"


def profile_detail(clinic: Clinic, profile_id: str) -> str:
    from controller.procedure.dose import decide

    lp = clinic.library.get(profile_id)
    p = lp.profile
    cap = clinic.link.identity.max_freeze_ms if clinic.link and clinic.link.identity else None
    dose = decide(p, None, clinic.config.clinic_max_freeze_s, cap)
    chain = " → ".join(f"{limit.name} {limit.ms / 1000:g} s" for limit in dose.chain)
    thaw = "none (one cycle)"
    if p.thaw is not None:
        thaw = f"≥ {p.thaw.min_s:g} s" + (f", tissue above {p.thaw.until_above_c:g} °C" if p.thaw.until_above_c is not None else "")
    origin = lp.origin + (" (overrides built-in)" if lp.overrides_builtin else "")
    return (f"{p.name_en}: {freeze_range(lp)} s × {p.cycles}, default {p.freeze_s.default:g} s, from {p.timing_start.value}\n"
            f"thaw: {thaw}\nsource: {clinic.library.cite(p.freeze_s.source)}\nlimits: {chain} ⇒ {dose.effective_ms / 1000:g} s "
            f"({dose.limited_by})\norigin: {origin}" + "".join(f"\n? {u}" for u in p.uncertain))


def billing_line(clinic: Clinic) -> str:
    """The session's proposal so far (completed lesions); the clinician confirms it when the session ends."""
    from controller.practice.billing import acts_of, propose
    from controller.records.history import view_of

    assert clinic.treatment is not None
    proposal = propose(acts_of(view_of(clinic.store, clinic.treatment.session_id)), clinic.billing_table)
    if not proposal.acts and not proposal.aesthetic_lesions:
        return "billing: no completed lesion to bill yet"
    return "proposed billing: " + proposal.line() + "".join(f"\n! {w}" for w in proposal.warnings)


def checklist(clinic: Clinic) -> str:
    p = clinic.procedure
    assert p is not None and clinic.treatment is not None
    lines = [f"✓ patient {clinic.treatment.info.patient}, site {p.lesion.site.describe()} ({p.lesion.site.zone.value})",
             f"✓ profile {p.profile.id}"]
    if clinic.device_kind == "spray":
        status = p.ledger.status()
        lines.append(f"{'✓' if status else '✗'} cartridge: " + (f"{status.remaining_s:.0f} s left" if status else "none registered (c)"))
    cal = p.calibration
    lines.append("! calibration: " + ("none recorded" if cal is None or not cal.due_on_day else f"due day {cal.due_on_day}"))
    lines.append("a: ARM, then f: FIRE" + (" (or the device trigger)" if clinic.trigger is not TriggerMode.HOST else ""))
    return "\n".join(lines)
