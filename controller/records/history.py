"""The record read back: sessions, lesions and cycles rebuilt from the event log.

Whatever reads sessions, lesions or cycles (`givre records`, `givre run`'s billing, the exports and
FHIR, the day report's sessions, the UI) goes through this one view, so they cannot disagree; what
leaves the practice (exports, the day report) reads `verified_sessions`, after the chain verified.
Figures are the recorded ones: durations are the device's measurements (or flagged host-measured),
never the plan.

A few readers walk the events themselves (typed, records/events.py), for facts this view does not keep:
- records/ledger.py: the cartridge_* events (a cartridge outlives sessions: its state is summed
  across all of them);
- procedure/recovery.py: an unfinished session's own events (the FREEZE's txn, device session and
  reservation), to settle what a killed host left open;
- practice/report.py: events outside any session (alarms, calibration certificates) and the loaded
  cartridges' prices;
- `givre records show` prints a session's events as recorded, and bench/clinic_day.py audits the
  freeze_result rows themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from controller.errors import RecordError
from controller.records import events as schema
from controller.records.certainty import Certainty
from controller.records.store import RecordStore, StoredEvent


@dataclass
class CycleView:
    cycle: int
    freeze_ms_requested: int | None
    freeze_ms_effective: int | None
    freeze_ms_device: int | None  # the device's valve-open time; None when it could not be known
    measured_by: str  # "device" or "host" (manual mode)
    certainty: Certainty | None  # None where the record has none

    end_reason: str | None
    limited_by: str | None
    halo_to_off_ms: int | None
    min_tissue_c: float | None
    cartridge_id: str | None
    cartridge_seconds: float
    result_at: str
    thaw_ms: int | None = None
    recovered: bool = False


@dataclass
class LesionView:
    lesion_id: str
    recorded_at: str
    profile_id: str
    profile_name_fr: str
    profile_name_en: str | None
    family: str | None
    technique: str  # "cryotherapy" or "cryosurgery" (the profile's indication)
    site: dict[str, Any]
    zone: str
    size_mm: float | None
    description: str
    photo: dict[str, str] | None
    reimbursable: bool
    status: str = "in progress"  # the procedure's final state: "completed", "aborted", "faulted", ...
    ended_at: str | None = None
    first_freeze_at: str | None = None
    cycles: list[CycleView] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    tissue_targets: dict[int, float] = field(default_factory=dict)  # cycle -> the target (C) the tissue reached: its hold started
    # The host's monotonic clock (ms) at the same events: durations that a wall clock stepped back cannot reverse.
    recorded_mono_ms: float = 0.0
    first_freeze_mono_ms: float | None = None
    ended_mono_ms: float | None = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def site_text(self) -> str:
        parts = [self.site.get("region") or "", self.site.get("side") or "", self.site.get("detail") or ""]
        return ", ".join(p for p in parts if p)


@dataclass
class SessionView:
    session_id: str
    started: str
    patient: str  # pseudonymous id: the only patient identifier Givre holds ('erased' once its key is destroyed)
    operator: str
    mode: str
    device: dict[str, Any] | None
    calibration: dict[str, Any]
    time_scale: float = 1.0  # 1: real time; N: virtual time N times faster (a simulator); records without it read as 1
    status: str = "in progress"
    ended: str | None = None
    recovered: bool = False
    lesions: list[LesionView] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    billing: dict[str, Any] | None = None  # the clinician's confirmed choice, once recorded
    first_seq: int = 0
    last_seq: int = 0

    @property
    def cycles(self) -> list[CycleView]:
        return [c for lesion in self.lesions for c in lesion.cycles]

    @property
    def scaled(self) -> bool:
        """Recorded on virtual time: a simulator's session, whose host-timed figures are not wall time."""
        return self.time_scale != 1

    @property
    def cartridge_seconds(self) -> float:
        return round(sum(c.cartridge_seconds for c in self.cycles), 3)

    def lesion(self, lesion_id: str) -> LesionView | None:
        return next((lesion for lesion in self.lesions if lesion.lesion_id == lesion_id), None)

    def local_day(self) -> date:
        return local_time(self.started).date()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cartridge_seconds"] = self.cartridge_seconds
        return data


