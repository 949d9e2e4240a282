"""The procedure's explicit state table: its states, the triggers that move it, and how a freeze's
end reason moves it. Anything absent from TRANSITIONS is refused; STOP is handled first, from any
state (docs/procedure.md draws it)."""

from __future__ import annotations

import enum

from firmware_bridge.messages import EndReason


class State(enum.Enum):
    IDLE = "idle"
    ARMED = "armed"
    FREEZING = "freezing"
    THAWING = "thawing"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAULTED = "faulted"
    UNCERTAIN = "uncertain"


TERMINAL = frozenset({State.COMPLETED, State.ABORTED, State.FAULTED})
# The device may be spraying: STOP goes to it, and only its FREEZE_DONE (or the reconcile rule) ends the cycle.
FREEZE_MAY_RUN = frozenset({State.FREEZING, State.UNCERTAIN})

# (state, trigger) -> next state. Anything absent is refused. STOP is handled first, from any state.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.IDLE, "arm"): State.ARMED,
    (State.ARMED, "fire"): State.FREEZING,
    (State.ARMED, "refused"): State.FAULTED,
    (State.FREEZING, "cycle_done"): State.THAWING,
    (State.FREEZING, "last_cycle_done"): State.COMPLETED,
    (State.FREEZING, "stopped"): State.ABORTED,
    (State.FREEZING, "faulted"): State.FAULTED,
    (State.FREEZING, "outcome_unknown"): State.UNCERTAIN,
    (State.UNCERTAIN, "cycle_done"): State.THAWING,
    (State.UNCERTAIN, "last_cycle_done"): State.COMPLETED,
    (State.UNCERTAIN, "stopped"): State.ABORTED,
    (State.UNCERTAIN, "faulted"): State.FAULTED,
    (State.UNCERTAIN, "reconciled"): State.FAULTED,  # never resumed: the record says what the device did
    (State.UNCERTAIN, "give_up"): State.FAULTED,  # still unknown: the next connection or crash recovery reads it
    (State.THAWING, "thaw_done"): State.ARMED,
    (State.THAWING, "faulted"): State.FAULTED,
    (State.ARMED, "faulted"): State.FAULTED,
}

# How a freeze's end reason (the device's, or the host timer's in manual mode) moves the protocol.
END_TRIGGERS: dict[EndReason, str] = {
    EndReason.COMPLETED: "done",
    EndReason.CAP: "done",
    EndReason.STOPPED: "stopped",
    EndReason.WATCHDOG: "faulted",
    EndReason.TRIGGER_RELEASED: "faulted",
    EndReason.CARTRIDGE_EMPTY: "faulted",
    EndReason.FAULT: "faulted",
    EndReason.RESET: "faulted",
    EndReason.NEW_SESSION: "faulted",
}


def state_table() -> str:
    """TRANSITIONS and END_TRIGGERS as the Markdown docs/procedure.md shows (a test keeps the two equal)."""
    rows = ["| from | trigger | to |", "|---|---|---|"]
    rows += [f"| {state.value} | {trigger} | {target.value} |" for (state, trigger), target in TRANSITIONS.items()]
    rows += [f"| {state.value} | stop | {State.ABORTED.value} (handled before the table) |"
             for state in State if state not in TERMINAL and state not in FREEZE_MAY_RUN]
    rows += ["", "| device end reason | trigger |", "|---|---|"]
    rows += [f"| {reason.name} | {trigger} |" for reason, trigger in END_TRIGGERS.items()]
    return "\n".join(rows)
