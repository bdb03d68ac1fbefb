"""Demo data: the NCT04282928 trial, a generated list, and patients in both arms at every stage
(pending screening, eligible, randomized, ordered, prepared, administered with follow-up).
Idempotent: nothing is added when the trial exists."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.db import utcnow
from labsys.trial import followup, orders, services
from labsys.trial.rules import ARM_MSC
from labsys.timefmt import lab_today

DEMO_TRIAL = {
    "registry_number": "NCT04282928",
    "title": "HUC-MSC infusion in adults with severe viral pneumonia (Phase 1, masked)",
    "control_arm_name": "Routine care",
    "msc_arm_name": "HUC-MSC + routine care",
    "ratio_control": 1, "ratio_msc": 1, "block_sizes": "2,4", "target_enrolment": 40,
    "age_min": 18, "age_max": 75, "dose_cells_per_kg": 1_000_000, "dose_tolerance": Decimal("0.20"),
    "max_dose_cells": 120_000_000, "apply_post_thaw_viability": True,
    "endotoxin_limit_eu_per_kg": Decimal("5"), "masked": True, "follow_up_days": 90,
    "visit_days": "1,3,7,14,28,90",
    "exclusions": ["Pregnancy or breastfeeding", "Active malignancy", "Invasive mechanical ventilation > 48 h",
                   "Participation in another interventional trial"],
}

DEMO_PATIENTS = [  # screening number, year of birth, sex, weight
    ("SCR-001", 1968, "male", "72.5"), ("SCR-002", 1975, "female", "58.0"), ("SCR-003", 1959, "male", "81.0"),
    ("SCR-004", 1982, "female", "64.5"), ("SCR-005", 1990, "male", "90.0"), ("SCR-006", 1961, "female", "55.0"),
    ("SCR-007", 1972, "male", "68.0"), ("SCR-008", 1985, "female", "61.0"),
]


def load_demo_data() -> None:
    if services.get_trial() is not None:
        return
    pharmacist, investigator = find_user("pharmacist"), find_user("investigator")
    trial = services.save_trial(pharmacist, DEMO_TRIAL)
    services.generate_allocation_list(pharmacist, trial)
    today = lab_today()
    no = {item: "no" for item in trial.exclusions}
    created = []
    for number, year, sex, weight in DEMO_PATIENTS:
        complete = number != "SCR-008"  # one patient still waits for the diagnosis
        created.append(services.enrol_patient(investigator, trial, {
            "screening_number": number, "year_of_birth": year, "sex": sex, "weight_kg": Decimal(weight),
            "weight_date": today, "consent_date": today, "diagnosis_confirmed": "yes" if complete else "",
            "exclusions": no}))
    randomized = []
    for patient in created[:6]:
        services.randomize_patient(pharmacist, patient)
        randomized.append(patient)
    # Two infusions given (one per arm when the list allows), with follow-up; one order still open.
    by_arm: dict[str, list] = {}
    for patient in randomized:
        by_arm.setdefault(services.arm_of(patient), []).append(patient)
    given = [group[0] for group in by_arm.values()][:2]
    for patient in given:
        order = orders.order_infusion(investigator, patient, today)
        if services.arm_of(patient) == ARM_MSC:
            vials, _delivered = orders.plan_cells(order, 10_000_000, Decimal("0.90"))
            orders.prepare_cells(pharmacist, order, lot_identifier="W000026000123",
                                 vial_identifiers=[f"W000026000123-{i:03d}" for i in range(1, vials + 1)],
                                 viable_cells_per_vial=10_000_000, post_thaw_viability=Decimal("0.90"),
                                 endotoxin_eu_per_ml=Decimal("0.25"), volume_ml=Decimal("100"),
                                 check=SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, "demo"))
        else:
            orders.prepare_placebo(pharmacist, order, placebo_identifier="PL-2026-01", volume_ml=Decimal("100"),
                                   check=SignatureCheck(pharmacist, SignatureMeaning.DISPENSED, "demo"))
        orders.record_administration(investigator, order, utcnow() - dt.timedelta(minutes=30),
                                     SignatureCheck(investigator, SignatureMeaning.ADMINISTERED, "demo"))
        followup.record_visit(investigator, patient, 1, "done", today, {
            "crp_mg_l": Decimal("86.5"), "il6_pg_ml": Decimal("42.0"), "lymphocytes_10e9_l": Decimal("0.62"),
            "procalcitonin_ng_ml": Decimal("0.31"), "viral_load_log10_copies_ml": Decimal("5.4"),
            "pao2_fio2_mmhg": Decimal("182"), "chest_imaging_score": 14})
        followup.record_outcome(investigator, patient, admission_date=today - dt.timedelta(days=3),
                                discharge_date=None, vital_status=None, death_date=None)
        followup.report_adverse_event(investigator, patient, term="Transient fever", onset_date=today,
                                      severity="mild", serious=False, relatedness="possible",
                                      description="38.2 °C four hours after the infusion; resolved without treatment.")
    remaining = [p for p in randomized if p not in given]
    if remaining:
        orders.order_infusion(investigator, remaining[0], today + dt.timedelta(days=1))
