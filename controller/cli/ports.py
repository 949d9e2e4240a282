"""`givre ports`: the serial ports the OS knows, to pick a device's port."""

from __future__ import annotations

import argparse

from firmware_bridge.transport import list_ports

HELP = "list serial ports with their USB description and serial number"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    for port in list_ports():
        print(f"{port.device}\t{port.description}\tserial={port.serial_number or '-'}")
    return 0
