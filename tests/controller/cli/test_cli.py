"""The givre command as a user and a CI script meet it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from controller.cli.main import build_parser, main
from controller.records.store import RecordStore
from firmware_bridge.link import Link
from sim.device import SimulatedDevice
from tests.support.paths import REPO_ROOT

GIVRE = [sys.executable, "-m", "controller.cli"]


def test_sim_pty_prints_its_path_first_serves_and_stops_on_sigterm() -> None:
    sim = subprocess.Popen([*GIVRE, "sim", "--kind", "probe", "--pty", "--serial", "SIM-CLI"], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/")
        with Link.open(path) as link:
            assert link.identity is not None
            assert (link.identity.serial, link.identity.kind.name, link.identity.cryogen.name) == ("SIM-CLI", "PROBE", "LN2")
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0
    finally:
        if sim.poll() is None:
            sim.kill()


def test_sim_tcp_prints_a_socket_url() -> None:
    sim = subprocess.Popen([*GIVRE, "sim", "--tcp", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        with Link.open(url) as link:
            assert link.identity is not None and link.identity.kind.name == "SPRAY"
        sim.send_signal(signal.SIGINT)
        assert sim.wait(timeout=10) == 0
    finally:
        if sim.poll() is None:
            sim.kill()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--pty", "--fault-at", "soon:explode"], "expected SECONDS:ACTION"),
        (["sim", "--pty", "--drop-pct", "150"], "--drop-pct 150.0: must be between 0 and 100"),
        (["sim", "--tcp", "127.0.0.1:notaport"], "--tcp 127.0.0.1:notaport: cannot listen there"),
        (["demo", "--headless", "--cycles", "5"], "--cycles 5: must be from 1 to 3. Leave it out"),
        (["demo", "--headless", "--freeze-s", "90"], "givre demo: --freeze-s 90.0: must be > 0 and <= 60 s. Leave it out"),
        (["demo", "--headless", "--scale", "0"], "givre demo: --scale 0.0: must be > 0. Use 1 for real time"),
    ],
)
def test_bad_arguments_get_one_clear_line_and_no_traceback(argv: list[str], message: str) -> None:
    result = subprocess.run([*GIVRE, *argv], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_a_lesion_protocol_on_the_embedded_simulator_through_the_run_path(capsys: pytest.CaptureFixture[str]) -> None:
    """Two device-timed cycles with the profile's thaw between them, on virtual time, recorded and billed."""
    assert main(["demo", "--headless", "--profile", "plantar-wart", "--scale", "20"]) == 0
    out = capsys.readouterr().out
    assert "simulated spray device on /dev/" in out and ": COMPLETED (plantar-wart, device SIM-0001)" in out
    assert out.count("requested 20000 ms (limited by requested), device measured 20000 ms, ended COMPLETED") == 2
    assert "proposed billing: QZNP004" in out


