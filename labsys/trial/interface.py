"""What other features (chain of custody, release) may use from the trial. Import from here only.

Patients
    ``find_patient(study_id=None, kit_number=None)`` -> Patient | None (a wristband scan gives either)
    ``Patient.study_id``, ``.kit_number``, ``.weight_kg`` (measured at enrolment), ``.randomized``
Masking
    ``may_see_arm(user, trial=None)``; ``arm_label_for(user, patient)`` (arm name or "Kit K-…");
    ``arm_of(patient)`` -> "msc" | "control" | None, unchecked: use it inside rules, never in a view
    ``dispensing_arm_check(patient, kit_number)`` -> RuleResult("patient_arm", …): randomized, scanned
    kit matches, and (without masking) in the cell arm
Dose and endotoxin (pure, numbers in, numbers out)
    ``target_cells(dose_cells_per_kg, weight_kg)``, ``vials_needed(target, viable_cells_per_vial,
    post_thaw_viability=None)``, ``check_dose(target, delivered, tolerance, max_cells)`` -> DoseCheck,
    ``endotoxin_eu_per_kg(eu_per_ml, volume_ml, weight_kg)``, ``check_endotoxin(eu_per_kg, limit)``
    ``dispensing_dose_checks(patient, delivered_cells, endotoxin_eu_per_ml, volume_ml)`` -> every
    dose/cap/endotoxin RuleResult for this patient with the trial's configured limits
Orders
    ``active_order(patient)``, ``open_orders()``, ``get_order(order_id)``; ``preparation_of(order)``
    -> Preparation (kind, lot_identifier, vial_identifiers, delivered_cells, …) or None, unchecked;
    ``preparation_for(user, order)`` masks it
Follow-up
    ``aes_for_lot(lot_identifier)`` -> adverse events of patients who received that lot
"""
from __future__ import annotations

from labsys.trial.followup import aes_for_lot, product_link
from labsys.trial.masking import arm_label_for, may_see_arm
from labsys.trial.orders import (Preparation, active_order, dispensing_dose_checks, get_order, open_orders,
                                 preparation_for, preparation_of)
from labsys.trial.rules import (ARM_CONTROL, ARM_MSC, DoseCheck, RuleResult, check_dose, check_endotoxin,
                                endotoxin_eu_per_kg, target_cells, vials_needed)
from labsys.trial.services import arm_of, dispensing_arm_check, find_patient, get_trial

__all__ = [
    "ARM_CONTROL", "ARM_MSC", "DoseCheck", "Preparation", "RuleResult", "active_order", "aes_for_lot",
    "arm_label_for", "arm_of", "check_dose", "check_endotoxin", "dispensing_arm_check", "dispensing_dose_checks",
    "endotoxin_eu_per_kg", "find_patient", "get_order", "get_trial", "may_see_arm", "open_orders",
    "preparation_for", "preparation_of", "product_link", "target_cells", "vials_needed",
]