def local_time(ts_utc: str) -> datetime:
    """A recorded UTC timestamp in this machine's time zone: the clinic's day and clock."""
    return datetime.fromisoformat(ts_utc).astimezone()


def build_sessions(events: Iterable[StoredEvent]) -> dict[str, SessionView]:
    """The sessions the events make, from events revealed (records/personal.py) and then typed once
    each (records/events.py); only the kinds history folds are parsed."""
    sessions: dict[str, SessionView] = {}
    for event in events:
        sid = event.session_id
        if sid is None:
            continue
        typed = schema.parse(event) if event.kind in FOLDED else None
        if isinstance(typed, schema.SessionStarted):
            sessions[sid] = SessionView(sid, event.ts_utc, _shown(typed.patient), typed.operator, typed.mode,
                                        None if typed.device is None else _as_recorded(typed.device), _as_recorded(typed.calibration),
                                        time_scale=typed.time_scale, first_seq=event.seq)
        if sid in sessions:
            if typed is not None:
                _apply(sessions[sid], typed, event)
            sessions[sid].last_seq = event.seq
    return sessions


# Events that change the session as a whole (an alarm also goes to its lesion, when it names one).
SessionEvent = schema.FreezeUnresolved | schema.AlarmRaised | schema.BillingConfirmed | schema.SessionEnded
# The kinds history reads; every other kind only moves a session's last_seq.
FOLDED = frozenset({"session_started", "lesion_recorded", "freeze_unresolved", "alarm_raised", "billing_confirmed", "session_ended",
                    "freeze_requested", "freeze_result", "thaw_done", "lesion_ended", "start_refused", "freeze_refused", "fire_refused",
                    "tissue_target_reached"})


def _apply(session: SessionView, typed: schema.EventModel, event: StoredEvent) -> None:
    if isinstance(typed, schema.LesionRecorded):
        profile = typed.profile
        session.lesions.append(LesionView(
            typed.lesion_id, event.ts_utc, profile.id, profile.name_fr, profile.name_en, profile.family, profile.indication,
            _as_recorded(typed.site), typed.zone, typed.size_mm, _shown(typed.description),
            None if typed.photo is None else _as_recorded(typed.photo), typed.reimbursable, recorded_mono_ms=event.mono_ms))
    elif isinstance(typed, SessionEvent):
        _apply_to_session(session, typed, event)
    elif isinstance(typed, schema.LesionEvent) and (lesion := session.lesion(typed.lesion_id)) is not None:
        _apply_to_lesion(lesion, typed, event)


def _apply_to_session(session: SessionView, typed: SessionEvent, event: StoredEvent) -> None:
    if isinstance(typed, schema.FreezeUnresolved):
        session.status = "unresolved"  # open until its device (the session's) is read at a connection
    elif isinstance(typed, schema.AlarmRaised):
        alarm = {"code": typed.code, "priority": typed.priority, "text": typed.text, "detail": typed.detail, "at": event.ts_utc,
                 "lesion_id": typed.lesion_id}
        session.alarms.append(alarm)
        lesion = None if typed.lesion_id is None else session.lesion(typed.lesion_id)
        if lesion is not None:
            lesion.alarms.append(alarm)
    elif isinstance(typed, schema.BillingConfirmed):
        session.billing = _as_recorded(typed)
    else:
        session.status, session.ended, session.recovered = typed.status, event.ts_utc, typed.recovered
        for open_lesion in session.lesions:
            if open_lesion.ended_at is None:
                open_lesion.status = session.status


def _apply_to_lesion(lesion: LesionView, typed: schema.LesionEvent, event: StoredEvent) -> None:
    if isinstance(typed, schema.FreezeRequested) and lesion.first_freeze_at is None:
        lesion.first_freeze_at, lesion.first_freeze_mono_ms = event.ts_utc, event.mono_ms
    elif isinstance(typed, schema.FreezeResult):
        cycle = CycleView(
            typed.cycle, typed.freeze_ms_requested, typed.freeze_ms_effective, typed.freeze_ms_device, typed.measured_by,
            typed.certainty, typed.end_reason, typed.limited_by, typed.halo_to_off_ms, typed.min_tissue_c, typed.cartridge_id,
            # Gas only where a cartridge was charged: older records gave a cotton-tip cycle its timed seconds.
            typed.cartridge_seconds if typed.cartridge_id is not None else 0.0, event.ts_utc, recovered=typed.recovered)
        lesion.cycles = [c for c in lesion.cycles if c.cycle != cycle.cycle] + [cycle]
    elif isinstance(typed, schema.ThawDone):
        for c in lesion.cycles:
            if c.cycle == typed.cycle:
                c.thaw_ms = typed.thaw_ms
    elif isinstance(typed, schema.LesionEnded):
        lesion.status, lesion.ended_at, lesion.ended_mono_ms = typed.status.lower(), event.ts_utc, event.mono_ms
    elif isinstance(typed, schema.StartRefused):
        lesion.refused.extend(typed.reasons)
    elif isinstance(typed, schema.TissueTargetReached):
        lesion.tissue_targets[typed.cycle] = typed.target_c
    elif isinstance(typed, schema.FreezeRefused | schema.FireRefused):
        lesion.refused.append(typed.reason)