def test_a_headless_halo_timed_run_marks_the_halo_by_script_and_records_both_durations(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clinic counting the lentigo from the halo (the sources' convention): the spray (gas) covers spray on -> T0 -> off,
    the clinical dose T0 -> off is the profile's 5 s."""
    sheet = (REPO_ROOT / "profiles" / "builtin" / "solar-lentigo.toml").read_text(encoding="utf-8")
    halo = sheet.replace('timing_start = "spray_start"\ntiming_start_source = "givre"',
                         'timing_start = "halo"\ntiming_start_source = "flynn-2013"')
    (tmp_path / "solar-lentigo.toml").write_text(halo, encoding="utf-8")
    argv = ["demo", "--headless", "--profile", "solar-lentigo", "--profiles", str(tmp_path), "--scale", "20", "--mark-halo-after", "2"]
    assert main([*argv, "--json"]) == 0
    (cycle,) = json.loads(capsys.readouterr().out)["cycles"]
    assert cycle["halo_to_off_ms"] == 5000 and cycle["freeze_ms_device"] >= 6900
    assert main(argv) == 0
    assert "of which 5000 ms from T0 (clinical dose)" in capsys.readouterr().out
    assert main(argv[:-2]) == 2  # no one would mark the halo: refused before anything freezes
    assert "counts from the halo, which no one marks in a headless run" in capsys.readouterr().err


def test_demo_headless_json_is_the_run_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--headless", "--kind", "probe", "--scale", "20", "--cycles", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # one JSON object: the simulator line goes to stderr
    assert result["status"] == "completed" and result["profile"] == "superficial-bcc"
    assert result["device"]["kind"] == "probe" and result["cycles"][0]["measured_by"] == "device"


@pytest.mark.timeout(240)  # a benchmark run, even a quick one, on a loaded 2-core machine
def test_bench_json_prints_one_object_with_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--json", "--quick"]) == 0
    results = json.loads(capsys.readouterr().out)
    for key in (
        "codec_frames_per_s", "roundtrip_ms_p50", "roundtrip_ms_p99", "stop_latency_ms_p50", "stop_latency_ms_p99",
        "freeze_error_ms_p99", "watchdog_close_ms_p99", "samples", "record_event_ms_p99", "clinic_day_wall_s",
        "tui_start_ms", "tui_stop_ms_p99", "export_fhir_ms", "export_csv_ms", "day_report_ms",
    ):
        assert key in results


def test_a_port_error_is_one_line_naming_the_port_and_what_to_do() -> None:
    result = subprocess.run([*GIVRE, "info", "--port", "/dev/ttyGIVRE-NOPE"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "givre: /dev/ttyGIVRE-NOPE: no such port. Plug the device in, or pick a port from `givre ports`"


def test_info_reads_identity_counters_and_calibration(capsys: pytest.CaptureFixture[str]) -> None:
    with SimulatedDevice(serial="SIM-INFO") as device:
        assert main(["info", "--port", device.serve_pty(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identity"]["serial"] == "SIM-INFO" and report["identity"]["kind"] == "SPRAY"
    assert report["counters"]["last_end_reason"] == "NONE" and report["calibration"]["tip_gain_ppm"] == 1_000_000


def test_the_ui_refuses_a_store_another_givre_is_writing_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with RecordStore(db):
        result = subprocess.run([*GIVRE, "--db", str(db)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "another Givre is writing this record store" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["profiles", "list"], ["records", "--help"]])
def test_commands_but_the_ui_start_without_the_ui_toolkit(argv: list[str]) -> None:
    """textual costs ~140 ms at every start: only the terminal UI loads it."""
    probe = (
        "import sys\n"
        "from controller.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'textual' not in sys.modules, sorted(m for m in sys.modules if m.startswith('textual'))[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_every_command_group_says_what_it_does_in_the_help() -> None:
    result = subprocess.run([*GIVRE, "--help"], capture_output=True, text=True, timeout=30, check=True)
    for name in ("demo", "sim", "profiles", "run", "records", "report", "cartridge", "calibrate", "selftest", "conformance",
                 "ports", "info", "bench"):
        assert f"\n    {name} " in result.stdout, name


def test_a_liquid_nitrogen_reference_point_is_a_value_not_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `--point -196:-199.1` reaches the calibration (here refused: no device at that port)."""
    code = main(["calibrate", "--port", "/dev/ttyGIVRE-NOPE", "--step", "thermocouple", "--point", "0:3.8", "--point", "-196:-199.1"])
    assert code == 2 and "no such port" in capsys.readouterr().err


def test_bench_is_a_plugin_command_and_a_plugin_can_neither_replace_a_builtin_nor_break_the_rest(
        mocker: MockerFixture, capsys: pytest.CaptureFixture[str]) -> None:
    assert "bench" in build_parser().format_help()  # registered by the givre.commands entry point
    mocker.patch("controller.cli.main.entry_points", return_value=[
        EntryPoint("run", "somebody.else", "givre.commands"),
        EntryPoint("broken", "givre_no_such_module", "givre.commands"),
    ])
    parser = build_parser()
    err = capsys.readouterr().err
    assert "ignoring the plugin command 'run' (somebody.else): a built-in command has that name" in err
    assert "the command 'broken' could not be loaded" in err and "Reinstall givre" in err
    assert parser.parse_args(["ports"]).command == "ports"  # the built-ins still work
