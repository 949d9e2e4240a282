"""The firmware_bridge exception tree. Every message names the port and says what to do.

    BridgeError
    ├── PortError            the port could not be opened
    │   ├── PortNotFound
    │   ├── PortPermissionDenied
    │   └── PortBusy
    ├── HandshakeError       something answered, but not a device we may drive
    │   ├── NotAGivreDevice
    │   ├── VersionMismatch
    │   └── WrongDeviceKind
    ├── LinkLost             the device stopped answering or the port went away
    ├── DeviceRebooted       the device's boot counter changed: every pending command is void
    ├── CommandTimeout       no answer after the retries: the outcome is UNKNOWN
    ├── UnexpectedReply      the device answered a request with a message the protocol does not allow there
    └── CommandRejected      the device answered and refused (carries its result code)
        └── DeviceFault      ...because a latched fault holds its valve closed (carries the flags)
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error raised by firmware_bridge."""

    def __init__(self, port: str, problem: str, action: str) -> None:
        self.port = port
        self.problem = problem
        self.action = action
        super().__init__(f"{port}: {problem}. {action}")


class PortError(BridgeError):
    pass


class PortNotFound(PortError):
    pass


class PortPermissionDenied(PortError):
    pass


class PortBusy(PortError):
    pass


class HandshakeError(BridgeError):
    pass


class NotAGivreDevice(HandshakeError):
    pass


class VersionMismatch(HandshakeError):
    pass


class WrongDeviceKind(HandshakeError):
    pass


class LinkLost(BridgeError):
    pass


class DeviceRebooted(BridgeError):
    pass


class CommandTimeout(BridgeError):
    def __init__(self, port: str, problem: str, action: str, txn: int | None = None) -> None:
        super().__init__(port, problem, action)
        self.txn = txn  # the request's transaction id, to look it up in the device's counters


class UnexpectedReply(BridgeError):
    pass


class CommandRejected(BridgeError):
    def __init__(self, port: str, problem: str, action: str, result: int) -> None:
        super().__init__(port, problem, action)
        self.result = result


class DeviceFault(CommandRejected):
    def __init__(self, port: str, problem: str, action: str, result: int, fault_flags: int) -> None:
        super().__init__(port, problem, action, result)
        self.fault_flags = fault_flags
