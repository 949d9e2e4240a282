"""`givre sim`: serve a simulated device on a pty or TCP until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading

from firmware_bridge.clock import Clock
from sim.device import FAULT_ACTIONS, SimulatedDevice
from sim.firmware import DEFECTS, LIES
from sim.model import CARTRIDGE_SECONDS

HELP = "serve a simulated device on a pty or TCP"
ALL_PCT = 100  # --drop-pct, --corrupt-pct, --delay-pct: a share of frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=["spray", "probe"], default="spray", help="device kind (default: spray)")
    parser.add_argument("--cryogen", choices=["n2o", "ln2"], help="default: n2o for a spray, ln2 for a probe")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal; prints its path first")
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve on TCP (port 0 picks one); prints a socket:// URL first")
    parser.add_argument("--serial", default="SIM-0001", help="serial number the device reports")
    parser.add_argument("--cartridge", type=int, choices=sorted(CARTRIDGE_SECONDS), default=23, help="cartridge size in grams")
    parser.add_argument("--max-freeze-ms", type=int, default=60_000, help="the device's own cap on one freeze")
    parser.add_argument("--drift-ppm", type=float, default=0.0, help="device clock error in parts per million")
    parser.add_argument("--drop-pct", type=float, default=0.0, help="drop this percentage of frames, both directions")
    parser.add_argument("--corrupt-pct", type=float, default=0.0, help="corrupt this percentage of frames")
    parser.add_argument("--delay-pct", type=float, default=0.0, help="delay this percentage of outgoing frames")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="by this many milliseconds")
    parser.add_argument("--scale", type=float, default=1.0, help="virtual time: run this many times faster than the wall")
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and fault dice")
    parser.add_argument(
        "--fault-at",
        action="append",
        default=[],
        metavar="SECONDS:ACTION",
        help=f"inject a fault at a time; actions: {', '.join(sorted(FAULT_ACTIONS))}",
    )
    parser.add_argument(
        "--defect",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a deliberately broken device, to see the conformance kit fail it (repeatable): {', '.join(sorted(DEFECTS))}",
    )
    parser.add_argument(
        "--lie",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a device that lies in its figures on a valid wire, from the start (repeatable; --fault-at SECONDS:lie-NAME "
        f"starts one later, SECONDS:stop-lying ends them): {', '.join(sorted(LIES))}",
    )


def _parse_fault(text: str) -> tuple[float, str]:
    when, _, action = text.partition(":")
    try:
        seconds = float(when)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or action not in FAULT_ACTIONS:
        raise SystemExit(
            f"givre sim: --fault-at {text!r}: expected SECONDS:ACTION with SECONDS >= 0 and ACTION one of "
            f"{', '.join(sorted(FAULT_ACTIONS))}"
        )
    return seconds, action


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, with the allowed values, what argparse's choices cannot check."""
    for name in ("drop_pct", "corrupt_pct", "delay_pct"):
        if not 0 <= getattr(args, name) <= ALL_PCT:
            raise SystemExit(f"givre sim: --{name.replace('_', '-')} {getattr(args, name)}: must be between 0 and 100")
    if args.scale <= 0:
        raise SystemExit(f"givre sim: --scale {args.scale}: must be > 0")
    for name in args.defect:
        if name not in DEFECTS:
            raise SystemExit(f"givre sim: --defect {name!r}: allowed defects are {', '.join(sorted(DEFECTS))}")
    for name in args.lie:
        if name not in LIES:
            raise SystemExit(f"givre sim: --lie {name!r}: allowed lies are {', '.join(sorted(LIES))}")


def run(args: argparse.Namespace) -> int:
    faults = [_parse_fault(item) for item in args.fault_at]
    _check_arguments(args)
    device = SimulatedDevice(
        kind=args.kind, cryogen=args.cryogen, serial=args.serial, max_freeze_ms=args.max_freeze_ms,
        clock=Clock(args.scale), drift_ppm=args.drift_ppm, cartridge_g=args.cartridge, seed=args.seed, defects=args.defect,
        lies=args.lie,
    )
    device.faults.drop_pct, device.faults.corrupt_pct = args.drop_pct, args.corrupt_pct
    device.faults.delay_pct, device.faults.delay_ms = args.delay_pct, args.delay_ms
    for seconds, action in faults:
        device.at(seconds, functools.partial(device.inject, action))
    if args.pty:
        url = device.serve_pty()
    else:
        host, _, port = args.tcp.rpartition(":")
        try:
            url = device.serve_tcp(host or "127.0.0.1", int(port))
        except (ValueError, OSError) as exc:
            raise SystemExit(f"givre sim: --tcp {args.tcp}: cannot listen there ({exc}); use HOST:PORT, e.g. 127.0.0.1:0") from None
    print(url, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    broken = f", defects: {', '.join(sorted(set(args.defect)))}" if args.defect else ""
    broken += f", lies: {', '.join(sorted(set(args.lie)))}" if args.lie else ""
    print(f"simulated {args.kind} ({device.model.cryogen}) serial {args.serial}{broken}; Ctrl-C to stop", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    device.close()
    return 0
