"""Every dispensing check, passing and failing, by name (DESIGN.md, "Dispensing checks")."""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from labsys.chain_of_custody.rules import (DispenseSettings, ScannedPatient, ScannedVial, all_passed,
                                           dispensing_checks)

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.timezone.utc)
SETTINGS = DispenseSettings(dose_cells_per_kg=1_000_000, dose_tolerance=Decimal("0.20"), hold_minutes=60)
PATIENT = ScannedPatient(signature_valid=True, found=True, study_id="S-007", kit_number="K-123456",
                         randomized=True, arm="msc", weight_kg=Decimal("70"))


def vial(identifier: str = "W000026000123A001", **changes) -> ScannedVial:
    base = ScannedVial(payload="LS1.vial." + identifier, signature_valid=True, found=True, identifier=identifier,
                       status="thawed", allocated_kit="K-123456", lot_identifier="W000026000123",
                       lot_status="released", lot_selected=True, expires_at=NOW + dt.timedelta(days=300),
                       thawed_at=NOW - dt.timedelta(minutes=20), viable_cells=35_000_000,
                       volume_ml=Decimal("10"), endotoxin_eu_per_ml=Decimal("0.5"))
    return dataclasses.replace(base, **changes)


TWO_VIALS = [vial("W000026000123A001"), vial("W000026000123A002")]  # 70e6 cells for 70 kg


def verdicts(patient=PATIENT, vials=TWO_VIALS, **kwargs) -> dict[str, list[bool]]:
    found: dict[str, list[bool]] = {}
    for check in dispensing_checks(patient, vials, SETTINGS, NOW, **kwargs):
        found.setdefault(check.rule, []).append(check.passed)
    return found


def test_a_correct_dispensing_passes_every_check():
    checks = dispensing_checks(PATIENT, TWO_VIALS, SETTINGS, NOW, dispenser_id=1, witness_id=2, require_witness=True)
    assert all_passed(checks), [c for c in checks if not c.passed]
    names = {c.rule for c in checks}
    assert names >= {"patient_signature_valid", "patient_randomized", "patient_receives_product",
                     "vial_signature_valid", "vial_exists", "vial_scanned_once", "vial_not_already_dispensed",
                     "vial_allocated_to_patient", "lot_released", "vial_not_expired",
                     "vial_thawed_within_hold_time", "dose_within_tolerance", "endotoxin_within_limit",
                     "witness_is_different_person"}


@pytest.mark.parametrize("rule, patient, vials, extra", [
    ("patient_signature_valid", dataclasses.replace(PATIENT, signature_valid=False, signature_reason="bad signature"), TWO_VIALS, {}),
    ("patient_randomized", dataclasses.replace(PATIENT, randomized=False), TWO_VIALS, {}),
    ("patient_receives_product", dataclasses.replace(PATIENT, arm="control"), TWO_VIALS, {}),
    ("vial_signature_valid", PATIENT, [vial(signature_valid=False, signature_reason="altered"), TWO_VIALS[1]], {}),
    ("vial_exists", PATIENT, [vial(found=False), TWO_VIALS[1]], {}),
    ("vial_scanned_once", PATIENT, [TWO_VIALS[0], TWO_VIALS[0]], {}),
    ("vial_not_already_dispensed", PATIENT, [vial(status="dispensed"), TWO_VIALS[1]], {}),
    ("vial_allocated_to_patient", PATIENT, [vial(allocated_kit="K-999999"), TWO_VIALS[1]], {}),
    ("vial_allocated_to_patient", PATIENT, [vial(status="quarantine"), TWO_VIALS[1]], {}),
    ("lot_released", PATIENT, [vial(lot_status="quarantine"), TWO_VIALS[1]], {}),
    ("lot_released", PATIENT, [vial(lot_selected=False), TWO_VIALS[1]], {}),
    ("vial_not_expired", PATIENT, [vial(expires_at=NOW - dt.timedelta(minutes=1)), TWO_VIALS[1]], {}),
    ("vial_thawed_within_hold_time", PATIENT, [vial(thawed_at=None), TWO_VIALS[1]], {}),
    ("vial_thawed_within_hold_time", PATIENT, [vial(thawed_at=NOW - dt.timedelta(minutes=61)), TWO_VIALS[1]], {}),
    ("dose_within_tolerance", PATIENT, [TWO_VIALS[0]], {}),
    ("dose_within_tolerance", dataclasses.replace(PATIENT, weight_kg=Decimal("40")), TWO_VIALS, {}),
    ("endotoxin_within_limit", PATIENT, [vial(endotoxin_eu_per_ml=Decimal("40")), TWO_VIALS[1]], {}),
    ("endotoxin_within_limit", PATIENT, [vial(endotoxin_eu_per_ml=None), TWO_VIALS[1]], {}),
    ("witness_is_different_person", PATIENT, TWO_VIALS, {"dispenser_id": 1, "witness_id": 1, "require_witness": True}),
    ("witness_is_different_person", PATIENT, TWO_VIALS, {"dispenser_id": 1, "witness_id": None, "require_witness": True}),
    ("vials_scanned", PATIENT, [], {}),
])
def test_each_check_fails_on_its_own_condition(rule, patient, vials, extra):
    checks = dispensing_checks(patient, vials, SETTINGS, NOW, **extra)
    failing = {c.rule for c in checks if not c.passed}
    assert rule in failing
    assert not all_passed(checks)
    assert all(c.message for c in checks)


def test_boundaries_of_the_hold_time_and_dose_tolerance():
    at_limit = [vial(thawed_at=NOW - dt.timedelta(minutes=60)), vial("W000026000123A002")]
    assert verdicts(vials=at_limit)["vial_thawed_within_hold_time"] == [True, True]
    # 70 kg × 1e6 = 70e6 target; 84e6 is +20 % (allowed), 84.1e6 is not.
    edge = [vial(viable_cells=42_000_000), vial("W000026000123A002", viable_cells=42_000_000)]
    assert verdicts(vials=edge)["dose_within_tolerance"] == [True]
    over = [vial(viable_cells=42_050_000), vial("W000026000123A002", viable_cells=42_050_000)]
    assert verdicts(vials=over)["dose_within_tolerance"] == [False]


def test_every_failure_is_reported_not_only_the_first():
    bad = [vial(status="dispensed", lot_status="rejected", thawed_at=None)]
    failing = [c.rule for c in dispensing_checks(PATIENT, bad, SETTINGS, NOW) if not c.passed]
    assert {"vial_not_already_dispensed", "lot_released", "vial_thawed_within_hold_time",
            "dose_within_tolerance"} <= set(failing)


def test_messages_name_the_kit_and_never_the_arm():
    control = dataclasses.replace(PATIENT, arm="control")
    for check in dispensing_checks(control, TWO_VIALS, SETTINGS, NOW):
        text = check.message.lower()
        assert "control" not in text and "routine care" not in text and "placebo" not in text
        assert "msc arm" not in text


def test_an_available_vial_of_a_selected_released_lot_counts_as_allocatable():
    available = [vial(status="available", allocated_kit=None), vial("W000026000123A002")]
    assert verdicts(vials=available)["vial_allocated_to_patient"] == [True, True]
