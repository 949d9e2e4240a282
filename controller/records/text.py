"""Text from a device or from the record, made safe to print on a terminal.

A serial number, a site detail or a description is data, not terminal commands: an escape sequence
in one could clear the screen, rewrite earlier lines (a "completed" over a fault) or retitle the
window. Every control character (C0, DEL, C1) is shown as \\xNN instead; everything else, accents
included, is printed as it is.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with its control characters escaped as \\xNN (newlines kept for a multi-line report)."""
    pattern = CONTROL_BUT_NEWLINE if keep_newlines else CONTROL
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
