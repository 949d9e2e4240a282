"""The day report (`givre report --date D [--html FILE]`): what the practice did on one local day.

Sessions, lesions by profile, acts with their codes and amounts (the clinician's confirmed choice, or
the proposal marked as such), cartridge seconds and their cost, alarms, devices and calibration. An
unknown tariff is never summed: the total says how many acts it leaves out. A session recorded on
virtual time (a simulator's, time_scale != 1) is marked as such on its line and counted apart. The
HTML page is standalone, with a plain SVG chart of cartridge use (no script, no external file).
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from controller.practice.billing import CcamTable, acts_of, propose
from controller.records import events as schema
from controller.records.history import SessionView, local_time, utc_window, verified_sessions
from controller.records.store import RecordStore


@dataclass
class SessionLine:
    session_id: str
    time: str  # local HH:MM
    patient: str
    status: str
    lesions: int
    completed_lesions: int
    cartridge_seconds: float
    cartridge_cost_eur: float | None
    acts: list[dict[str, Any]]
    billing: str  # "confirmed", "confirmed (changed)" or "proposed (not confirmed)"
    time_scale: float = 1.0  # 1: real time; N: virtual time, a simulator's session

    def time_text(self) -> str:
        """Empty on real time; otherwise what the line says about its time."""
        return "" if self.time_scale == 1 else f" (virtual time x{self.time_scale:g}: a simulator, not clinical)"


@dataclass
class DayReport:
    day: str
    events: int
    head: str
    sessions: list[SessionLine] = field(default_factory=list)
    sessions_by_status: dict[str, int] = field(default_factory=dict)
    lesions_by_profile: dict[str, dict[str, int]] = field(default_factory=dict)
    acts_by_code: dict[str, dict[str, Any]] = field(default_factory=dict)
    amount_known_eur: str = "0.00"
    acts_with_unknown_tariff: int = 0
    aesthetic_lesions: int = 0
    cartridge_seconds: float = 0.0
    cartridge_cost_eur: float | None = None
    cost_per_act_eur: float | None = None
    cost_per_lesion_eur: float | None = None
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibrations: list[dict[str, Any]] = field(default_factory=list)
    unconfirmed_sessions: int = 0
    scaled_sessions: int = 0  # recorded on virtual time (a simulator)
    sealed_epoch: int | None = None  # the newest seal's epoch; None: the store is not sealed
    sealed_to_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(store: RecordStore, day: date, table: CcamTable) -> DayReport:
    sessions = verified_sessions(store, since=day, until=day + timedelta(days=1))
    count, head = store.head()
    report = DayReport(day.isoformat(), count, head)
    report.sealed_epoch, report.sealed_to_seq = _last_seal(store)
    cost_per_s = _cartridge_costs(store)
    amount = Decimal("0")
    lesion_total = 0
    for s in sessions:
        line = _session_line(s, table, cost_per_s)
        report.sessions.append(line)
        report.unconfirmed_sessions += line.billing.startswith("proposed") and bool(line.acts)
        report.scaled_sessions += s.scaled
        for act in line.acts:
            entry = report.acts_by_code.setdefault(act["code"], {"count": 0, "label": act["label"], "verified": act["verified"],
                                                                  "amount_eur": "0.00", "unknown_tariff": 0})
            entry["count"] += 1
            if act["amount_eur"] is None:
                entry["unknown_tariff"] += 1
                report.acts_with_unknown_tariff += 1
            else:
                entry["amount_eur"] = str(Decimal(entry["amount_eur"]) + Decimal(act["amount_eur"]))
                amount += Decimal(act["amount_eur"])
        for lesion in s.lesions:
            counts = report.lesions_by_profile.setdefault(lesion.profile_id, {"treated": 0, "not_completed": 0})
            counts["treated" if lesion.completed else "not_completed"] += 1
            lesion_total += lesion.completed
            report.aesthetic_lesions += lesion.completed and not lesion.reimbursable
        for alarm in s.alarms:
            _count_alarm(report, alarm["code"], alarm["priority"], alarm["text"])
        if s.device is not None:
            device = report.devices.setdefault(s.device["serial"], {"kind": s.device.get("kind"), "firmware": s.device.get("firmware"),
                                                                     "sessions": 0})
            device["sessions"] += 1
            due = f", due {s.calibration['due_on']}" if s.calibration.get("due_on") else ""
            device["calibration"] = s.calibration.get("status", "unknown") + due
    for event in store.unsessioned_events(*utc_window(day, day + timedelta(days=1))):  # outside any session: in no view of history
        if local_time(event.ts_utc).date() != day or event.kind not in ("alarm_raised", "calibration_certificate"):
            continue
        typed = schema.parse(event)
        if isinstance(typed, schema.AlarmRaised):
            _count_alarm(report, typed.code, typed.priority, typed.text)
        elif isinstance(typed, schema.CalibrationCertificate):
            report.calibrations.append({"device": typed.device, "technician": typed.technician, "passed": typed.passed,
                                        "next_due": typed.next_due, "steps": [step.step for step in typed.steps]})
    report.sessions_by_status = dict(Counter(line.status for line in report.sessions))
    report.amount_known_eur = str(amount.quantize(Decimal("0.01")))
    report.cartridge_seconds = round(sum(line.cartridge_seconds for line in report.sessions), 3)
    costs = [line.cartridge_cost_eur for line in report.sessions]
    if costs and all(c is not None for c in costs):
        report.cartridge_cost_eur = round(sum(c for c in costs if c is not None), 2)
        acts = sum(len(line.acts) for line in report.sessions)
        report.cost_per_act_eur = round(report.cartridge_cost_eur / acts, 2) if acts else None
        report.cost_per_lesion_eur = round(report.cartridge_cost_eur / lesion_total, 2) if lesion_total else None
    return report


def _last_seal(store: RecordStore) -> tuple[int | None, int | None]:
    """(epoch, last event) of the newest seal, for the checkpoint; (None, None) on an unsealed store."""
    last = store.last_seal()
    return (None, None) if last is None else (last.epoch, last.last_seq)


def _cartridge_costs(store: RecordStore) -> dict[str, float]:
    """EUR per second of gas, per cartridge: its price over its nominal seconds (the ledger's basis
    when no calibrated flow is known), from the cartridges' load facts."""
    return {c.cartridge_id: c.price_eur / c.nominal_s for c in store.cartridges_loaded() if c.nominal_s}



