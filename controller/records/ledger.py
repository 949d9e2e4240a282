"""The cartridge ledger, derived from the record's events (never a mutable counter): the store's
cartridges projection sums the cartridge_* events as they are appended (a cartridge outlives the
sessions it serves, so it is not read from history's session views).

Seconds are consumed from the device-reported valve-open times, not the plan: a protocol reserves
its planned seconds before it starts, commits what the device measured, and releases the rest.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date

from controller.config import Config
from controller.errors import GivreError
from controller.records.store import RecordStore

STORAGE_REMINDER = "Store an opened cartridge refrigerated, upright, nozzle down (practice sheet)"


class LedgerError(GivreError):
    """A cartridge that cannot be loaded or cannot cover a protocol; the message says what to do."""


@dataclass(frozen=True, slots=True)
class CartridgeStatus:
    cartridge_id: str
    size: str
    opened: str
    age_days: int
    keeping_days: int
    past_keeping_time: bool
    capacity_s: float
    capacity_basis: str  # "nominal (practice sheet)" or "calibrated flow"
    used_s: float
    reserved_s: float
    remaining_s: float
    lesions_treated: int
    estimated_lesions_left: int
    cost_per_lesion_eur: float
    price_eur: float
    reminder: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class CartridgeLedger:
    def __init__(self, store: RecordStore, config: Config) -> None:
        self.store = store
        self.config = config

    def load(self, size: str, opened: date, today: date | None = None) -> CartridgeStatus:
        spec = self.config.cartridges.get(size)
        if spec is None:
            raise LedgerError(f"cartridge size {size!r}: allowed sizes are {', '.join(self.config.cartridges)} (config)")
        today = today or date.today()
        if opened > today:
            raise LedgerError(f"--opened {opened.isoformat()}: a cartridge cannot be opened in the future (today is {today.isoformat()})")
        self.store.append(
            "cartridge_loaded",
            {
                "cartridge_id": uuid.uuid4().hex[:12], "size": size, "size_g": spec.size_g, "nominal_s": spec.nominal_s,
                "price_eur": spec.price_eur, "average_lesions": spec.average_lesions, "opened": opened.isoformat(),
                "source": spec.source,
            },
        )
        status = self.status(today=today)
        assert status is not None
        return status

    def status(self, flow_mg_per_s: int = 0, today: date | None = None) -> CartridgeStatus | None:
        """The cartridge in use, from the cartridges projection (one indexed read, whatever the log's size)."""
        row = self.store.current_cartridge()
        if row is None:
            return None
        loaded, used, lesions, reserved = row.loaded, row.used_s, row.lesions, row.reserved_s
        if flow_mg_per_s > 0:
            capacity, basis = loaded.size_g * 1000 / flow_mg_per_s, "calibrated flow"
        else:
            capacity, basis = loaded.nominal_s, "nominal (practice sheet)"
        today = today or date.today()
        age = (today - date.fromisoformat(loaded.opened)).days
        remaining = max(0.0, capacity - used - reserved)
        per_lesion = used / lesions if lesions else capacity / loaded.average_lesions
        return CartridgeStatus(
            cartridge_id=loaded.cartridge_id, size=loaded.size, opened=loaded.opened, age_days=age,
            keeping_days=self.config.cartridge_keeping_days, past_keeping_time=age > self.config.cartridge_keeping_days,
            capacity_s=round(capacity, 3), capacity_basis=basis, used_s=round(used, 3), reserved_s=round(reserved, 3),
            remaining_s=round(remaining, 3), lesions_treated=lesions,
            estimated_lesions_left=int(remaining // per_lesion) if per_lesion > 0 else 0,
            cost_per_lesion_eur=round(loaded.price_eur * per_lesion / capacity, 2), price_eur=loaded.price_eur,
            reminder=STORAGE_REMINDER,
        )

    def reserve(self, session_id: str, seconds: float, flow_mg_per_s: int = 0) -> CartridgeStatus:
        status = self.status(flow_mg_per_s)
        if status is None:
            raise LedgerError("no cartridge is registered: load one first (givre cartridge load --size 23g)")
        if status.remaining_s < seconds:
            raise LedgerError(
                f"the cartridge cannot cover this protocol: it needs {seconds:g} s of spray, {status.remaining_s:g} s are left; "
                "load a new cartridge"
            )
        self.store.append("cartridge_reserved", {"cartridge_id": status.cartridge_id, "seconds": seconds}, session_id)
        return status

    def commit(self, session_id: str, cartridge_id: str, seconds: float, lesion_done: bool) -> None:
        self.store.append(
            "cartridge_used", {"cartridge_id": cartridge_id, "seconds": seconds, "lesion_done": int(lesion_done)}, session_id
        )

    def release(self, session_id: str, cartridge_id: str) -> None:
        self.store.append("cartridge_released", {"cartridge_id": cartridge_id}, session_id)
