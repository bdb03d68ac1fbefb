"""Custody services when another user changes the same records between a service's first
checks and its transaction (found by the race soak, tests/reliability/test_race_soak.py)."""
from __future__ import annotations

import pytest

from labsys.batches.states import VialStatus
from labsys.chain_of_custody import services
from labsys.errors import InvalidTransition
from labsys.extensions import db as _db


def test_thawing_a_vial_whose_allocation_was_just_cancelled_is_refused_not_a_crash(app, db, users, ready,
                                                                                     monkeypatch):
    _lot, _patient, order, vials = ready(thaw=False)
    vial, order_id = vials[0], order.id
    original = services.allocation_of_vial
    calls = {"n": 0}

    def cancelled_right_after_the_check(v):
        found = original(v)
        calls["n"] += 1
        if calls["n"] == 1:  # the service's first check passed; now another pharmacist cancels
            with app.app_context():
                other = _db.session.get(type(users["pharmacist2"]), users["pharmacist2"].id)
                services.cancel_allocation(other, _db.session.get(type(order), order_id), "patient withdrew")
                _db.session.remove()
        return found

    monkeypatch.setattr(services, "allocation_of_vial", cancelled_right_after_the_check)
    with pytest.raises(InvalidTransition):
        services.thaw(users["pharmacist"], vial)
    db.session.rollback()
    assert VialStatus(db.session.get(type(vial), vial.id).status) == VialStatus.AVAILABLE
    assert not any(e.event_type == "thawed" for e in services.timeline(vial))


def test_two_pharmacists_allocating_other_vials_to_one_order_at_once_allocate_one_set(app, db, users,
                                                                                        released_lot, patient_in_arm,
                                                                                        monkeypatch):
    from labsys.batches.vials import vials_of
    from labsys.chain_of_custody.models import AllocationStatus
    from labsys.errors import RuleViolation
    from labsys.trial import orders as trial_orders

    lot = released_lot(vial_count=8)
    order = trial_orders.active_order(patient_in_arm())  # 70 kg: four vials
    first, second = [[v.identifier for v in vials_of(lot)][i:i + 4] for i in (0, 4)]
    order_id = order.id
    original = services.active_allocations
    calls = {"n": 0}

    def other_set_allocated_right_after_the_check(o):
        found = original(o)
        calls["n"] += 1
        if calls["n"] == 1:  # the first check passed; now another pharmacist allocates other vials
            with app.app_context():
                other = _db.session.get(type(users["pharmacist2"]), users["pharmacist2"].id)
                services.allocate(other, _db.session.get(type(order), order_id), second)
                _db.session.remove()
        return found

    monkeypatch.setattr(services, "active_allocations", other_set_allocated_right_after_the_check)
    with pytest.raises(RuleViolation):
        services.allocate(users["pharmacist"], order, first)
    monkeypatch.undo()
    db.session.rollback()
    active = services.active_allocations(db.session.get(type(order), order_id))
    assert sorted(a.vial.identifier for a in active) == sorted(second)
    assert all(a.status == AllocationStatus.ACTIVE for a in active)
