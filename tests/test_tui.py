"""The terminal UI, driven from the keyboard with Textual's Pilot, against the simulator on a real pty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from textual.css.query import NoMatches

from controller.clinic import Clinic
from controller.config import Config
from controller.procedure.driver import State
from controller.records.ledger import CartridgeLedger
from controller.records.store import RecordStore
from controller.tui.app import BillingScreen, GivreApp, LesionScreen, ProcedureScreen, SessionScreen, SummaryScreen
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from profiles.library import load_builtins
from sim.device import SimulatedDevice

pytestmark = pytest.mark.pty


class Harness:
    def __init__(self, tmp_path: Path, scale: float = 20) -> None:
        self.clock = Clock(scale)
        self.device = SimulatedDevice(clock=self.clock)
        url = self.device.serve_pty()
        self.link = Link.open(url, clock=self.clock, watchdog_ms=round(2000 * scale))
        self.link.wait_for_telemetry()
        self.store = RecordStore(tmp_path / "tui.sqlite", clock=self.clock)
        CartridgeLedger(self.store, Config()).load("23g", date.today())
        self.clinic = Clinic(self.store, Config(), load_builtins(), self.link, self.clock, self.device, bell=False,
                             selftest_on_connect=False)
        self.app = GivreApp(self.clinic)

    def close(self) -> None:
        self.clinic.supervisor.close()
        self.link.close()
        self.store.close()
        self.device.close()


@pytest.fixture
def harness(tmp_path: Path) -> Any:
    h = Harness(tmp_path)
    yield h
    h.close()


@pytest.fixture
def slow_harness(tmp_path: Path) -> Any:
    """Virtual time x2 only: a freeze lasts long enough for keys to land in the middle of it."""
    h = Harness(tmp_path, scale=2)
    yield h
    h.close()


def _holds(predicate: Callable[[], object]) -> bool:
    try:
        return bool(predicate())
    except NoMatches:  # the screen is still composing
        return False


async def until(pilot: Any, predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not _holds(predicate):
        if time.monotonic() > deadline:
            app = pilot.app
            p = app.clinic.procedure
            message = ""
            if _holds(lambda: app.screen.query_one("#message")):
                message = str(app.screen.query_one("#message").render())
            raise AssertionError(f"timed out waiting for {what} (state {p.state if p else None}, status {p.status_text if p else ''!r}, "
                                 f"screen message {message!r}, controller error {app.clinic.supervisor.error!r})")
        await pilot.pause(0.02)


async def fill_session_and_lesion(pilot: Any, app: GivreApp, profile_id: str, aesthetic: bool = False) -> None:
    await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
    await pilot.press(*"dr-a", "tab", *"P-0042", "enter")
    await until(pilot, lambda: isinstance(app.screen, LesionScreen), what="lesion screen")
    screen = app.screen
    screen.query_one("#region").value = "foot-sole"  # the side is left blank: it is optional
    screen.query_one("#description").value = "two plantar warts"
    screen.query_one("#aesthetic").value = aesthetic
    options = screen.query_one("#profiles")
    options.highlighted = next(i for i in range(options.option_count) if options.get_option_at_index(i).id == profile_id)
    await pilot.press("ctrl+n")
    await until(pilot, lambda: isinstance(app.screen, ProcedureScreen), what="procedure screen")


def test_a_full_two_cycle_plantar_wart_protocol_from_the_keyboard(harness: Harness) -> None:
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "plantar-wart")
            procedure = harness.clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed")
            await pilot.press("f")
            await until(pilot, lambda: procedure.state is State.THAWING, what="thawing")  # the device timed cycle 1
            await until(pilot, lambda: "THAW" in str(app.screen.query_one("#phase").render()), what="THAW shown")
            await until(pilot, lambda: "press enter" in str(app.screen.query_one("#message").render()), what="thaw time done")
            await pilot.press("enter")
            await until(pilot, lambda: procedure.state is State.ARMED, what="armed for cycle 2")
            await pilot.press("f")
            await until(pilot, lambda: procedure.state is State.COMPLETED, timeout_s=30, what="completed")
            await until(pilot, lambda: isinstance(app.screen, SummaryScreen) and app.screen.query_one("#cycles").row_count == 2,
                        what="summary with both cycles")
            assert "proposed billing: QZNP004 tariff unknown (unverified)" in str(app.screen.query_one("#billing").render())
            # x20 virtual time: the device thread's wall-time resolution (a few ms) is worth up to 200 ms of device time
            assert [c.valve_open_ms is not None and abs(c.valve_open_ms - 20_000) <= 200 for c in procedure.cycles] == [True, True]
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, BillingScreen), what="billing screen")
            assert app.screen.query_one("#codes").value == "QZNP004"  # the proposal, ready to confirm or change
            app.screen.query_one("#codes").value = "QZNP004 QANP007"
            await pilot.press("ctrl+b")
            await until(pilot, lambda: "different association codes" in str(app.screen.query_one("#billing-error").render()),
                        what="a bad choice refused inline")
            app.screen.query_one("#codes").value = "QZNP004:1 QANP007:2"
            await pilot.press("ctrl+b")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="back to a new session")
    asyncio.run(scenario())
    kinds = [e.kind for e in harness.store.events()]
    assert kinds.count("freeze_result") == 2 and "thaw_done" in kinds and kinds[-2:] == ["session_ended", "billing_confirmed"]
    billing = list(harness.store.events())[-1].payload
    assert [(a["code"], a["association_code"]) for a in billing["chosen"]] == [("QZNP004", 1), ("QANP007", 2)]
    assert billing["changed"] and billing["by"] == "dr-a" and [a["code"] for a in billing["proposed"]["acts"]] == ["QZNP004"]


def test_stop_mid_freeze_closes_the_valve_and_records_aborted(slow_harness: Harness) -> None:
    harness = slow_harness
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "seborrheic-keratosis-thick", aesthetic=True)
            procedure = harness.clinic.procedure
            assert procedure is not None
            await pilot.press("a")
            await until(pilot, lambda: harness.clinic.procedure.state is State.ARMED, what="armed")  # type: ignore[union-attr]
            await pilot.press("f")
            await until(pilot, lambda: harness.device.valve_open, what="valve open")
            await pilot.press("space")
            assert not harness.device.model.valve_commanded  # STOP reached the device before the key handler returned
            await until(pilot, lambda: procedure.state is State.ABORTED, what="aborted")
            await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="summary")
    asyncio.run(scenario())
    results = [e.payload for e in harness.store.events() if e.kind == "freeze_result"]
    assert results[0]["end_reason"] == "STOPPED"
    (lesion,) = [e.payload for e in harness.store.events() if e.kind == "lesion_recorded"]
    assert lesion["reimbursable"] is False  # the form's aesthetic box reached the record


def test_a_simulator_fault_reaches_the_screen_and_the_record(slow_harness: Harness) -> None:
    harness = slow_harness
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await fill_session_and_lesion(pilot, app, "seborrheic-keratosis-thick")
            await pilot.press("a")
            await until(pilot, lambda: harness.clinic.procedure.state is State.ARMED, what="armed")  # type: ignore[union-attr]
            await pilot.press("f")
            await until(pilot, lambda: harness.device.valve_open, what="valve open")
            harness.device.block_nozzle()
            await until(pilot, lambda: "No flow" in str(app.screen.query_one("#alarms").render()), what="alarm shown")
            bar = str(app.screen.query_one("#alarms").render())
            assert bar.startswith("!!! HIGH:")  # words and symbols, not colour alone
    asyncio.run(scenario())
    assert "no_flow" in [e.payload.get("code") for e in harness.store.events() if e.kind == "alarm_raised"]


def test_form_validation_is_inline_and_writes_nothing(harness: Harness) -> None:
    async def scenario() -> None:
        app = harness.app
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            await pilot.press(*"Jean Dupont", "tab", *"P-1", "enter")
            assert isinstance(app.screen, SessionScreen)
            assert "pseudonymous id, never a name" in str(app.screen.query_one("#error").render())
            app.screen.query_one("#operator").value = "dr-a"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, LesionScreen), what="lesion screen")
            app.screen.query_one("#size").value = "four"
            await pilot.press("ctrl+n")
            assert "size: 'four' is not a number of mm" in str(app.screen.query_one("#error").render())
            app.screen.query_one("#size").value = "4"
            await pilot.press("ctrl+n")
            assert "region" in str(app.screen.query_one("#error").render())
            assert isinstance(app.screen, LesionScreen)
            titles = {command.title for command in app.get_system_commands(app.screen)}
            assert {"Cartridge", "Records", "Device", "Bell", "Simulator faults"} <= titles  # the palette lists them
    asyncio.run(scenario())
    kinds = [e.kind for e in harness.store.events()]
    assert "lesion_recorded" not in kinds and kinds.count("session_started") == 1


def test_without_a_port_the_connect_screen_offers_ports_the_simulator_and_manual_mode(tmp_path: Path) -> None:
    from controller.cli.ui import embedded_simulator
    from controller.tui.app import ConnectScreen

    store = RecordStore(tmp_path / "c.sqlite")
    clinic = Clinic(store, Config(), load_builtins(), None, bell=False, selftest_on_connect=False, simulator_factory=embedded_simulator)
    app = GivreApp(clinic)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ConnectScreen), what="connect screen")
            ports = app.screen.query_one("#ports")
            ids = [ports.get_option_at_index(i).id for i in range(ports.option_count)]
            assert {"sim:spray", "sim:probe", "manual"} <= set(ids)
            ports.highlighted = ids.index("sim:probe")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            assert clinic.link is not None and clinic.device_kind == "probe"
            assert "probe SIM-0001" in str(app.screen.query_one("TitleBar").render())
    try:
        asyncio.run(scenario())
    finally:
        clinic.supervisor.close()
        if clinic.link is not None:
            clinic.link.close()
        store.close()


def test_the_self_test_runs_on_connect_and_its_lines_are_shown(tmp_path: Path) -> None:
    h = Harness(tmp_path, scale=1)
    h.clinic.selftest_on_connect = True
    app = h.app

    async def scenario() -> None:
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: any(line.startswith("self-test ") and "running" not in line for line in h.clinic.selftest_lines),
                        timeout_s=30, what="self-test finished")
            await until(pilot, lambda: "PASS  watchdog" in str(app.screen.query_one("#selftest").render()), what="lines shown")
    try:
        asyncio.run(scenario())
        assert [e.kind for e in h.store.events()].count("selftest") == 1
    finally:
        h.close()


def test_the_calibration_screen_runs_a_step_and_shows_its_result(tmp_path: Path) -> None:
    from controller.tui.app import CalibrationScreen

    h = Harness(tmp_path, scale=1)
    app = h.app

    async def scenario() -> None:
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SessionScreen), what="session screen")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, CalibrationScreen), what="calibration screen")
            screen = app.screen
            screen.query_one("#mass-before").value = "22"
            screen.query_one("#mass-after").value = "22.4"
            screen.query_one("#valve-ms").value = "10000"
            screen.query_one("#step-flow").press()
            await until(pilot, lambda: "must be less than before" in str(screen.query_one("#progress").render()), what="refusal")
            screen.query_one("#mass-after").value = "21.3"
            screen.query_one("#step-flow").press()
            await until(pilot, lambda: screen.query_one("#results").row_count == 1, what="result row")
            assert h.link.read_calibration().flow_mg_per_s == 70
    try:
        asyncio.run(scenario())
        assert [e.kind for e in h.store.events()].count("calibration_certificate") == 1
    finally:
        h.close()
