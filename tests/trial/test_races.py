"""Trial services when two users act on the same patient or number at the same moment (found by
the race soak, tests/reliability/test_race_soak.py): exactly one order per patient, one patient
per screening number, the loser refused with a reason, never a crash; on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select

from labsys.errors import RuleViolation
from labsys.extensions import db as _db
from labsys.trial import orders, rules, services
from labsys.trial.models import InfusionOrder, Patient
from tests.conftest import lab_today


def test_two_orders_for_one_patient_at_once_place_exactly_one(app, db, trial, enrol, pharmacist, investigator,
                                                              monkeypatch):
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    patient_id = patient.id
    both_checked = threading.Barrier(2)
    original = rules.target_cells

    def after_the_check(*args):
        # Both have passed the "already has an order" check before either writes.
        both_checked.wait(timeout=10)
        return original(*args)

    monkeypatch.setattr(orders.rules, "target_cells", after_the_check)
    outcomes: list[str] = []

    def place():
        with app.app_context():
            try:
                user = _db.session.get(type(investigator), investigator.id)
                orders.order_infusion(user, _db.session.get(Patient, patient_id), lab_today())
                outcomes.append("placed")
            except RuleViolation as error:
                outcomes.append("; ".join(error.reasons))
            finally:
                _db.session.remove()

    threads = [threading.Thread(target=place) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.rollback()
    assert sorted(outcomes) == sorted(["placed", "The patient already has an infusion order (one infusion per patient)."])
    assert db.session.scalar(select(func.count(InfusionOrder.id)).where(InfusionOrder.patient_id == patient_id)) == 1


def test_one_screening_number_enrolled_at_two_desks_at_once_is_refused_not_a_crash(app, db, trial, investigator,
                                                                                  monkeypatch):
    """Found by the race soak on PostgreSQL: the second enrolment hit the unique constraint
    (IntegrityError, a 500) instead of being refused."""
    from tests.trial.conftest import screening_values

    trial_id = trial.id
    original = services.allocation_counts
    calls = {"n": 0}

    def enrolled_elsewhere_right_after_the_check(t):
        calls["n"] += 1
        if calls["n"] == 1:  # the number was free at the check; now another desk enrols it
            with app.app_context():
                other_trial = _db.session.get(type(trial), trial_id)
                services.enrol_patient(_db.session.get(type(investigator), investigator.id), other_trial,
                                       screening_values(other_trial, "SCR-TWICE"))
                _db.session.remove()
        return original(t)

    monkeypatch.setattr(services, "allocation_counts", enrolled_elsewhere_right_after_the_check)
    try:
        services.enrol_patient(investigator, trial, screening_values(trial, "SCR-TWICE"))
        raised = None
    except RuleViolation as error:
        raised = error.field
    monkeypatch.undo()
    db.session.rollback()
    assert raised == "screening_number"
    assert db.session.scalar(select(func.count(Patient.id)).where(Patient.screening_number == "SCR-TWICE")) == 1
