"""Two investigators ordering the infusion of the same patient at the same moment: exactly one
order is placed (the check is repeated under a lock on the patient), on SQLite and PostgreSQL.
Found by the race soak (tests/reliability/test_race_soak.py)."""
from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select

from labsys.errors import RuleViolation
from labsys.extensions import db as _db
from labsys.trial import orders, rules, services
from labsys.trial.models import InfusionOrder, Patient


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
                orders.order_infusion(user, _db.session.get(Patient, patient_id), dt.date.today())
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
