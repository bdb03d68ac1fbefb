"""Follow-up: scheduled visits with the secondary endpoints, the primary outcome (90-day vital
status, length of stay), adverse events, the trial summary, its CSV export and inline SVG plots."""
from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import record_event, unit_of_work
from labsys.auth.models import User
from labsys.auth.services import actor_of
from labsys.db import utcnow
from labsys.errors import ConcurrentChange, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.trial import rules
from labsys.trial.masking import arm_name, may_see_arm
from labsys.trial.models import (AdverseEvent, InfusionOrder, OrderStatus, Patient,
                                 Relatedness, Severity, Trial, VisitRecord, VisitStatus, VitalStatus)
from labsys.trial.orders import active_order, administered_order, preparation_of
from labsys.trial.sealing import open_record, seal_record
from labsys.trial.services import arm_of, patients
from labsys.timefmt import lab_today

def N_(text: str) -> str:
    """Mark a label for extraction; it is translated where it is shown."""
    return text


ENDPOINTS = [
    ("crp_mg_l", N_("CRP (mg/L)")),
    ("il6_pg_ml", N_("IL-6 (pg/mL)")),
    ("lymphocytes_10e9_l", N_("Lymphocytes (10⁹/L)")),
    ("procalcitonin_ng_ml", N_("Procalcitonin (ng/mL)")),
    ("viral_load_log10_copies_ml", N_("Viral load (log10 copies/mL)")),
    ("pao2_fio2_mmhg", N_("PaO2/FiO2 (mmHg)")),
    ("chest_imaging_score", N_("Chest imaging score")),
]
ENDPOINT_LIMITS = {
    "crp_mg_l": (0, 1000), "il6_pg_ml": (0, 100000), "lymphocytes_10e9_l": (0, 100),
    "procalcitonin_ng_ml": (0, 1000), "viral_load_log10_copies_ml": (0, 15),
    "pao2_fio2_mmhg": (20, 700), "chest_imaging_score": (0, 100),
}


def day_one(patient: Patient) -> dt.date | None:
    """Study day 1: the infusion date when ordered, else the randomization date."""
    order = active_order(patient)
    if order is not None:
        if order.administered_at is not None:
            return order.administered_at.date()
        return order.infusion_date
    return patient.randomized_at.date() if patient.randomized_at else None


def visits_for(patient: Patient) -> dict[int, VisitRecord]:
    return {v.study_day: v for v in db.session.scalars(
        select(VisitRecord).where(VisitRecord.patient_id == patient.id))}


@dataclass
class ScheduledVisit:
    study_day: int
    due: dt.date | None
    status: str
    record: VisitRecord | None


def schedule(patient: Patient, today: dt.date | None = None) -> list[ScheduledVisit]:
    """Every scheduled visit with its status; overdue visits without data show as missed."""
    today = today or lab_today()
    start = day_one(patient)
    recorded = visits_for(patient)
    result = []
    for day in patient.trial.visit_day_list:
        record = recorded.get(day)
        status = rules.visit_status(start, day, record.status.value if record else None, today)
        result.append(ScheduledVisit(day, rules.visit_due_date(start, day) if start else None, status, record))
    return result


