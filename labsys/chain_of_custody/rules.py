"""Dispensing checks (DESIGN.md, "Dispensing checks"): each a named rule with its own message.

Pure: plain facts in, a list of ``Check`` out, no Flask and no database. The caller gathers the
facts (signature verdicts, vial and lot state, the patient's randomization, the dose settings),
evaluates every rule, and refuses if any fails, showing every reason. The same list answers
``POST /api/v1/dispense/check`` and is printed on the chain-of-custody certificate."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence


from labsys.i18n import gettext as _
from labsys.trial.rules import ARM_MSC, check_dose, check_endotoxin, endotoxin_eu_per_kg, target_cells, viable_cells_after_thaw

DISPENSABLE_LOT_STATES = ("released", "released_pending")
ALLOCATABLE_VIAL_STATES = ("available",)
ALLOCATED_VIAL_STATES = ("allocated", "thawed")


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    message: str

    def as_dict(self) -> dict:
        return {"rule": self.rule, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class ScannedPatient:
    """What the wristband scan resolved to."""

    signature_valid: bool
    signature_reason: str | None = None
    found: bool = False
    study_id: str | None = None
    kit_number: str | None = None
    randomized: bool = False
    arm: str | None = None  # the rules may read it; messages name the kit, never the arm
    weight_kg: Decimal | None = None


@dataclass(frozen=True)
class ScannedVial:
    """What one vial scan resolved to."""

    payload: str
    signature_valid: bool
    signature_reason: str | None = None
    found: bool = False
    identifier: str | None = None
    status: str | None = None
    allocated_kit: str | None = None
    lot_identifier: str | None = None
    lot_status: str | None = None
    lot_selected: bool = False
    expires_at: dt.datetime | None = None
    thawed_at: dt.datetime | None = None
    viable_cells: int | None = None
    volume_ml: Decimal | None = None
    endotoxin_eu_per_ml: Decimal | None = None

    @property
    def label(self) -> str:
        return self.identifier or _("unreadable code")


@dataclass(frozen=True)
class DispenseSettings:
    dose_cells_per_kg: int = 1_000_000
    dose_tolerance: Decimal = Decimal("0.20")
    max_cells: int | None = None
    hold_minutes: int = 60
    endotoxin_limit_eu_per_kg: Decimal = Decimal("5")
    post_thaw_viability: Decimal | None = None


def _check(rule: str, passed: bool, message: str) -> Check:
    return Check(rule, passed, message)


def patient_checks(patient: ScannedPatient) -> list[Check]:
    checks = [_check("patient_signature_valid", patient.signature_valid,
                     _("Wristband code is genuine.") if patient.signature_valid else
                     _("Wristband code fails verification: %(why)s", why=patient.signature_reason or _("invalid")))]
    if not patient.signature_valid:
        return checks
    if not patient.found or not patient.randomized:
        checks.append(_check("patient_randomized", False,
                             _("No randomized patient matches this wristband.")))
        return checks
    checks.append(_check("patient_randomized", True,
                         _("Patient %(sid)s, kit %(kit)s, is randomized.", sid=patient.study_id, kit=patient.kit_number)))
    receives = patient.arm == ARM_MSC
    checks.append(_check("patient_receives_product", receives,
                         _("Kit %(kit)s is assigned the cell product.", kit=patient.kit_number) if receives else
                         _("Kit %(kit)s is not assigned the cell product: do not dispense vials for it.",
                           kit=patient.kit_number)))
    return checks


def vial_checks(vial: ScannedVial, patient: ScannedPatient, settings: DispenseSettings,
                now: dt.datetime, seen: set[str]) -> list[Check]:
    label = vial.label
    if not vial.signature_valid:
        return [_check("vial_signature_valid", False,
                       _("Vial code %(v)s fails verification: %(why)s", v=label, why=vial.signature_reason or _("invalid")))]
    checks = [_check("vial_signature_valid", True, _("Vial code %(v)s is genuine.", v=label))]
    if not vial.found:
        checks.append(_check("vial_exists", False, _("Vial %(v)s is not in labsys.", v=label)))
        return checks
    checks.append(_check("vial_exists", True, _("Vial %(v)s found.", v=label)))
    duplicate = vial.identifier in seen
    seen.add(vial.identifier or "")
    checks.append(_check("vial_scanned_once", not duplicate,
                         _("Vial %(v)s was scanned twice.", v=label) if duplicate else
                         _("Vial %(v)s scanned once.", v=label)))
    already = vial.status in ("dispensed", "administered")
    checks.append(_check("vial_not_already_dispensed", not already,
                         _("Vial %(v)s was already dispensed.", v=label) if already else
                         _("Vial %(v)s has not been dispensed.", v=label)))
    if vial.status in ALLOCATED_VIAL_STATES:
        mine = patient.kit_number is not None and vial.allocated_kit == patient.kit_number
        checks.append(_check("vial_allocated_to_patient", mine,
                             _("Vial %(v)s is allocated to kit %(kit)s.", v=label, kit=vial.allocated_kit) if mine else
                             _("Vial %(v)s is allocated to kit %(other)s, not to kit %(kit)s.",
                               v=label, other=vial.allocated_kit or "—", kit=patient.kit_number or "—")))
    elif vial.status in ALLOCATABLE_VIAL_STATES:
        checks.append(_check("vial_allocated_to_patient", True,
                             _("Vial %(v)s is available and will be allocated to kit %(kit)s.",
                               v=label, kit=patient.kit_number or "—")))
    elif not already:
        checks.append(_check("vial_allocated_to_patient", False,
                             _("Vial %(v)s is %(state)s and cannot be dispensed.", v=label, state=vial.status)))
    released = vial.lot_status in DISPENSABLE_LOT_STATES and vial.lot_selected
    if vial.lot_status not in DISPENSABLE_LOT_STATES:
        message = _("Lot %(lot)s is %(state)s, not released.", lot=vial.lot_identifier, state=vial.lot_status)
    elif not vial.lot_selected:
        message = _("Lot %(lot)s is released but not selected for the trial.", lot=vial.lot_identifier)
    else:
        message = _("Lot %(lot)s is released and selected for the trial.", lot=vial.lot_identifier)
    checks.append(_check("lot_released", released, message))
    in_date = vial.expires_at is None or now < vial.expires_at
    checks.append(_check("vial_not_expired", in_date,
                         _("Vial %(v)s is within its expiry.", v=label) if in_date else
                         _("Vial %(v)s expired on %(when)s.", v=label, when=vial.expires_at.strftime("%Y-%m-%d %H:%M UTC"))))
    if vial.thawed_at is None:
        checks.append(_check("vial_thawed_within_hold_time", False,
                             _("Vial %(v)s has no thaw recorded.", v=label)))
    else:
        held = now - vial.thawed_at
        limit = dt.timedelta(minutes=settings.hold_minutes)
        minutes = int(held.total_seconds() // 60)
        within = dt.timedelta(0) <= held <= limit
        checks.append(_check("vial_thawed_within_hold_time", within,
                             _("Vial %(v)s thawed %(m)d min ago (hold time %(h)d min).", v=label, m=minutes, h=settings.hold_minutes)
                             if within else
                             _("Vial %(v)s thawed %(m)d min ago, beyond the %(h)d min hold time.", v=label, m=minutes, h=settings.hold_minutes)))
    return checks


def cells(count: float | int) -> str:
    """A cell count as people write it on a dose sheet: whole cells, digits grouped (30,000,000)."""
    return f"{round(count):,}"


def dose_checks(patient: ScannedPatient, vials: Sequence[ScannedVial], settings: DispenseSettings) -> list[Check]:
    usable = [v for v in vials if v.signature_valid and v.found and v.viable_cells]
    if patient.weight_kg is None or not patient.found:
        return [_check("dose_within_tolerance", False, _("No body weight: the dose cannot be checked."))]
    target = target_cells(settings.dose_cells_per_kg, patient.weight_kg)
    delivered = sum(viable_cells_after_thaw(v.viable_cells, settings.post_thaw_viability) for v in usable)
    if not usable:
        return [_check("dose_within_tolerance", False,
                       _("No valid vial scanned: 0 of %(t)s cells target.", t=cells(target)))]
    dose = check_dose(target, delivered, settings.dose_tolerance, settings.max_cells)
    checks = [_check("dose_within_tolerance" if r.name == "dose_tolerance" else "dose_under_cap", r.passed,
                     _("%(n)d vial(s): %(d)s viable cells for a target of %(t)s (%(w)s kg × %(per)s/kg). %(detail)s",
                       n=len(usable), d=cells(delivered), t=cells(target), w=patient.weight_kg,
                       per=cells(settings.dose_cells_per_kg), detail=r.message))
              for r in dose.results]
    missing = [v.label for v in usable if v.endotoxin_eu_per_ml is None or v.volume_ml is None]
    if missing:
        checks.append(_check("endotoxin_within_limit", False,
                             _("No endotoxin result for: %(v)s.", v=", ".join(missing))))
    else:
        total = sum((endotoxin_eu_per_kg(v.endotoxin_eu_per_ml, v.volume_ml, patient.weight_kg) for v in usable),
                    Decimal(0))
        result = check_endotoxin(total, settings.endotoxin_limit_eu_per_kg)
        checks.append(_check("endotoxin_within_limit", result.passed, result.message))
    return checks


def witness_check(dispenser_id: int, witness_id: int | None) -> Check:
    if witness_id is None:
        return _check("witness_is_different_person", False, _("A second person must witness the dispensing."))
    different = witness_id != dispenser_id
    return _check("witness_is_different_person", different,
                  _("Witnessed by a second person.") if different else
                  _("The witness must be a different person from the one dispensing."))


def dispensing_checks(patient: ScannedPatient, vials: Sequence[ScannedVial], settings: DispenseSettings,
                      now: dt.datetime, dispenser_id: int | None = None, witness_id: int | None = None,
                      require_witness: bool = False) -> list[Check]:
    """Every dispensing check, all evaluated; the dispensing may go ahead only if all pass."""
    checks = patient_checks(patient)
    if not vials:
        checks.append(_check("vials_scanned", False, _("Scan at least one vial.")))
    seen: set[str] = set()
    for vial in vials:
        checks.extend(vial_checks(vial, patient, settings, now, seen))
    if vials and patient.signature_valid:
        checks.extend(dose_checks(patient, vials, settings))
    if require_witness:
        checks.append(witness_check(dispenser_id if dispenser_id is not None else -1, witness_id))
    return checks


def all_passed(checks: Sequence[Check]) -> bool:
    return bool(checks) and all(check.passed for check in checks)
