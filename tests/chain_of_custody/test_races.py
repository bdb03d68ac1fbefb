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