def record_visit(user: User, patient: Patient, study_day: int, status: str, visit_date: dt.date | None,
                 values: dict[str, Any], reason: str | None = None) -> VisitRecord:
    """Record a scheduled visit's endpoints, or mark it missed. A correction needs a reason."""
    if not patient.randomized:
        raise RuleViolation(_("Follow-up starts after randomization."))
    if study_day not in patient.trial.visit_day_list:
        raise RuleViolation(_("Day %(d)d is not a scheduled visit.", d=study_day))
    status_value = VisitStatus(status)
    reasons = []
    if status_value == VisitStatus.DONE:
        if visit_date is None:
            reasons.append(_("The visit date is required."))
        elif visit_date > lab_today():
            reasons.append(_("The visit date is in the future."))
        elif day_one(patient) is not None and visit_date < day_one(patient):
            reasons.append(_("The visit date is before study day 1 (%(d)s).", d=day_one(patient).isoformat()))
        for name, label in ENDPOINTS:
            value = values.get(name)
            low, high = ENDPOINT_LIMITS[name]
            if value is not None and not low <= value <= high:
                reasons.append(_("%(label)s %(v)s is outside %(lo)s–%(hi)s.", label=_(label), v=value, lo=low, hi=high))
    if reasons:
        raise RuleViolation(_("The visit was not saved."), reasons)
    existing = visits_for(patient).get(study_day)
    try:
        with unit_of_work(actor_of(user), "trial.visit", reason, reason_required=existing is not None):
            record = existing or VisitRecord(patient_id=patient.id, study_day=study_day)
            record.status = status_value
            record.visit_date = visit_date if status_value == VisitStatus.DONE else None
            for name, _label in ENDPOINTS:
                setattr(record, name, values.get(name) if status_value == VisitStatus.DONE else None)
            record.recorded_by_id = user.id
            record.recorded_at = utcnow()
            if existing is None:
                db.session.add(record)
    except StaleDataError:
        raise ConcurrentChange(_("The visit changed meanwhile; reload it."))
    return record


def record_outcome(user: User, patient: Patient, *, admission_date: dt.date | None,
                   discharge_date: dt.date | None, vital_status: str | None, death_date: dt.date | None,
                   reason: str | None = None) -> Patient:
    """Primary outcomes: 90-day vital status and length of hospital stay."""
    if not patient.randomized:
        raise RuleViolation(_("Outcomes are recorded for randomized patients."))
    reasons = []
    status = VitalStatus(vital_status) if vital_status else None
    if admission_date and discharge_date and discharge_date < admission_date:
        reasons.append(_("Discharge is before admission."))
    if status == VitalStatus.DEAD and death_date is None:
        reasons.append(_("Give the date of death."))
    if status != VitalStatus.DEAD and death_date is not None:
        reasons.append(_("A date of death needs the vital status 'dead'."))
    if reasons:
        raise RuleViolation(_("The outcome was not saved."), reasons)
    correcting = any(getattr(patient, f) is not None for f in
                     ("admission_date", "discharge_date", "vital_status_day90"))
    try:
        with unit_of_work(actor_of(user), "trial.outcome", reason, reason_required=correcting):
            patient.admission_date = admission_date
            patient.discharge_date = discharge_date
            patient.vital_status_day90 = status
            patient.death_date = death_date
    except StaleDataError:
        raise ConcurrentChange(_("The patient changed meanwhile; reload it."))
    return patient


def report_adverse_event(user: User, patient: Patient, *, term: str, onset_date: dt.date, severity: str,
                         serious: bool, relatedness: str, description: str | None = None) -> AdverseEvent:
    """Report an AE; when cells were administered it is linked to the lot and vials given."""
    reasons = []
    if not (term or "").strip():
        reasons.append(_("Name the event."))
    if onset_date is None:
        reasons.append(_("The onset date is required."))
    elif onset_date > lab_today():
        reasons.append(_("The onset date is in the future."))
    if reasons:
        raise RuleViolation(_("The adverse event was not saved."), reasons)
    order = administered_order(patient)
    preparation = preparation_of(order) if order is not None else None
    link = ({"lot": preparation.lot_identifier, "vials": preparation.vial_identifiers}
            if preparation is not None and preparation.is_cells else {"lot": None, "vials": []})
    with unit_of_work(actor_of(user), "trial.adverse_event"):
        event = AdverseEvent(patient_id=patient.id, term=term.strip(), onset_date=onset_date,
                             severity=Severity(severity), serious=bool(serious),
                             relatedness=Relatedness(relatedness), description=(description or "").strip() or None,
                             product_link_sealed=seal_record("ae_link", f"patient:{patient.id}", link),
                             reported_by_id=user.id, reported_at=utcnow())
        db.session.add(event)
    return event


