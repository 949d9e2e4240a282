"""The record's schema: one frozen model per event kind, checked when written and typed when read.

Every writer's payload goes through ``validate`` in RecordStore.append/append_many before anything
is written: an unknown kind, a missing or extra field, or a value of the wrong type is refused
(EventInvalid, one line naming the kind and the field) and nothing is recorded. Readers turn a
stored event into its model with ``parse``, which is lenient where the log is old: a field listed
in a model's ``added_later`` was not written by older Givre versions, so it reads as its default
there, while a writer today must give it. Fields with a default that are not in ``added_later``
are written only when there is something to say (their description says when).

Personal fields (records/personal.py) are typed ``Personal``: an envelope as stored, a plain
string in records from before encryption or once read back in clear. docs/records.md's "The event
schema" is generated from ``EVENTS`` (a test compares them). To change a kind: add the field with a
default, list it in ``added_later``, and bump the kind's ``version``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.errors import RecordError
from controller.records.certainty import Certainty


class EventInvalid(RecordError):
    """A payload that does not fit its kind's model (or a kind no model has): nothing was written."""


class Part(BaseModel):
    """A nested structure of fixed shape inside a payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    added_later: ClassVar[frozenset[str]] = frozenset()  # older records lack these: default when read, required when written


class EventModel(Part):
    """One event kind's payload; ``kind`` is its name in the log, ``version`` its schema version."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1


class LesionEvent(EventModel):
    """Written by a lesion's procedure (procedure/driver.py adds the lesion's id)."""

    lesion_id: str


# ---- nested parts ------------------------------------------------------------------------------


class Envelope(Part):
    """A personal field encrypted under its patient's key (records/personal.py)."""

    enc: Literal["aesgcm/1"]
    key: str
    nonce: str
    ct: str


Personal = str | Envelope  # clear in records from before encryption, and once read back


class Device(Part):
    """The device as the handshake described it; boot_count -1 where an older record does not say."""

    serial: str
    kind: str = ""
    firmware: str = ""
    protocol: str = ""
    cryogen: str = ""
    boot_count: int = -1
    max_freeze_ms: int | None = None
    watchdog_ms: int | None = None
    port: str = ""
    device_session: int | None = None
    added_later: ClassVar[frozenset[str]] = frozenset({
        "kind", "firmware", "protocol", "cryogen", "boot_count", "max_freeze_ms", "watchdog_ms", "port", "device_session"})


class Calibration(Part):
    """The device's calibration at the session's start; a manual session has its status only."""

    status: str = "unknown"
    calibrated_on: str | None = None
    due_on: str | None = None
    flow_mg_per_s: int | None = None
    timer_ppm: int | None = None


class DoseLimit(Part):
    limit: str
    ms: int
    reason: str


class BelowMinimum(Part):
    """The clinician's override of the profile's minimum dose: who and why."""

    minimum_ms: int
    by: str
    why: str


class DoseFields(Part):
    """The dose decided for a cycle (procedure/dose.py); below_minimum only with an override."""

    requested_ms: int
    effective_ms: int
    limited_by: str
    chain: tuple[DoseLimit, ...] = ()
    below_minimum: BelowMinimum | None = None
    added_later: ClassVar[frozenset[str]] = frozenset({"chain"})


class ProfileRef(Part):
    id: str
    name_fr: str
    name_en: str | None = None
    family: str | None = None
    origin: str = ""
    overrides_builtin: bool = False
    indication: str = "cryotherapy"
    added_later: ClassVar[frozenset[str]] = frozenset({"name_en", "family", "origin", "overrides_builtin", "indication"})


class SiteRef(Part):
    region: str
    side: str | None = None
    detail: Personal = ""
    added_later: ClassVar[frozenset[str]] = frozenset({"side", "detail"})


class PhotoRef(Part):
    sha256: str
    file: str


class CycleFigures(Part):
    """A cycle's figures as the procedure keeps them (core.CycleRecord.summary); implausible only when not believed."""

    cycle: int
    freeze_ms_requested: int | None = None
    freeze_ms_effective: int | None = None
    freeze_ms_device: int | None = None
    halo_to_off_ms: int | None = None
    thaw_ms: int | None = None
    limited_by: str | None = None
    end_reason: str | None = None
    certainty: Certainty | None = None
    measured_by: Literal["device", "host"] = "device"
    min_tissue_c: float | None = None
    implausible: str | None = None
    added_later: ClassVar[frozenset[str]] = frozenset({
        "freeze_ms_requested", "freeze_ms_effective", "freeze_ms_device", "halo_to_off_ms", "thaw_ms", "limited_by", "end_reason",
        "certainty", "measured_by", "min_tissue_c"})


