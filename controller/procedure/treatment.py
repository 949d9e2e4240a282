"""A treatment session: who, which patient (pseudonymous), which device, then one procedure per lesion."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypedDict, Unpack

from controller.config import Config
from controller.procedure.dose import BelowMinimumOverride
from controller.procedure.driver import ClinicalChoice, DeviceAccess, Procedure, Recording
from controller.procedure.gates import kind_name
from controller.procedure.states import State
from controller.records.certainty import Certainty
from controller.records.lesion import Lesion, SessionInfo
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import CalData, TriggerMode
from firmware_bridge.units import date_of_day
from profiles.library import LoadedProfile

RECONNECT_WINDOW_S = 10.0  # how long a lesion retries a freeze's unknown outcome before leaving its cycle open


def new_session_id() -> str:
    return f"S{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def calibration_record(cal: CalData | None, today: date | None = None) -> dict[str, Any]:
    """The device's calibration as the record and the screens say it: valid, overdue or never calibrated (on `today`)."""
    if cal is None:
        return {"status": "not applicable (manual)"}
    due, done = date_of_day(cal.due_on_day), date_of_day(cal.calibrated_on_day)
    status = "never calibrated" if due is None else ("valid" if due >= (today or date.today()) else "overdue")
    return {"status": status, "calibrated_on": done.isoformat() if done else None, "due_on": due.isoformat() if due else None,
            "flow_mg_per_s": cal.flow_mg_per_s, "timer_ppm": cal.timer_ppm}


class ChoiceOptions(TypedDict, total=False):
    """The clinician's choices for a lesion beside its profile (ClinicalChoice's fields; each has its default there)."""

    requested_freeze_s: float | None
    cycles: int | None
    trigger: TriggerMode
    auto: bool
    below_minimum: BelowMinimumOverride | None


class Treatment:
    def __init__(self, store: RecordStore, config: Config, clock: Clock, info: SessionInfo, link: Link | None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.info = info
        self.link = link
        self.session_id = new_session_id()
        self.calibration = link.read_calibration() if link is not None else None
        self.procedures: list[Procedure] = []
        self.patient_key: str | None = None  # the patient's key id in the store's key store, from start()

    def start(self) -> None:
        """Record the session's start: who, the device, its calibration, and the time scale the host
        runs on (1 = real time; more only with a device measured to run on that same virtual time,
        see procedure/recovery.py), so a scaled session can never pass for a clinical one."""
        device: dict[str, Any] | None = None
        if self.link is not None and self.link.identity is not None:
            ident = self.link.identity
            device = {"serial": ident.serial, "kind": kind_name(ident.kind), "firmware": ident.firmware, "protocol": ident.protocol,
                      "cryogen": ident.cryogen.name, "boot_count": ident.boot_count, "max_freeze_ms": ident.max_freeze_ms,
                      "watchdog_ms": ident.watchdog_ms, "port": ident.port, "device_session": ident.device_session}
        self.patient_key = self.store.patient_key(self.info.patient)  # personal fields are stored encrypted under it
        self.store.append(
            "session_started",
            {"operator": self.info.operator, "patient": self.info.patient, "mode": "device" if device else "manual",
             "device": device, "calibration": calibration_record(self.calibration), "time_scale": self.clock.scale},
            self.session_id, patient_key=self.patient_key,
        )

    def lesion(self, lesion: Lesion, profile: LoadedProfile, *, reconnect: Callable[[], Link] | None = None,
               reconnect_window_s: float = RECONNECT_WINDOW_S, **choice: Unpack[ChoiceOptions]) -> Procedure:
        """Record the lesion, then return its procedure (not yet armed)."""
        lesion_id = f"L{len(self.procedures) + 1}"
        key = self.patient_key or self.store.patient_key(self.info.patient)
        photo = None
        if lesion.photo is not None:
            digest, name = self.store.store_photo(lesion.photo, key)
            photo = {"sha256": digest, "file": name}
        p = profile.profile
        self.store.append(
            "lesion_recorded",
            {"lesion_id": lesion_id, "profile": {"id": p.id, "name_fr": p.name_fr, "name_en": p.name_en, "family": p.family,
                                                 "origin": profile.origin, "overrides_builtin": profile.overrides_builtin,
                                                 "indication": p.indication.value},
             "site": lesion.site.model_dump(mode="json"), "zone": lesion.site.zone_for(self.config.zoning).value, "size_mm": lesion.size_mm,
             "description": lesion.description, "photo": photo, "reimbursable": lesion.reimbursable},
            self.session_id, patient_key=key,
        )
        procedure = Procedure(Recording(self.store, self.session_id, lesion_id),
                              DeviceAccess(self.link, self.calibration, reconnect, reconnect_window_s),
                              ClinicalChoice(lesion, profile, **choice), config=self.config, clock=self.clock)
        self.procedures.append(procedure)
        return procedure

    def end(self) -> str:
        """Close the session in the record; one with a cycle the device could not be read for stays
        open ("unresolved") until crash recovery reads that device at its next connection."""
        status = session_status(self.procedures)
        if status == "unresolved":
            return status
        count, head = self.store.head()
        self.store.append("session_ended", {"status": status, "lesions": len(self.procedures), "events_before": count,
                                            "head_before": head}, self.session_id)
        self.store.seal()  # a finished session is sealed at once: its record can no longer be rewritten unnoticed
        return status


def session_status(procedures: list[Procedure]) -> str:
    """How the session ends in the record: a cycle the device could not be read for keeps it open (unresolved)."""
    if any(any(c.certainty is Certainty.UNRESOLVED for c in p.cycles) for p in procedures):
        return "unresolved"
    if any(any(c.certainty in (Certainty.RECONCILED, Certainty.UNKNOWN) for c in p.cycles) for p in procedures):
        return "interrupted"
    states = {p.state for p in procedures}
    if State.FAULTED in states:
        return "faulted"
    if State.ABORTED in states or not procedures or states - {State.COMPLETED}:
        return "aborted"
    return "completed"