def _shown(value: schema.Personal) -> str:
    """A personal field as history holds it: revealed (clear, 'erased' or 'unreadable: ...') before it was typed."""
    if isinstance(value, schema.Envelope):
        raise RecordError("history read a personal field still encrypted", "Read the events through history.revealed")
    return value


def _as_recorded(part: schema.Part) -> dict[str, Any]:
    """A nested structure the view keeps as recorded (the exports write it as it is): the fields the
    record holds, without the defaults an older record lacks."""
    return part.model_dump(mode="json", by_alias=True, exclude_unset=True)


def load_sessions(store: RecordStore, session_id: str | None = None, since: date | None = None,
                  until: date | None = None) -> list[SessionView]:
    """Sessions in the order they started: one session, or those started on local days in
    [since, until). A bounded period reads only its sessions' events (found by the sessions index)."""
    if session_id is not None:
        events: Iterable[StoredEvent] = store.events(session_id)
    elif since is None and until is None:
        events = store.events()
    else:
        events = store.session_events(store.session_ids(*utc_window(since, until)))
    views = build_sessions(revealed(store, events))
    return [v for v in views.values() if (since is None or v.local_day() >= since) and (until is None or v.local_day() < until)]


def revealed(store: RecordStore, events: Iterable[StoredEvent]) -> Iterator[StoredEvent]:
    """The events with their personal fields in clear, 'erased' or 'unreadable: ...' (records/personal.py)."""
    for event in events:
        shown = store.reveal(event)
        yield event if shown is event.payload else replace(event, payload=shown)


def utc_window(since: date | None, until: date | None) -> tuple[str | None, str | None]:
    """Local days [since, until) in the store's UTC timestamp spelling, a day wider each side (zone
    changes); None: unbounded. It narrows an indexed read; the reader still filters on the local day."""
    return _utc_bound(since, -1), _utc_bound(until, +1)


def _utc_bound(day: date | None, slack_days: int) -> str | None:
    if day is None:
        return None
    try:
        bound = datetime.combine(day, time.min).astimezone().astimezone(UTC) + timedelta(days=slack_days)
    except (OverflowError, ValueError):
        return None
    return bound.isoformat(timespec="milliseconds")


class ChainBroken(RecordError):
    """The hash chain does not verify from ``first_bad`` on: nothing read from there may leave the
    practice as if the record were sound."""

    def __init__(self, path: Path, first_bad: StoredEvent) -> None:
        self.first_bad = first_bad
        self.finding = (f"event {first_bad.seq} ({first_bad.kind}, {first_bad.ts_utc}) does not follow the hash chain, "
                        "so the record from it on cannot be trusted")
        super().__init__(f"{path}: {self.finding}", "Run `givre records verify` and restore the store from a backup")


def verified_sessions(store: RecordStore, session_id: str | None = None, since: date | None = None,
                      until: date | None = None) -> list[SessionView]:
    """``load_sessions`` once the chain has verified from the last seal on (exports, the day report:
    store.verify_since_checkpoint; the whole chain when nothing is sealed); raises ChainBroken otherwise."""
    bad = store.verify_since_checkpoint()
    if bad is not None:
        raise ChainBroken(store.path, bad)
    return load_sessions(store, session_id, since, until)


def view_of(store: RecordStore, session_id: str) -> SessionView:
    """One session's view; the session must exist (callers hold its id from the record)."""
    (view,) = load_sessions(store, session_id)
    return view