class ChosenAct(Part):
    code: str
    association_code: int | None
    rate: str
    label: str
    verified: bool
    tariff_eur: str | None
    amount_eur: str | None


class ProposedAct(Part):
    code: str
    label: str
    verified: bool
    lesions: int
    lesion_ids: tuple[str, ...]
    tariff_eur: str | None
    association_code: int | None
    rate: str
    amount_eur: str | None


class Proposal(Part):
    acts: tuple[ProposedAct, ...]
    not_billed: tuple[str, ...]
    aesthetic_lesions: int
    warnings: tuple[str, ...]
    table_version: str
    total_eur: str | None


class SelftestCheck(Part):
    name: str
    verdict: str
    detail: str
    fix: str


class CalibrationStep(Part):
    step: str
    passed: bool
    measurements: dict[str, Any]  # each step measures its own figures (device/calibration.py)
    tolerance: str
    written: dict[str, int]


# ---- sessions and lesions ----------------------------------------------------------------------


class SessionStarted(EventModel):
    """A session starts (procedure/treatment.py): who, the device, its calibration, the host's time scale."""

    kind: ClassVar[str] = "session_started"
    operator: str
    patient: Personal
    mode: Literal["device", "manual"] = "device"
    device: Device | None = None
    calibration: Calibration = Calibration()
    time_scale: float = 1.0
    added_later: ClassVar[frozenset[str]] = frozenset({"mode", "device", "calibration", "time_scale"})


class LesionRecorded(LesionEvent):
    """The clinician records a lesion before its procedure (procedure/treatment.py)."""

    kind: ClassVar[str] = "lesion_recorded"
    profile: ProfileRef
    site: SiteRef
    zone: str
    size_mm: float | None = None
    description: Personal = ""
    photo: PhotoRef | Envelope | None = None
    reimbursable: bool = True
    added_later: ClassVar[frozenset[str]] = frozenset({"size_mm", "description", "photo", "reimbursable"})


class LesionEnded(LesionEvent):
    """A lesion's procedure closes (procedure/core.py): its final state, its cycles, the gas it used."""

    kind: ClassVar[str] = "lesion_ended"
    status: str
    cycles: tuple[CycleFigures, ...] = ()
    cartridge_seconds_used: float = 0.0
    added_later: ClassVar[frozenset[str]] = frozenset({"cycles", "cartridge_seconds_used"})


class SessionEnded(EventModel):
    """A session closes: by the clinician (procedure/treatment.py, with the head it follows) or by
    recovery (procedure/recovery.py: recovered, with what the device said)."""

    kind: ClassVar[str] = "session_ended"
    status: str
    lesions: int | None = None  # the clinician's end only, as are events_before and head_before
    events_before: int | None = None
    head_before: str | None = None
    recovered: bool = False  # recovery's end only, with its finding
    finding: str | None = None


class BillingConfirmed(EventModel):
    """The clinician confirms or changes the billing proposal (practice/billing.py); the latest counts."""

    kind: ClassVar[str] = "billing_confirmed"
    proposed: Proposal
    chosen: tuple[ChosenAct, ...]
    changed: bool
    by: str
    reimbursement_requested: bool = True
    aesthetic_lesions: int = 0
    added_later: ClassVar[frozenset[str]] = frozenset({"reimbursement_requested", "aesthetic_lesions"})


class PatientErased(EventModel):
    """A patient's key was destroyed (`givre records erase`): key id, why, by whom, the sessions; never the id."""

    kind: ClassVar[str] = "patient_erased"
    key: str
    why: str
    by: str
    sessions: tuple[str, ...]


# ---- a lesion's procedure (procedure/core.py) --------------------------------------------------


class StateChanged(LesionEvent):
    """The procedure moves from one state to another (procedure/states.py's table)."""

    kind: ClassVar[str] = "state_changed"
    from_: str = Field(alias="from")  # 'from' is Python's keyword
    to: str
    trigger: str


