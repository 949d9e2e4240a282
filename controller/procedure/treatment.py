"""A treatment session: who, which patient (pseudonymous), which device, then one procedure per lesion."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from typing import Any

from controller.config import Config
from controller.procedure.driver import Procedure, State
from controller.records.lesion import Lesion, SessionInfo
from controller.records.store import RecordStore
from firmware_bridge.clock import Clock
from firmware_bridge.link import Link
from firmware_bridge.messages import CalData
from profiles.library import LoadedProfile


def new_session_id() -> str:
    return f"S{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def calibration_record(cal: CalData | None) -> dict[str, Any]:
    if cal is None:
        return {"status": "not applicable (manual)"}
    epoch = date(1970, 1, 1).toordinal()
    due = date.fromordinal(epoch + cal.due_on_day).isoformat() if cal.due_on_day else None
    done = date.fromordinal(epoch + cal.calibrated_on_day).isoformat() if cal.calibrated_on_day else None
    status = "never calibrated" if not due else ("valid" if date.fromisoformat(due) >= date.today() else "overdue")
    return {"status": status, "calibrated_on": done, "due_on": due, "flow_mg_per_s": cal.flow_mg_per_s, "timer_ppm": cal.timer_ppm}


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

    def start(self) -> None:
        device: dict[str, Any] | None = None
        if self.link is not None and self.link.identity is not None:
            ident = self.link.identity
            device = {"serial": ident.serial, "kind": ident.kind.name.lower(), "firmware": ident.firmware, "protocol": ident.protocol,
                      "cryogen": ident.cryogen.name, "boot_count": ident.boot_count, "max_freeze_ms": ident.max_freeze_ms,
                      "watchdog_ms": ident.watchdog_ms, "port": ident.port, "device_session": ident.device_session}
        self.store.append(
            "session_started",
            {"operator": self.info.operator, "patient": self.info.patient, "mode": "device" if device else "manual",
             "device": device, "calibration": calibration_record(self.calibration)},
            self.session_id,
        )

    def lesion(self, lesion: Lesion, profile: LoadedProfile, **options: Any) -> Procedure:
        lesion_id = f"L{len(self.procedures) + 1}"
        photo = None
        if lesion.photo is not None:
            digest, name = self.store.store_photo(lesion.photo)
            photo = {"sha256": digest, "file": name}
        p = profile.profile
        self.store.append(
            "lesion_recorded",
            {"lesion_id": lesion_id, "profile": {"id": p.id, "name_fr": p.name_fr, "name_en": p.name_en, "family": p.family,
                                                 "origin": profile.origin, "overrides_builtin": profile.overrides_builtin,
                                                 "indication": p.indication.value},
             "site": lesion.site.model_dump(mode="json"), "zone": lesion.site.zone.value, "size_mm": lesion.size_mm,
             "description": lesion.description, "photo": photo, "reimbursable": lesion.reimbursable},
            self.session_id,
        )
        procedure = Procedure(store=self.store, config=self.config, clock=self.clock, session_id=self.session_id, lesion_id=lesion_id,
                              lesion=lesion, profile=profile, link=self.link, calibration=self.calibration, **options)
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
        return status


def session_status(procedures: list[Procedure]) -> str:
    if any(any(c.certainty == "unresolved" for c in p.cycles) for p in procedures):
        return "unresolved"
    if any(any(c.certainty in ("reconciled", "unknown") for c in p.cycles) for p in procedures):
        return "interrupted"
    states = {p.state for p in procedures}
    if State.FAULTED in states:
        return "faulted"
    if State.ABORTED in states or not procedures or states - {State.COMPLETED}:
        return "aborted"
    return "completed"
