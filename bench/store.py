"""`givre bench --store-events N ...`: the record at clinic scale. For each N, a store aged to N
events (bench/aged_store.py: a real clinic day replayed day after day), then what a GP and a
practice wait for on it, measured on the host:

- ``run_start_ms``: `givre run` called -> the simulator receives its FREEZE (recovery, gates, ARM);
  ``run_exit_code`` and ``run_watchdog_trips``: that run completed (0), with no watchdog trip;
- ``arm_ms``: one lesion's ARM (the start gate, the cartridge read, the reservation);
- ``ledger_status_ms``: the cartridge's status (every procedure screen refresh reads it);
- ``records_show_ms`` / ``records_list_ms`` / ``export_day_ms`` / ``day_report_ms``: the commands,
  run in this process with their output thrown away (the interpreter's start-up is not the store's);
- ``verify_full_s``: the whole chain walked; ``verify_incremental_ms``: from the last seal on, after
  the bench's own sessions (what an export or a day report checks);
- ``append_ms_p99``: durable appends on the aged store;
- ``peak_rss_mb``: each reader's peak memory, run as its own process (`givre ...`).

The store is built first and is not timed. Each figure can show a failure: a reader that scans the
log grows with N (the 10 k / 100 k / 1 M columns side by side show it).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.aged_store import AgedStore, build_aged_store, template_day
from bench.figures import p99, timed_ms
from controller.cli.main import main
from controller.config import Config
from controller.procedure.recovery import connect
from controller.procedure.treatment import Treatment
from controller.records.ledger import CartridgeLedger
from controller.records.lesion import Lesion, Region, SessionInfo, Site
from controller.records.store import RecordStore
from firmware_bridge.messages import Freeze
from profiles.library import load_builtins
from sim.device import SimulatedDevice

APPENDS = 100  # durable appends timed on each aged store


def bench_event(i: int) -> tuple[str, dict[str, Any]]:
    """The small real event (records/events.py checks every kind) whose durable append is timed."""
    return "alarm_acknowledged", {"code": "telemetry_stale", "by": f"bench-{i}"}


def measure_stores(sizes: list[int]) -> dict[str, dict[str, object]]:
    """Figures per store size (keys: the sizes as strings)."""
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        template = template_day(Path(scratch) / "day.sqlite")
        for size in sizes:
            aged = build_aged_store(Path(scratch) / f"aged-{size}.sqlite", size, template)
            results[str(size)] = _figures(aged)
            for leftover in Path(scratch).glob(f"aged-{size}.sqlite*"):
                leftover.unlink()
    return results


def _figures(aged: AgedStore) -> dict[str, object]:
    db = str(aged.path)
    day = (date.today() - timedelta(days=1)).isoformat()
    with RecordStore(aged.path) as store:
        CartridgeLedger(store, Config()).load("23g", date.today())
        last_session = store.session_ids()[-1]
    figures: dict[str, object] = {"events": aged.events, "days": aged.days}
    readers: dict[str, list[str]] = {
        "records_show": ["records", "show", last_session, "--db", db],
        "records_list": ["records", "list", "--db", db, "--json"],
        "export_day": ["records", "export", "--format", "csv", "--since", day, "--db", db],
        "day_report": ["report", "--date", day, "--db", db],
        "cartridge_status": ["cartridge", "status", "--db", db],
    }
    for name, argv in readers.items():
        figures[f"{name}_ms"] = round(timed_ms(lambda argv=argv: _quietly(argv)), 1)  # type: ignore[misc]
    figures["peak_rss_mb"] = {name: _peak_rss_mb(argv) for name, argv in readers.items()}
    with RecordStore(aged.path, writer=False) as store:
        figures["ledger_status_ms"] = round(statistics.median(timed_ms(CartridgeLedger(store, Config()).status) for _ in range(20)), 3)
        figures["verify_full_s"] = round(timed_ms(store.verify) / 1000, 2)
    figures["arm_ms"] = round(_arm_ms(aged.path), 1)
    run = _run(aged.path)
    figures["run_start_ms"] = round(run.start_ms, 1)
    figures["run_exit_code"], figures["run_watchdog_trips"] = run.exit_code, run.watchdog_trips
    with RecordStore(aged.path, writer=False) as store:
        figures["verify_incremental_ms"] = round(timed_ms(store.verify_since_checkpoint), 1)
    with RecordStore(aged.path) as store:
        appends = [timed_ms(lambda i=i: store.append(*bench_event(i), None)) for i in range(APPENDS)]  # type: ignore[misc]
    figures["append_ms_p99"] = round(p99(appends), 3)
    return figures


def _quietly(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


# The reader in a process of its own, which reports its peak resident memory as it ends: the
# kernel's high-water mark of its own address space (VmHWM; getrusage and wait4 would count the
# memory of the bench process it was forked from).
PEAK_REPORTER = (
    "import sys\n"
    "from controller.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "    print(hwm.split()[1], file=sys.stderr)\n"
)


def _peak_rss_mb(argv: list[str]) -> float | None:
    """The reader's peak resident memory (Linux /proc); None where the kernel does not say."""
    done = subprocess.run([sys.executable, "-c", PEAK_REPORTER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    last = done.stderr.strip().splitlines()[-1:] or [""]
    return round(int(last[0]) / 1024, 1) if last[0].isdigit() else None


def _arm_ms(db: Path) -> float:
    """One ARM on the aged store against a simulated device (the gate's device reads included)."""
    library = load_builtins()
    with SimulatedDevice() as device, RecordStore(db) as store, connect(device.serve_pty()) as link:
        treatment = Treatment(store, Config(), link.clock, SessionInfo(operator="dr-bench", patient="P-BENCH"), link)
        treatment.start()
        lesion = Lesion(profile_id="solar-lentigo", site=Site(region=Region.HAND), description="bench")
        procedure = treatment.lesion(lesion, library.get("solar-lentigo"), auto=False)
        elapsed = timed_ms(procedure.arm)
        procedure.stop()  # armed, never fired: the lesion ends there
        procedure.run()
        treatment.end()
    return elapsed


@dataclass(frozen=True, slots=True)
class RunFigures:
    start_ms: float  # `givre run` called -> the simulator reads its FREEZE (the simulator's clock is the host's); NaN if none came
    exit_code: int  # 0: the lesion completed
    watchdog_trips: int  # the device's own count over the run (the real 250 ms watchdog)


def _run(db: Path) -> RunFigures:
    """One whole `givre run` on the aged store against a fresh simulated device."""
    freeze_at: list[float] = []
    with SimulatedDevice() as device:
        port = device.serve_pty()
        device.on_host_frame = lambda at, msg_type: freeze_at.append(at) if msg_type == Freeze.MSG_TYPE and not freeze_at else None
        started = device.now()
        code = _quietly(["run", "--port", port, "--profile", "solar-lentigo", "--site", "hand", "--patient", "P-BENCH",
                         "--db", str(db), "--yes"])
        trips = device.firmware.watchdog_trips
    return RunFigures((freeze_at[0] - started) * 1000 if freeze_at else float("nan"), code, trips)