class Armed(LesionEvent):
    """The start gate passed: the plan (cycles, dose, mode, trigger, spray cap), warnings and the cartridge reserved."""

    kind: ClassVar[str] = "armed"
    cycles: int
    dose: DoseFields
    mode: str
    trigger: str
    spray_cap_ms: int
    warnings: tuple[str, ...]
    cartridge_id: str | None


class StartRefused(LesionEvent):
    """Arming was refused, with every reason at once."""

    kind: ClassVar[str] = "start_refused"
    reasons: tuple[str, ...]


class Stopped(LesionEvent):
    """STOP before any freeze ran; freeze_sent=false when STOP came while the counters were read."""

    kind: ClassVar[str] = "stopped"
    state: str
    freeze_sent: bool | None = None


class FreezeRequested(DoseFields, LesionEvent):
    """A cycle's freeze is asked for, before the FREEZE is sent: its dose and, for a device, the
    counters reconciliation compares with (mode through last_txn_before); a manual freeze says
    measured_by=host instead."""

    kind: ClassVar[str] = "freeze_requested"
    cycle: int
    mode: str | None = None
    spray_cap_ms: int | None = None
    serial: str | None = None
    boot_count: int | None = None
    device_session: int | None = None
    freezes_started_before: int | None = None
    last_txn_before: int | None = None
    measured_by: Literal["device", "host"] = "device"


class FreezeAccepted(LesionEvent):
    """The device accepted the FREEZE (ACK OK): its txn and the ms it was asked for."""

    kind: ClassVar[str] = "freeze_accepted"
    cycle: int
    txn: int
    device_ms: int


class FreezeUnanswered(LesionEvent):
    """No answer came to the FREEZE: its txn, for reconciliation."""

    kind: ClassVar[str] = "freeze_unanswered"
    cycle: int
    txn: int | None


class FreezeRefused(LesionEvent):
    """The device refused the FREEZE (its result code and why)."""

    kind: ClassVar[str] = "freeze_refused"
    cycle: int
    reason: str
    result: str | int | None


class FireRefused(LesionEvent):
    """A headless FIRE gave up after AUTO_FIRE_PATIENCE_S."""

    kind: ClassVar[str] = "fire_refused"
    reason: str


class HaloMarked(LesionEvent):
    """The device took the halo mark: the counted hold's ms left."""

    kind: ClassVar[str] = "halo_marked"
    cycle: int
    remaining_ms: int


class TissueTargetReached(LesionEvent):
    """The tissue reached the profile's target: the hold starts."""

    kind: ClassVar[str] = "tissue_target_reached"
    cycle: int
    tissue_c: float
    target_c: float


class TissueTargetNotBelieved(LesionEvent):
    """The tissue's fall to its target is one no tissue can make: an alarm, not a start of the hold."""

    kind: ClassVar[str] = "tissue_target_not_believed"
    cycle: int
    tissue_c: float
    why: str


class OutcomeUncertain(LesionEvent):
    """A freeze's outcome became unknown (link lost, reboot, no answer): reconciliation starts."""

    kind: ClassVar[str] = "outcome_uncertain"
    cycle: int
    why: str


class FreezeReconciled(LesionEvent):
    """Reconciliation found the freeze not started, or could not know (procedure/reconcile.py)."""

    kind: ClassVar[str] = "freeze_reconciled"
    cycle: int
    found: str
    why: str


class FreezeResult(CycleFigures, LesionEvent):
    """A cycle's figures, once known: by the procedure (device-reported, host-measured, reconciled or
    unknown) or by recovery at a later connection (recovered=true). host_elapsed_ms is None where this
    host did not time it; why says how a reconciled or recovered figure was found."""

    kind: ClassVar[str] = "freeze_result"
    txn: int | None = None
    host_elapsed_ms: int | None = None
    cartridge_id: str | None = None
    cartridge_seconds: float = 0.0
    why: str | None = None
    recovered: bool = False
    added_later: ClassVar[frozenset[str]] = CycleFigures.added_later | {"txn", "host_elapsed_ms", "cartridge_id", "cartridge_seconds"}


class FreezeUnresolved(LesionEvent):
    """A cycle's outcome could not be read within the reconnect window: it stays open for the next connection."""

    kind: ClassVar[str] = "freeze_unresolved"
    cycle: int
    txn: int | None = None
    serial: str = ""
    why: str = ""
    note: str = ""
    added_later: ClassVar[frozenset[str]] = frozenset({"txn", "serial", "why", "note"})