def product_link(event: AdverseEvent) -> tuple[str | None, list[str]]:
    """(lot identifier, vial identifiers) the patient received before the event, unchecked."""
    link = open_record("ae_link", f"patient:{event.patient_id}", event.product_link_sealed)
    return link["lot"], list(link["vials"])


def product_link_for(user: User, event: AdverseEvent) -> tuple[str | None, list[str]] | None:
    """The product link for users who may see arms; ``None`` for masked users."""
    return product_link(event) if may_see_arm(user, event.patient.trial) else None


def adverse_events(patient: Patient | None = None) -> list[AdverseEvent]:
    query = select(AdverseEvent).order_by(AdverseEvent.onset_date, AdverseEvent.id)
    if patient is not None:
        query = query.where(AdverseEvent.patient_id == patient.id)
    return list(db.session.scalars(query))


def aes_for_lot(lot_identifier: str) -> list[AdverseEvent]:
    """Adverse events of patients who received this lot (for the lot's page; unblinded view).
    The custody feature calls this with a lot identifier."""
    received = set()
    for order in db.session.scalars(select(InfusionOrder).where(InfusionOrder.status == OrderStatus.ADMINISTERED)):
        preparation = preparation_of(order)
        if preparation is not None and preparation.is_cells and preparation.lot_identifier == lot_identifier:
            received.add(order.patient_id)
    return [event for event in adverse_events()
            if event.patient_id in received or product_link(event)[0] == lot_identifier]


# --- Summary ------------------------------------------------------------------------------------

def _median(values: list[Decimal | int]) -> Decimal | None:
    return Decimal(str(statistics.median(values))).quantize(Decimal("0.01")) if values else None


def summary(user: User, trial: Trial) -> dict[str, Any]:
    """Enrolment, arm balance (unblinded users only) and each endpoint by visit: n and median,
    pooled for masked users and per arm for unblinded users."""
    everyone = patients(trial)
    randomized = [p for p in everyone if p.randomized]
    unblinded = may_see_arm(user, trial)
    groups: dict[str, list[Patient]] = {"all": randomized}
    balance = None
    if unblinded:
        arms = {p.id: arm_of(p) for p in randomized}
        groups = {arm: [p for p in randomized if arms[p.id] == arm] for arm in rules.ARMS}
        balance = {arm_name(trial, arm): len(members) for arm, members in groups.items()}
    visits = list(db.session.scalars(select(VisitRecord).where(
        VisitRecord.patient_id.in_([p.id for p in randomized]), VisitRecord.status == VisitStatus.DONE)))
    missed_visits = [(p, v) for p in randomized for v in schedule(p) if v.status == "missed"]
    missed = len(missed_visits)
    table = []
    for name, label in ENDPOINTS:
        rows = []
        for day in trial.visit_day_list:
            cells = {}
            for group, members in groups.items():
                ids = {p.id for p in members}
                values = [getattr(v, name) for v in visits
                          if v.study_day == day and v.patient_id in ids and getattr(v, name) is not None]
                cells[group] = {"n": len(values), "median": _median(values)}
            rows.append({"day": day, "groups": cells})
        table.append({"name": name, "label": _(label), "rows": rows,
                      "svg": line_plot(_(label), trial.visit_day_list, {
                          (arm_name(trial, g) if g in rules.ARMS else str(_("All patients"))):
                          [r["groups"][g]["median"] for r in rows] for g in groups})})
    deaths = sum(1 for p in randomized if p.vital_status_day90 == VitalStatus.DEAD)
    alive = sum(1 for p in randomized if p.vital_status_day90 == VitalStatus.ALIVE)
    stays = [p.length_of_stay_days for p in randomized if p.length_of_stay_days is not None]
    return {"screened": len(everyone), "randomized": len(randomized), "target": trial.target_enrolment,
            "balance": balance, "groups": list(groups), "endpoints": table, "missed_visits": missed,
            "missed_list": missed_visits,
            "alive_day90": alive, "dead_day90": deaths, "median_stay_days": _median(stays),
            "adverse_events": len(adverse_events()),
            "serious_adverse_events": sum(1 for e in adverse_events() if e.serious)}


