"""Virtual time (`--scale`) only where the device runs on that same time, and a scaled session says so.

Issue 13 item 6: `givre run --scale 50` against a real-time device recorded a 0.6 s thaw as 30 113 ms,
and in manual mode a 5 s cotton-tip timer ended after 0.41 s; nothing in the record said time was
scaled. Now a device is measured at connection (controller/procedure/recovery.py), manual mode never
scales, and every read-back of a scaled session carries its time_scale.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.practice.fhir import validate_bundle
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from sim.device import SimulatedDevice

pytestmark = pytest.mark.pty
RUN = ["--profile", "solar-lentigo", "--site", "cheek", "--patient", "P-0042", "--yes"]


def _events(db: Path) -> list[Any]:
    if not db.exists():
        return []
    with RecordStore(db, writer=False) as store:
        return list(store.events())


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(("device_scale", "found"), [(1.0, "keeps real time"), (10.0, "does not run on that virtual time")])
def test_scale_against_a_device_on_another_time_is_refused_in_one_line_and_records_nothing(
        device_scale: float, found: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real-time device (and a simulator at another scale) behind a pty, exactly as `givre run` reaches any device."""
    db = tmp_path / "r.sqlite"
    with SimulatedDevice(clock=Clock(device_scale)) as device:
        url = device.serve_pty()
        code = main(["run", "--port", url, *RUN, "--db", str(db), "--scale", "50"])
        assert device.firmware.freezes_started == 0
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"givre run: {url}: --scale 50 refused: this device {found} (its clock ran ")
    assert "50 ± 25% is needed" in line and "leave --scale out to drive this device on real time" in line
    assert _events(db) == []


def test_scale_in_manual_mode_is_refused_before_anything_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    code = main(["run", "--manual", *RUN, "--db", str(db), "--scale", "50"])
    assert code == 2
    assert _one_line(capsys.readouterr().err) == (
        "givre run: --scale 50 with --manual: a cotton-tip applicator is timed on real time, never scaled. "
        "Leave --scale out in manual mode; virtual time is only for a simulator running at that scale (--port)")
    assert not db.exists()


@pytest.mark.parametrize("scale", ["1.5", "0.5"])
def test_a_scale_a_real_time_device_could_pass_for_is_refused(scale: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under 2 (but 1), a real-time device's clock would fall within the measurement's tolerance."""
    code = main(["run", "--port", str(tmp_path / "no-such-port"), *RUN, "--db", str(tmp_path / "r.sqlite"), "--scale", scale])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"givre run: --scale {scale}: must be 1 (real time) or at least 2 (virtual time, a simulator only). ")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_scaled_embedded_run_says_its_time_scale_in_the_record_and_every_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "demo.sqlite")
    result = json.loads(_cli(capsys, "demo", "--headless", "--scale", "20", "--db", db, "--json"))
    assert result["status"] == "completed" and result["time_scale"] == 20
    sid = result["session_id"]

    shown = json.loads(_cli(capsys, "records", "show", sid, "--db", db, "--json"))
    started = next(e for e in shown["events"] if e["kind"] == "session_started")
    assert started["payload"]["time_scale"] == 20 and shown["session"]["time_scale"] == 20
    first = _cli(capsys, "records", "show", sid, "--db", db).splitlines()[0]
    assert first == f"session {sid}: time_scale 20 (virtual time: recorded against a simulator, not a clinical session)"
    (listed,) = json.loads(_cli(capsys, "records", "list", "--db", db, "--json"))
    assert listed["time_scale"] == 20

    rows = list(csv.DictReader(io.StringIO(_cli(capsys, "records", "export", "--db", db, "--format", "csv"))))
    assert rows and {row["time_scale"] for row in rows} == {"20"}
    (session,) = json.loads(_cli(capsys, "records", "export", "--db", db, "--format", "json"))["sessions"]
    assert session["time_scale"] == 20

    bundle = json.loads(_cli(capsys, "records", "export", "--db", db, "--format", "fhir", "--session", sid, "--validate"))
    validate_bundle(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    timed = [r for r in resources if r["resourceType"] in ("Procedure", "Observation")]
    assert timed and all(any(n["text"].startswith("time_scale 20: recorded on virtual time") for n in r["note"]) for r in timed)

    report = json.loads(_cli(capsys, "report", "--db", db, "--json"))
    assert [s["time_scale"] for s in report["sessions"]] == [20] and report["scaled_sessions"] == 1
    text = _cli(capsys, "report", "--db", db)
    assert f"{sid} patient DEMO-1: completed (virtual time x20: a simulator, not clinical)" in text
    assert "1 session(s) recorded on virtual time" in text