def _session_line(s: SessionView, table: CcamTable, cost_per_s: dict[str, float]) -> SessionLine:
    if s.billing is not None:
        acts, billing = s.billing["chosen"], "confirmed (changed)" if s.billing["changed"] else "confirmed"
    else:
        acts, billing = propose(acts_of(s), table).as_record()["acts"], "proposed (not confirmed)"
    cost: float | None = 0.0
    for c in s.cycles:
        if c.cartridge_seconds and (c.cartridge_id is None or c.cartridge_id not in cost_per_s):
            cost = None
            break
        if c.cartridge_id is not None and cost is not None:
            cost += c.cartridge_seconds * cost_per_s[c.cartridge_id]
    return SessionLine(s.session_id, local_time(s.started).strftime("%H:%M"), s.patient, s.status,
                       len(s.lesions), sum(lesion.completed for lesion in s.lesions), s.cartridge_seconds,
                       None if cost is None else round(cost, 2), acts, billing, s.time_scale)


def _count_alarm(report: DayReport, code: str, priority: str, text: str) -> None:
    entry = report.alarms.setdefault(code, {"priority": priority, "text": text, "count": 0})
    entry["count"] += 1


def acts_text(acts: list[dict[str, Any]]) -> str:
    return ", ".join(a["code"] + (f" (assoc. {a['association_code']})" if a["association_code"] else "") for a in acts) or "no act"


def _not_completed(counts: dict[str, int]) -> str:
    return f" (+{counts['not_completed']} not completed)" if counts["not_completed"] else ""


def _unknown(act: dict[str, Any]) -> str:
    return f" + {act['unknown_tariff']} with tariff unknown" if act["unknown_tariff"] else ""


def _eur(value: float | str | None) -> str:
    return "unknown" if value is None else f"{Decimal(str(value)):.2f} EUR"


def report_text(r: DayReport) -> str:
    lines = [f"Givre day report {r.day}: {len(r.sessions)} session(s) "
             f"({', '.join(f'{n} {status}' for status, n in sorted(r.sessions_by_status.items())) or 'none'}); "
             f"record {r.events} events, head {r.head[:16]}"]
    for s in r.sessions:
        lines.append(f"  {s.time} {s.session_id} patient {s.patient}: {s.status}{s.time_text()}, {s.completed_lesions}/{s.lesions} "
                     f"lesion(s), {s.cartridge_seconds:g} s of gas; {acts_text(s.acts)} [{s.billing}]")
    if r.scaled_sessions:
        lines.append(f"  ! {r.scaled_sessions} session(s) recorded on virtual time (time_scale != 1): a simulator's, "
                     "their durations are virtual seconds")
    lines.append("Lesions by profile: " + (", ".join(f"{p} {c['treated']}" + _not_completed(c)
                                                    for p, c in sorted(r.lesions_by_profile.items())) or "none"))
    lines.append("Acts:")
    for code, a in sorted(r.acts_by_code.items()):
        lines.append(f"  {code} x{a['count']}: {a['amount_eur']} EUR{_unknown(a)}{'' if a['verified'] else ' (unverified)'}")
    unknown = f" (+ {r.acts_with_unknown_tariff} act(s) whose tariff is unknown, not summed)" if r.acts_with_unknown_tariff else ""
    lines.append(f"  total known: {r.amount_known_eur} EUR{unknown}; {r.aesthetic_lesions} aesthetic lesion(s) not reimbursable")
    if r.unconfirmed_sessions:
        lines.append(f"  ! {r.unconfirmed_sessions} session(s) with billing proposed but not confirmed: "
                     "givre records bill SESSION --accept")
    lines.append(f"Cartridge: {r.cartridge_seconds:g} s used, cost {_eur(r.cartridge_cost_eur)}; per act {_eur(r.cost_per_act_eur)}, "
                 f"per lesion {_eur(r.cost_per_lesion_eur)}")
    lines.append("Alarms: " + (", ".join(f"{code} ({a['priority']}) x{a['count']}" for code, a in sorted(r.alarms.items())) or "none"))
    devices = ", ".join(f"{serial} ({d['kind']}, firmware {d['firmware']}, calibration {d['calibration']}, {d['sessions']} session(s))"
                        for serial, d in sorted(r.devices.items()))
    lines.append("Devices: " + (devices or "none (manual only)"))
    for c in r.calibrations:
        lines.append(f"  calibration of {c['device']} by {c['technician']}: {'PASS' if c['passed'] else 'FAIL'} ({', '.join(c['steps'])}), "
                     f"next due {c['next_due']}")
    lines.append(checkpoint_text(r))
    return "\n".join(lines) + "\n"