class ThawDone(LesionEvent):
    """A thaw between cycles ended: how long, the tissue then, confirmed by the clinician or auto."""

    kind: ClassVar[str] = "thaw_done"
    cycle: int
    thaw_ms: int
    tissue_c: float | None
    confirmed_by: Literal["auto", "clinician"]


class Reconnected(LesionEvent):
    """The link came back during a lesion."""

    kind: ClassVar[str] = "reconnected"
    boot_count: int | None


class DeviceEvent(EventModel):
    """An event the device reported (procedure/recovery.py: device_event_record): in its lesion, under
    the session it was raised in, or on its own; earlier_session when kept from an earlier link."""

    kind: ClassVar[str] = "device_event"
    lesion_id: str | None = None
    code: str
    end_reason: str
    txn: int
    fault_flags: int
    valve_open_ms: int
    halo_to_off_ms: int | None
    device_uptime_ms: int | None = None
    device_session: int | None = None
    serial: str | None = None
    boot_count: int | None = None
    earlier_session: bool = False
    added_later: ClassVar[frozenset[str]] = frozenset({"device_uptime_ms", "device_session", "serial", "boot_count"})


class DeviceEventsCoalesced(LesionEvent):
    """A flood's events counted per code over a window instead of each recorded."""

    kind: ClassVar[str] = "device_events_coalesced"
    per_code: dict[str, int]
    window_s: float


# ---- alarms (procedure/alarms.py), in a lesion or outside any session (clinic.py) -------------


class AlarmRaised(EventModel):
    """An alarm is raised: its code, priority, words and detail (Givre's own text)."""

    kind: ClassVar[str] = "alarm_raised"
    lesion_id: str | None = None
    code: str
    priority: str
    text: str
    detail: str = ""
    added_later: ClassVar[frozenset[str]] = frozenset({"detail"})


class AlarmCleared(EventModel):
    """An alarm's condition is gone (it stays latched until acknowledged)."""

    kind: ClassVar[str] = "alarm_cleared"
    lesion_id: str | None = None
    code: str


class AlarmAcknowledged(EventModel):
    """An alarm is acknowledged, by whom."""

    kind: ClassVar[str] = "alarm_acknowledged"
    lesion_id: str | None = None
    code: str
    by: str


# ---- the cartridge ledger (records/ledger.py) ---------------------------------------------------


class CartridgeLoaded(EventModel):
    """A cartridge is loaded (`givre cartridge load`): its size, capacity, price and when opened."""

    kind: ClassVar[str] = "cartridge_loaded"
    cartridge_id: str
    size: str
    size_g: float
    nominal_s: float
    price_eur: float
    average_lesions: int
    opened: str
    source: str


class CartridgeReserved(EventModel):
    """A protocol reserves its planned seconds before it starts."""

    kind: ClassVar[str] = "cartridge_reserved"
    cartridge_id: str
    seconds: float


class CartridgeUsed(EventModel):
    """The seconds the device measured are charged; lesion_done=1 when the lesion's dose was delivered."""

    kind: ClassVar[str] = "cartridge_used"
    cartridge_id: str
    seconds: float
    lesion_done: int = 0
    added_later: ClassVar[frozenset[str]] = frozenset({"lesion_done"})


class CartridgeReleased(EventModel):
    """What a protocol reserved and did not use is released."""

    kind: ClassVar[str] = "cartridge_released"
    cartridge_id: str


# ---- the device's services and recovery ---------------------------------------------------------


class Selftest(EventModel):
    """A pre-use self-test ran (device/selftest.py): each check's verdict."""

    kind: ClassVar[str] = "selftest"
    device: str
    checks: tuple[SelftestCheck, ...]


class CalibrationCertificate(EventModel):
    """A technician's calibration (device/calibration.py): the steps, passed, the next due date."""

    kind: ClassVar[str] = "calibration_certificate"
    device: str
    firmware: str
    technician: str
    date: str
    next_due: str | None
    passed: bool
    steps: tuple[CalibrationStep, ...]


