"""The potency hook reads what the potency feature's ``approved_potency_for_lot`` returns
(an ``ApprovedPotency`` with run_code, valid and a float % inhibition), and the patient lookup
hook stays empty until a later feature registers one."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from labsys.release import hooks
from labsys.release.defaults import DEFAULT_CRITERIA
from labsys.release.rules import POTENCY_TEST_CODE, numeric_rule


@dataclass(frozen=True)
class ApprovedPotencyShape:
    """The fields of labsys.potency.services.ApprovedPotency (potency-app branch)."""

    lot_identifier: str
    percent_inhibition: float | None
    relative_potency: float | None
    run_id: int
    run_code: str
    valid: bool
    assay_date: dt.date
    approved_at: dt.datetime


def test_an_approved_potency_result_becomes_the_fact_the_rules_judge(app):
    found = ApprovedPotencyShape("W000026000001", 35.714285714285715, 1.02, 7, "BV2-2026-007", True,
                                 dt.date(2026, 11, 20), dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc))
    app.extensions["labsys_release_potency"] = lambda lot: found if lot == found.lot_identifier else None
    fact = hooks.potency_for("W000026000001")
    assert fact.percent_inhibition == Decimal("35.714285714285715")
    assert fact.run_valid is True and fact.run_reference == "BV2-2026-007"
    assert hooks.potency_for("W000026000002") is None
    criterion = next(c for c in DEFAULT_CRITERIA if c.test_code == POTENCY_TEST_CODE)
    from labsys.release.rules import ResultFact

    outcome = numeric_rule(criterion, ResultFact(numeric_value=fact.percent_inhibition, unit="%"))
    assert outcome.result == "35.7143 %"


def test_an_invalid_approved_run_is_reported_invalid(app):
    found = ApprovedPotencyShape("L1", 10.0, None, 1, "BV2-1", False, dt.date(2026, 1, 1),
                                 dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    app.extensions["labsys_release_potency"] = lambda lot: found
    assert hooks.potency_for("L1").run_valid is False


def test_without_a_registered_lookup_no_patient_is_known(app):
    app.extensions.pop(hooks._PATIENT_LOOKUP_KEY, None)  # as when the custody feature is absent
    assert hooks.patient_lookup_available() is False
    assert hooks.patients_of([object()]) == {}
