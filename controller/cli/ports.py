"""`givre ports`: the serial ports the OS knows, to pick a device's port."""

from __future__ import annotations

import argparse

from controller.records.text import printable
from firmware_bridge.transport import list_ports

HELP = "list serial ports with their USB description and serial number"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    ports = list_ports()
    if not ports:
        print("no serial port found: plug the device in (USB), then run `givre ports` again")
        return 1
    width = max(len(port.device) for port in ports)
    print(f"{'port':{width}}  {'USB serial':16}  description")
    for port in ports:
        print(printable(f"{port.device:{width}}  {port.serial_number or '-':16}  {port.description}"))
    return 0