def group_label(trial: Trial, group: str) -> str:
    return arm_name(trial, group) if group in rules.ARMS else str(_("All patients"))


SVG_WIDTH, SVG_HEIGHT, PAD = 420, 220, 40
SERIES_CLASSES = ("series-a", "series-b", "series-c")


def line_plot(title: str, days: list[int], series: dict[str, list[Decimal | None]]) -> str:
    """A small server-side SVG line chart (medians by study day); no script, styles by class."""
    points = [v for values in series.values() for v in values if v is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="trial-plot" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" '
             f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line class="axis" x1="{PAD}" y1="{SVG_HEIGHT - PAD}" x2="{SVG_WIDTH - 10}" y2="{SVG_HEIGHT - PAD}"/>',
             f'<line class="axis" x1="{PAD}" y1="10" x2="{PAD}" y2="{SVG_HEIGHT - PAD}"/>']
    if not points or not days:
        parts.append(f'<text class="empty" x="{SVG_WIDTH / 2}" y="{SVG_HEIGHT / 2}" text-anchor="middle">'
                     f'{escape(str(_("No data yet")))}</text></svg>')
        return "".join(parts)
    low, high = float(min(points)), float(max(points))
    if high == low:
        high = low + 1
    first, last = min(days), max(days)
    span = max(last - first, 1)

    def x(day: int) -> float:
        return PAD + (SVG_WIDTH - PAD - 20) * (day - first) / span

    def y(value: float) -> float:
        return SVG_HEIGHT - PAD - (SVG_HEIGHT - PAD - 20) * (value - low) / (high - low)

    for day in days:
        parts.append(f'<text class="tick" x="{x(day):.1f}" y="{SVG_HEIGHT - PAD + 16}" text-anchor="middle">{day}</text>')
    for value in (low, high):
        parts.append(f'<text class="tick" x="{PAD - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
    for index, (name, values) in enumerate(series.items()):
        css = SERIES_CLASSES[index % len(SERIES_CLASSES)]
        coords = [(x(d), y(float(v))) for d, v in zip(days, values) if v is not None]
        if len(coords) > 1:
            parts.append(f'<polyline class="{css}" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in coords)}"/>')
        for a, b in coords:
            parts.append(f'<circle class="{css}" cx="{a:.1f}" cy="{b:.1f}" r="3"/>')
        parts.append(f'<text class="legend {css}" x="{PAD + 8 + 170 * index}" y="14">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def summary_csv(user: User, trial: Trial) -> str:
    """One row per randomized patient and scheduled visit, for the statistician. The arm column
    is filled only for unblinded users; the export is audited."""
    unblinded = may_see_arm(user, trial)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["study_id", "kit_number", "arm", "sex", "age_years", "weight_kg", "study_day", "visit_status",
              "visit_date", *[name for name, _label in ENDPOINTS], "vital_status_day90", "death_date",
              "length_of_stay_days", "adverse_events", "serious_adverse_events"]
    writer.writerow(header)
    rows = 0
    for patient in (p for p in patients(trial) if p.randomized):
        arm = arm_of(patient) if unblinded else ""
        events = adverse_events(patient)
        for visit in schedule(patient):
            record = visit.record
            writer.writerow([
                patient.study_id, patient.kit_number, arm, patient.sex.value, patient.age_years, patient.weight_kg,
                visit.study_day, visit.status, record.visit_date.isoformat() if record and record.visit_date else "",
                *[(getattr(record, name) if record and getattr(record, name) is not None else "")
                  for name, _label in ENDPOINTS],
                patient.vital_status_day90.value if patient.vital_status_day90 else "",
                patient.death_date.isoformat() if patient.death_date else "",
                patient.length_of_stay_days if patient.length_of_stay_days is not None else "",
                len(events), sum(1 for e in events if e.serious)])
            rows += 1
    with unit_of_work(actor_of(user), "trial.summary_export"):
        record_event(actor_of(user), "trial.summary_export", "trials", trial.id,
                     {"rows": rows, "with_arm": unblinded})
    return buffer.getvalue()
