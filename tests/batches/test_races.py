"""Registering a code that another desk registers at the same moment is refused with the field
to correct, not a crash on the unique constraint (the pattern the race soak found in trial
enrolment, tests/reliability/test_race_soak.py), on SQLite and PostgreSQL."""
from __future__ import annotations

import contextlib
import datetime as dt

import pytest

from labsys.batches import common, donors, quality
from labsys.batches.rules import ScreeningOutcome
from labsys.errors import RuleViolation
from labsys.extensions import db as _db
from tests.batches.conftest import CLEAN
from tests.conftest import lab_today


def _registered_elsewhere_first(app, monkeypatch, module, register):
    """The service's own checks pass; just before its transaction another desk commits the same
    registration (in its own app context and session)."""
    real_work = common.work
    done = {"n": 0}

    @contextlib.contextmanager
    def work(*args, **kwargs):
        if not done["n"]:
            done["n"] += 1
            with app.app_context():
                register()
                _db.session.remove()
        with real_work(*args, **kwargs) as session:
            yield session

    monkeypatch.setattr(module, "work", work)


def test_one_donor_code_registered_at_two_desks_at_once_is_refused(app, db, lab, monkeypatch):
    def register():
        from labsys.auth.services import find_user

        donors.register_donor(find_user("technician2"), "D-TWICE", lab_today() - dt.timedelta(days=30),
                              ScreeningOutcome.ACCEPTABLE, lab_today() - dt.timedelta(days=3), CLEAN)

    _registered_elsewhere_first(app, monkeypatch, donors, register)
    with pytest.raises(RuleViolation) as refused:
        lab.donor("D-TWICE", determine=False)
    assert refused.value.problems[0][0] == "code"


def test_one_reagent_lot_registered_at_two_desks_at_once_is_refused(app, db, lab, monkeypatch):
    today = lab_today()

    def register():
        from labsys.auth.services import find_user

        quality.add_reagent(find_user("technician2"), "Medium", "L-TWICE", "Supplier", today + dt.timedelta(days=90),
                            today)

    _registered_elsewhere_first(app, monkeypatch, quality, register)
    with pytest.raises(RuleViolation) as refused:
        quality.add_reagent(lab.tech, "Medium", "L-TWICE", "Supplier", today + dt.timedelta(days=90), today)
    assert refused.value.problems[0][0] == "lot"