class WatchdogTripAccounted(EventModel):
    """Recovery found a watchdog trip no open session owns (procedure/recovery.py): the device's counters, why, cleared."""

    kind: ClassVar[str] = "watchdog_trip_accounted"
    serial: str
    protocol: str
    boot_count: int
    watchdog_trips: int
    last_txn: int
    last_end_reason: str
    last_valve_open_ms: int
    last_boot_count: int
    why: str
    cleared: bool
    session: str | None


class Unrecognised(EventModel):
    """Read only: a kind this Givre has no model for (an older one's, since removed), its payload kept as stored."""

    kind: ClassVar[str] = "(unrecognised)"
    name: str
    payload: dict[str, Any]


EVENTS: dict[str, type[EventModel]] = {model.kind: model for model in (
    SessionStarted, LesionRecorded, LesionEnded, SessionEnded, BillingConfirmed, PatientErased,
    StateChanged, Armed, StartRefused, Stopped, FreezeRequested, FreezeAccepted, FreezeUnanswered, FreezeRefused, FireRefused,
    HaloMarked, TissueTargetReached, TissueTargetNotBelieved, OutcomeUncertain, FreezeReconciled, FreezeResult,
    FreezeUnresolved, ThawDone, Reconnected, DeviceEvent, DeviceEventsCoalesced,
    AlarmRaised, AlarmCleared, AlarmAcknowledged,
    CartridgeLoaded, CartridgeReserved, CartridgeUsed, CartridgeReleased,
    Selftest, CalibrationCertificate, WatchdogTripAccounted,
)}


def validate(kind: str, payload: Mapping[str, Any]) -> EventModel:
    """The payload as its kind's model, every field a writer must give present; EventInvalid otherwise.
    The payload itself is what gets stored: the model is for the projections to fold."""
    model = EVENTS.get(kind)
    if model is None:
        raise EventInvalid(f"event kind {kind!r} is not in the record's schema (controller/records/events.py)",
                           "Record one of its kinds, or add a model for this one there")
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        raise EventInvalid(f"event '{kind}': {_first_problem(exc)}; nothing was recorded",
                           f"Give the fields of {model.__name__} in controller/records/events.py") from None
    missing = next(_missing(event, ""), None)
    if missing is not None:
        raise EventInvalid(f"event '{kind}': field '{missing}' is missing; nothing was recorded",
                           f"Give the fields of {model.__name__} in controller/records/events.py")
    return event


def _first_problem(exc: ValidationError) -> str:
    """Which field and what is wrong with it, never the value (it may be personal data)."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(payload)"
    what = {"missing": "is missing", "extra_forbidden": "is not a field of this kind"}.get(error["type"], f"is invalid ({error['msg']})")
    return f"field '{where}' {what}"


def _missing(part: Part, where: str) -> Iterator[str]:
    """The added_later fields a writer left out, here and in the nested parts."""
    for name in sorted(part.added_later - part.model_fields_set):
        yield f"{where}{name}"
    for name in part.model_fields_set:
        value = getattr(part, name)
        for index, item in enumerate(value if isinstance(value, tuple) else (value,)):
            if isinstance(item, Part):
                yield from _missing(item, f"{where}{name}{f'.{index}' if isinstance(value, tuple) else ''}.")


def parse_payload(kind: str, payload: Mapping[str, Any]) -> EventModel:
    """A stored payload as its model, lenient for older records (``added_later`` fields default);
    a kind with no model reads as Unrecognised."""
    model = EVENTS.get(kind)
    if model is None:
        return Unrecognised(name=kind, payload=dict(payload))
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise EventInvalid(f"a recorded '{kind}' event does not read: {_first_problem(exc)}",
                           "Run `givre records verify`; report it with the event's number from `givre records show`") from None


M = TypeVar("M", bound=EventModel)


def parse_as(model: type[M], payload: Mapping[str, Any]) -> M:
    """A payload stored as ``model``'s kind (a projection keeps some as they were recorded) as that model."""
    event = parse_payload(model.kind, payload)
    assert isinstance(event, model)  # a kind with a model reads as that model
    return event


class Stored(Protocol):
    """What parse reads of a stored event (records/store.py's StoredEvent; the store imports this module)."""

    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> dict[str, Any]: ...


def parse(event: Stored) -> EventModel:
    """A stored event's payload as its model (see parse_payload)."""
    return parse_payload(event.kind, event.payload)