def checkpoint_text(r: DayReport) -> str:
    """The record's checkpoint, to copy or send off the machine: a later verify must show at least
    this many events with this head in its chain, or the record was cut back (docs/records.md, Sealing)."""
    sealed = (f"last seal epoch {r.sealed_epoch} (to event {r.sealed_to_seq})" if r.sealed_epoch is not None
              else "not sealed (set it up: givre records setup-keys)")
    return f"Checkpoint (keep a copy off this machine): {r.events} events, head {r.head}, {sealed}"


def cartridge_svg(r: DayReport, width: int = 640, height: int = 220) -> str:
    """Bars: gas seconds per session in time order; a line: the day's running total (right axis)."""
    e = html.escape
    if not r.sessions:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='60' role='img'>"
                "<text x='10' y='35'>no session this day</text></svg>")
    left, right, top, bottom = 50, 60, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    per = [s.cartridge_seconds for s in r.sessions]
    running = [sum(per[: i + 1]) for i in range(len(per))]
    bar_max, total_max = max(*per, 1.0), max(running[-1], 1.0)
    step = plot_w / len(per)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='cartridge seconds per session and running total'>",
             f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#444'/>",
             f"<text x='4' y='{top + 4}' font-size='11'>{bar_max:g} s</text>",
             f"<text x='{left + plot_w + 4}' y='{top + 4}' font-size='11' fill='#b35900'>{total_max:g} s</text>"]
    points = []
    for i, (s, seconds) in enumerate(zip(r.sessions, per, strict=True)):
        h = plot_h * seconds / bar_max
        x = left + i * step + step * 0.15
        parts.append(f"<rect x='{x:.1f}' y='{top + plot_h - h:.1f}' width='{step * 0.7:.1f}' height='{h:.1f}' fill='#3a7bd5'>"
                     f"<title>{e(s.session_id)}: {seconds:g} s</title></rect>")
        parts.append(f"<text x='{left + (i + 0.5) * step:.1f}' y='{top + plot_h + 14}' font-size='10' text-anchor='middle'>"
                     f"{e(s.time)}</text>")
        points.append(f"{left + (i + 0.5) * step:.1f},{top + plot_h - plot_h * running[i] / total_max:.1f}")
    parts.append(f"<polyline points='{' '.join(points)}' fill='none' stroke='#b35900' stroke-width='2'/>")
    parts.append(f"<text x='{left}' y='{height - 6}' font-size='11'>bars: seconds of gas per session; line: running total</text></svg>")
    return "".join(parts)


def report_html(r: DayReport) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(s.time)}</td><td>{e(s.session_id)}</td><td>{e(s.patient)}</td><td>{e(s.status + s.time_text())}</td>"
        f"<td>{s.completed_lesions}/{s.lesions}</td><td>{s.cartridge_seconds:g}</td><td>{e(_eur(s.cartridge_cost_eur))}</td>"
        f"<td>{e(acts_text(s.acts))}</td>"
        f"<td>{e(s.billing)}</td></tr>" for s in r.sessions)
    acts = "".join(f"<tr><td>{e(code)}</td><td>{e(a['label'])}{'' if a['verified'] else ' <em>(unverified)</em>'}</td><td>{a['count']}</td>"
                   f"<td>{e(a['amount_eur'])} EUR{_unknown(a)}</td></tr>" for code, a in sorted(r.acts_by_code.items()))
    text = e(report_text(r))
    return ("<!doctype html><html lang='en'><meta charset='utf-8'>"
            f"<title>Givre day report {e(r.day)}</title>"
            "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}</style>"
            f"<h1>Givre day report {e(r.day)}</h1>"
            f"<p>{len(r.sessions)} session(s); record of {r.events} events, head <code>{e(r.head)}</code> (hash chain verified). "
            "Patients appear by their pseudonymous id only.</p>"
            f"<h2>Cartridge use</h2>{cartridge_svg(r)}"
            "<h2>Sessions</h2><table><tr><th>time</th><th>session</th><th>patient</th><th>status</th><th>lesions</th>"
            f"<th>gas s</th><th>gas cost</th><th>acts</th><th>billing</th></tr>{rows}</table>"
            f"<h2>Acts</h2><table><tr><th>code</th><th>label</th><th>count</th><th>amount</th></tr>{acts}</table>"
            f"<h2>Summary</h2><pre>{text}</pre></html>\n")
