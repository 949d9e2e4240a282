"""A store aged to years of use: `givre run` on a fresh device starts and finishes with no watchdog
trip (it failed from about 30 k events when recovery and ARM read the whole log), and the readers
answer from the projections. CI builds a 40 k-event store (about six weeks of a busy practice);
`givre bench --store-events` measures 1 M."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from bench.aged_store import AgedStore
from controller.cli.main import main
from sim.device import SimulatedDevice


@pytest.mark.pty
def test_givre_run_on_an_aged_store_completes_without_a_watchdog_trip(aged_store: AgedStore, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(aged_store.path)
    assert main(["cartridge", "load", "--size", "23g", "--db", db]) == 0
    with SimulatedDevice() as device:
        code = main(["run", "--port", device.serve_pty(), "--profile", "solar-lentigo", "--site", "hand", "--db", db, "--yes", "--json"])
        trips = device.firmware.watchdog_trips
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and result["status"] == "completed", result
    assert trips == 0  # the default 250 ms watchdog: no read on the way to the FREEZE starved it


def test_the_readers_answer_on_an_aged_store(aged_store: AgedStore, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(aged_store.path)
    assert main(["records", "list", "--db", db, "--json"]) == 0
    sessions = json.loads(capsys.readouterr().out)
    assert len(sessions) >= aged_store.days * 12 and all(s["status"] for s in sessions)
    last = sessions[-1]["session_id"]
    assert main(["records", "show", last, "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session"]["session_id"] == last
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    assert main(["records", "export", "--format", "csv", "--since", yesterday, "--db", db]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert 1 < len(rows) < 200  # one replayed day's cycles, not four years of them
