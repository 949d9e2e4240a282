"""`givre demo`: the embedded simulator on a real pty, driven through the real link, headless.

Shows a newcomer the whole path with no hardware: handshake, device-timed freezes with live
telemetry, controller-timed thaws, and what the device says really happened.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from controller.freeze import FreezeOutcome, supervise_freeze
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import NOT_AVAILABLE_TEMP, NOT_AVAILABLE_U16, Fault
from firmware_bridge.session import TelemetryReceived
from sim.device import SimulatedDevice

Print = Callable[[str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=["spray", "probe"], default="spray")
    parser.add_argument("--freeze-s", type=float, default=10.0, help="freeze per cycle (default 10 s: common wart, practice sheet)")
    parser.add_argument("--cycles", type=int, default=1, help="freeze-thaw cycles (1..3)")
    parser.add_argument("--thaw-s", type=float, default=20.0, help="thaw wait between cycles (a demo value, not a clinical figure)")
    parser.add_argument("--scale", type=float, default=1.0, help="virtual time: run this many times faster than the wall")
    parser.add_argument("--headless", action="store_true", help="no UI: run the cycles and print what happened")
    parser.add_argument("--db", type=Path, help="record store for the UI (default: a fresh one in a temporary folder)")


def run(args: argparse.Namespace, out: Print = print) -> int:
    if not args.headless:
        return run_tui(args)
    return run_headless(args, out)


def run_tui(args: argparse.Namespace) -> int:
    """The whole product on the embedded simulator: a spray on a pty, a fresh record store."""
    import tempfile
    from datetime import date

    from controller.ledger import CartridgeLedger
    from controller.tui import launch

    with tempfile.TemporaryDirectory(prefix="givre-demo-") as scratch, SimulatedDevice(kind=args.kind, clock=Clock(args.scale)) as device:
        url = device.serve_pty()
        args.db = args.db or Path(scratch) / "demo.sqlite"
        clinic = launch.build_clinic(args, device=device, url=url, clock=device.clock)
        if args.kind == "spray" and CartridgeLedger(clinic.store, clinic.config).status() is None:
            CartridgeLedger(clinic.store, clinic.config).load("23g", date.today())
        return launch.run_app(clinic)


def run_headless(args: argparse.Namespace, out: Print = print) -> int:
    if not 0 < args.freeze_s <= 60:
        raise SystemExit(f"givre demo: --freeze-s {args.freeze_s}: must be > 0 and <= 60 s")
    if not 1 <= args.cycles <= 3:
        raise SystemExit(f"givre demo: --cycles {args.cycles}: must be 1, 2 or 3")
    if args.thaw_s < 0 or args.scale <= 0:
        raise SystemExit("givre demo: --thaw-s must be >= 0 and --scale > 0")
    clock = Clock(args.scale)
    with SimulatedDevice(kind=args.kind, clock=clock) as device:
        path = device.serve_pty()
        out(f"simulated {args.kind} device on {path}")
        # In virtual time the watchdog is scaled too, so it stays 250 ms of wall time.
        with Link.open(path, clock=clock, watchdog_ms=min(60_000, round(250 * max(1.0, args.scale)))) as link:
            ident = link.identity
            assert ident is not None
            out(
                f"connected: {ident.kind.name.lower()} serial {ident.serial}, firmware {ident.firmware}, protocol {ident.protocol}, "
                f"cryogen {ident.cryogen.name}, device cap {ident.max_freeze_ms} ms, watchdog {ident.watchdog_ms} ms"
            )
            outcomes = []
            for cycle in range(1, args.cycles + 1):
                out(f"cycle {cycle}/{args.cycles}: FREEZE {args.freeze_s:g} s, timed by the device")
                outcome = supervise_freeze(link, round(args.freeze_s * 1000), on_telemetry=_progress_printer(out))
                outcomes.append(outcome)
                out(_describe(outcome))
                if outcome.end_reason is None or outcome.end_reason.name != "COMPLETED":
                    break
                if cycle < args.cycles:
                    out(f"cycle {cycle}/{args.cycles}: THAW {args.thaw_s:g} s (controller-timed; valve closed)")
                    link.heartbeat_for(args.thaw_s, host_state=4)  # controller-timed, valve closed
            counters = link.counters()
            out(
                f"device counters: {counters.freezes_started} freezes, {counters.total_valve_open_ms} ms valve open since boot, "
                f"watchdog trips {counters.watchdog_trips}, faults {_faults(counters.fault_flags)}"
            )
            gas_s = sum(o.valve_open_ms or 0 for o in outcomes) / 1000
            out(f"cartridge: {gas_s:.3f} s of spray used; {device.model.cartridge.remaining_g:.2f} g left of {device.model.cartridge.size_g:g} g")
    return 0 if all(o.end_reason is not None and o.end_reason.name == "COMPLETED" for o in outcomes) else 1


def _progress_printer(out: Print) -> Callable[[TelemetryReceived], None]:
    last_second = [-1]

    def show(item: TelemetryReceived) -> None:
        t = item.telemetry
        second = t.elapsed_ms // 1000
        if not t.valve & 1 or second == last_second[0]:
            return
        last_second[0] = second
        parts = [f"  {t.elapsed_ms / 1000:5.1f} s elapsed, {t.remaining_ms / 1000:5.1f} s left (device)"]
        if t.pressure_kpa != NOT_AVAILABLE_U16:
            parts.append(f"{t.pressure_kpa / 100:.1f} bar")
        if t.tip_cdeg != NOT_AVAILABLE_TEMP:
            parts.append(f"tip {t.tip_cdeg / 100:.1f} C")
        if t.tissue_cdeg != NOT_AVAILABLE_TEMP:
            parts.append(f"tissue {t.tissue_cdeg / 100:.1f} C")
        out(", ".join(parts))

    return show


def _describe(outcome: FreezeOutcome) -> str:
    if outcome.valve_open_ms is None:
        return f"  outcome UNKNOWN: requested {outcome.requested_ms} ms; the device could not say what happened"
    reason = outcome.end_reason.name if outcome.end_reason else "?"
    return (
        f"  ended {reason}: requested {outcome.requested_ms} ms, device measured {outcome.valve_open_ms} ms valve open "
        f"({outcome.certainty.value}); host saw {outcome.host_elapsed_ms:.0f} ms"
    )


def _faults(flags: int) -> str:
    names = [f.name for f in Fault if flags & f and f.name]
    return ", ".join(names) if names else "none"
