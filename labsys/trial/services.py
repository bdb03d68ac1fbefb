"""Trial services: configuration, enrolment, the sealed allocation list, randomization and
emergency unblinding. Services are the only writers; each checks its rules, changes state
inside ``unit_of_work`` (audited) and commits once.

Randomization is atomic on both engines: the next free line of the list is claimed with a
conditional UPDATE (``... WHERE used_by_patient_id IS NULL``) whose row count is checked, and
retried on the next line if another transaction won the race."""
from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import random
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import record_event, unit_of_work
from labsys.auth.models import User
from labsys.auth.roles import Permission
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.db import read, utcnow
from labsys.errors import ConcurrentChange, Forbidden, NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.trial import rules
from labsys.trial.masking import arm_name, may_see_arm
from labsys.trial.models import (AllocationEntry, EligibilityStatus, InfusionOrder, OrderStatus, Patient, Sex,
                                 Trial, Unblinding)
from labsys.trial.sealing import open_arm, seal_arm
from labsys.timefmt import lab_today

RANDOMIZE_ATTEMPTS = 100


# --- Trial configuration --------------------------------------------------------------------------

def get_trial() -> Trial | None:
    """The configured trial (labsys runs one trial at a time)."""
    return db.session.scalar(select(Trial).order_by(Trial.id).limit(1))


def require_trial() -> Trial:
    trial = get_trial()
    if trial is None:
        raise NotFound(_("No trial is configured yet."))
    return trial


def _require_unblinded(user: User, what: str) -> None:
    if not user.can(Permission.UNBLINDED):
        raise Forbidden(_("Only an unblinded role may %(what)s.", what=what))


TRIAL_FIELDS = ("registry_number", "title", "control_arm_name", "msc_arm_name", "ratio_control",
                "ratio_msc", "block_sizes", "target_enrolment", "age_min", "age_max",
                "dose_cells_per_kg", "dose_tolerance", "max_dose_cells", "apply_post_thaw_viability",
                "endotoxin_limit_eu_per_kg", "masked", "follow_up_days", "visit_days", "exclusions")
LOCKED_AFTER_LIST = ("ratio_control", "ratio_msc", "block_sizes", "target_enrolment",
                     "control_arm_name", "msc_arm_name")


def trial_problems(values: dict[str, Any]) -> dict[str, list[str]]:
    """Every problem with a configuration, by field."""
    problems: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        problems.setdefault(name, []).append(message)

    if not (values.get("registry_number") or "").strip():
        add("registry_number", _("The registry number is required."))
    for name in ("control_arm_name", "msc_arm_name"):
        if not (values.get(name) or "").strip():
            add(name, _("Name both arms."))
    if (values.get("control_arm_name") or "").strip().lower() == (values.get("msc_arm_name") or "").strip().lower():
        add("msc_arm_name", _("The two arms need different names."))
    if not 18 <= values["age_min"] <= values["age_max"]:
        add("age_max", _("The age range must be adult and not reversed."))
    if values["target_enrolment"] < 2:
        add("target_enrolment", _("Target enrolment must be at least 2."))
    try:
        sizes = rules.parse_block_sizes(values["block_sizes"])
        rules.generate_block_list(1, sizes, (values["ratio_control"], values["ratio_msc"]),
                                  rng=random.Random(0))
    except ValueError as error:
        add("block_sizes", str(error))
    try:
        rules.parse_visit_days(values["visit_days"], values["follow_up_days"])
    except ValueError as error:
        add("visit_days", str(error))
    tolerance = Decimal(str(values["dose_tolerance"]))
    if not Decimal(0) < tolerance < Decimal(1):
        add("dose_tolerance", _("Tolerance is a fraction between 0 and 1 (0.20 = ±20 %)."))
    if values["dose_cells_per_kg"] <= 0:
        add("dose_cells_per_kg", _("The dose per kg must be positive."))
    if values.get("max_dose_cells") is not None and values["max_dose_cells"] <= 0:
        add("max_dose_cells", _("The cap must be positive or left empty."))
    return problems


def save_trial(user: User, values: dict[str, Any], trial: Trial | None = None) -> Trial:
    """Create or change the trial configuration (unblinded role: it names the arms). Arms,
    ratio, block sizes and target are frozen once the allocation list exists."""
    _require_unblinded(user, _("configure the trial"))
    values = dict(values)
    values["exclusions"] = [e.strip() for e in values.get("exclusions") or [] if e and e.strip()]
    values["block_sizes"] = (values.get("block_sizes") or "").replace(" ", "")
    values["visit_days"] = (values.get("visit_days") or "").replace(" ", "")
    values = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
    problems = trial_problems(values)
    if trial is not None and trial.list_generated_at is not None:
        for name in LOCKED_AFTER_LIST:
            if str(getattr(trial, name)) != str(values[name]):
                problems.setdefault(name, []).append(
                    _("Frozen: the allocation list has been generated."))
    if trial is None and get_trial() is not None:
        problems.setdefault("registry_number", []).append(_("A trial is already configured."))
    if problems:
        refused = RuleViolation(_("The trial configuration was not saved."),
                                [m for messages in problems.values() for m in messages])
        refused.field_problems = problems  # type: ignore[attr-defined]
        raise refused
    with unit_of_work(actor_of(user), "trial.configure" if trial else "trial.create"):
        if trial is None:
            trial = Trial()
            db.session.add(trial)
        for name in TRIAL_FIELDS:
            if name == "exclusions":
                trial.exclusion_criteria = json.dumps(values["exclusions"], ensure_ascii=False)
            else:
                setattr(trial, name, values[name].strip() if isinstance(values[name], str) else values[name])
    return trial


# --- Allocation list ------------------------------------------------------------------------------

def allocation_counts(trial: Trial) -> dict[str, int]:
    """Arm-neutral counts of the list (safe for every role)."""
    total = db.session.scalar(select(func.count()).where(AllocationEntry.trial_id == trial.id)) or 0
    used = db.session.scalar(select(func.count()).where(
        AllocationEntry.trial_id == trial.id, AllocationEntry.used_by_patient_id.is_not(None))) or 0
    return {"total": total, "used": used, "free": total - used}


def generate_allocation_list(user: User, trial: Trial, rng: random.Random | None = None) -> int:
    """Generate the concealed list once, from the operating system's cryptographic source
    (tests may pass a seeded ``rng``). Returns the number of lines."""
    _require_unblinded(user, _("generate the allocation list"))
    if trial.list_generated_at is not None or allocation_counts(trial)["total"]:
        raise RuleViolation(_("The allocation list already exists; it is generated only once."))
    planned = rules.generate_block_list(trial.target_enrolment, trial.block_size_list,
                                        (trial.ratio_control, trial.ratio_msc), rng=rng)
    with unit_of_work(actor_of(user), "trial.allocation_generate"):
        for entry in planned:
            db.session.add(AllocationEntry(trial_id=trial.id, sequence=entry.sequence,
                                           block_number=entry.block_number, block_size=entry.block_size,
                                           arm_sealed=seal_arm(trial.id, entry.sequence, entry.arm)))
        trial.list_generated_at = utcnow()
        trial.list_generated_by_id = user.id
        record_event(actor_of(user), "trial.allocation_generate", "trials", trial.id,
                     {"lines": len(planned), "blocks": planned[-1].block_number,
                      "block_sizes": trial.block_sizes, "source": "os.urandom" if rng is None else "seeded"})
    return len(planned)


def unsealed_list(user: User, trial: Trial) -> list[tuple[AllocationEntry, str]]:
    """The whole list with arms: unblinded roles only."""
    _require_unblinded(user, _("read the allocation list"))
    entries = db.session.scalars(select(AllocationEntry).where(AllocationEntry.trial_id == trial.id)
                                 .order_by(AllocationEntry.sequence)).all()
    return [(e, open_arm(trial.id, e.sequence, e.arm_sealed)) for e in entries]


def export_allocation_csv(user: User, trial: Trial) -> str:
    """The list as CSV for the unblinded statistician; the export is audited."""
    lines = unsealed_list(user, trial)
    patients = {p.id: p for p in db.session.scalars(select(Patient).where(Patient.trial_id == trial.id))}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["sequence", "block", "block_size", "arm", "arm_name", "study_id", "kit_number",
                     "randomized_at_utc"])
    for entry, arm in lines:
        patient = patients.get(entry.used_by_patient_id)
        writer.writerow([entry.sequence, entry.block_number, entry.block_size, arm, arm_name(trial, arm),
                         patient.study_id if patient else "", patient.kit_number if patient else "",
                         entry.used_at.isoformat() if entry.used_at else ""])
    with unit_of_work(actor_of(user), "trial.allocation_export"):
        record_event(actor_of(user), "trial.allocation_export", "trials", trial.id, {"lines": len(lines)})
    return buffer.getvalue()


# --- Patients -------------------------------------------------------------------------------------

def get_patient(patient_id: int) -> Patient:
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound(_("No such patient."))
    return patient


def find_patient(study_id: str | None = None, kit_number: str | None = None) -> Patient | None:
    """Look a randomized patient up by study ID or kit number (for dispensing scans), with the
    trial (every scan's checks read its settings) in the same statement."""
    query = select(Patient).options(joinedload(Patient.trial))
    if study_id:
        query = query.where(Patient.study_id == study_id.strip())
    elif kit_number:
        query = query.where(Patient.kit_number == kit_number.strip().upper())
    else:
        return None
    return db.session.scalar(query)


def _tri(value: Any) -> bool | None:
    if value in (True, "yes", "true", "1"):
        return True
    if value in (False, "no", "false", "0"):
        return False
    return None


def _screening(trial: Trial, values: dict[str, Any], today: dt.date) -> tuple[rules.ScreeningAnswers, int | None]:
    year_of_birth = values.get("year_of_birth")
    age = values.get("age_years")
    if age is None and year_of_birth:
        age = rules.age_on(int(year_of_birth), today)
    try:
        weight = None if values.get("weight_kg") in (None, "") else Decimal(str(values["weight_kg"]))
    except InvalidOperation:
        weight = Decimal("0")
    answers = rules.ScreeningAnswers(
        age_years=age, consent_date=values.get("consent_date"),
        diagnosis_severe_viral_pneumonia=_tri(values.get("diagnosis_confirmed")),
        exclusions_present={item: _tri(values.get("exclusions", {}).get(item)) for item in trial.exclusions},
        weight_kg=weight, screening_date=today)
    return answers, age


def _eligibility(trial: Trial, answers: rules.ScreeningAnswers) -> tuple[EligibilityStatus, list[rules.RuleResult]]:
    results = rules.check_eligibility(answers, rules.EligibilityCriteria(
        trial.age_min, trial.age_max, tuple(trial.exclusions)))
    failed = rules.failures(results)
    if failed:
        raise RuleViolation(_("The patient cannot be enrolled: an eligibility criterion fails."),
                            [r.message for r in failed], field=",".join(r.name for r in failed))
    return EligibilityStatus(rules.eligibility_status(results)), results


def _require_free_screening_number(trial: Trial, screening_number: str) -> None:
    if db.session.scalar(select(Patient.id).where(Patient.trial_id == trial.id,
                                                  Patient.screening_number == screening_number)):
        raise RuleViolation(_("Screening number %(n)s is already used.", n=screening_number),
                            [_("Screening number %(n)s is already used.", n=screening_number)],
                            field="screening_number")


def enrol_patient(user: User, trial: Trial, values: dict[str, Any], today: dt.date | None = None) -> Patient:
    """Record a screened patient. Any failing criterion (age outside the range, implausible
    weight, an exclusion present, no consent) refuses enrolment with every reason; unassessed
    items leave eligibility pending, so randomization waits."""
    today = today or lab_today()
    screening_number = (values.get("screening_number") or "").strip().upper()
    if not screening_number:
        raise RuleViolation(_("The screening number is required."), [_("The screening number is required.")],
                            field="screening_number")
    _require_free_screening_number(trial, screening_number)
    if allocation_counts(trial)["used"] >= trial.target_enrolment:
        raise RuleViolation(_("Enrolment is complete: the target of %(n)d randomized patients is reached.",
                              n=trial.target_enrolment),
                            [_("Enrolment is complete: the target of %(n)d randomized patients is reached.",
                               n=trial.target_enrolment)], field="screening_number")
    answers, age = _screening(trial, values, today)
    status, _results = _eligibility(trial, answers)
    with unit_of_work(actor_of(user), "trial.enrol"):
        # Again under the write lock: the same number may have just been enrolled at another desk.
        _require_free_screening_number(trial, screening_number)
        patient = Patient(
            trial_id=trial.id, screening_number=screening_number,
            year_of_birth=values.get("year_of_birth"), age_years=age, sex=Sex(values["sex"]),
            weight_kg=answers.weight_kg, weight_date=values.get("weight_date") or today,
            consent_date=answers.consent_date, diagnosis_confirmed=answers.diagnosis_severe_viral_pneumonia,
            exclusion_answers=json.dumps(answers.exclusions_present, ensure_ascii=False, sort_keys=True),
            eligibility=status, enrolled_by_id=user.id, enrolled_at=utcnow())
        db.session.add(patient)
    return patient


def update_screening(user: User, patient: Patient, values: dict[str, Any], reason: str | None,
                     today: dt.date | None = None) -> Patient:
    """Complete or correct the eligibility checklist before randomization (reason required for a
    correction of an item already answered)."""
    if patient.randomized:
        raise RuleViolation(_("The patient is randomized; the screening record is closed."))
    today = today or lab_today()
    # Age and sex are identity, fixed at enrolment; the checklist, weight and consent may change.
    values = {**values, "year_of_birth": patient.year_of_birth,
              "age_years": None if patient.year_of_birth else patient.age_years}
    answers, age = _screening(patient.trial, values, today)
    status, _results = _eligibility(patient.trial, answers)
    before = {"consent_date": patient.consent_date, "diagnosis_confirmed": patient.diagnosis_confirmed,
              "weight_kg": patient.weight_kg, **{f"exclusion:{k}": v for k, v in patient.exclusions.items()}}
    after = {"consent_date": answers.consent_date, "diagnosis_confirmed": answers.diagnosis_severe_viral_pneumonia,
             "weight_kg": answers.weight_kg, **{f"exclusion:{k}": v for k, v in answers.exclusions_present.items()}}
    corrected = [key for key, old in before.items() if old is not None and after.get(key) != old]
    if corrected and not (reason or "").strip():
        raise RuleViolation(_("Give a reason for changing an answer already recorded."),
                            [_("Give a reason for changing an answer already recorded.")], field="reason")
    with unit_of_work(actor_of(user), "trial.screening_update", reason):
        patient.age_years = age
        patient.weight_kg = answers.weight_kg
        patient.weight_date = values.get("weight_date") or patient.weight_date
        patient.consent_date = answers.consent_date
        patient.diagnosis_confirmed = answers.diagnosis_severe_viral_pneumonia
        patient.exclusion_answers = json.dumps(answers.exclusions_present, ensure_ascii=False, sort_keys=True)
        patient.eligibility = status
    return patient


def eligibility_results(patient: Patient) -> list[rules.RuleResult]:
    answers = rules.ScreeningAnswers(
        age_years=patient.age_years, consent_date=patient.consent_date,
        diagnosis_severe_viral_pneumonia=patient.diagnosis_confirmed,
        exclusions_present=patient.exclusions, weight_kg=patient.weight_kg,
        screening_date=patient.enrolled_at.date())
    return rules.check_eligibility(answers, rules.EligibilityCriteria(
        patient.trial.age_min, patient.trial.age_max, tuple(patient.trial.exclusions)))


# --- Randomization --------------------------------------------------------------------------------

def _new_kit_number() -> str:
    """An arm-neutral kit number, ``K-`` + six random digits, unique across the trial."""
    for _attempt in range(50):
        kit = f"K-{secrets.randbelow(1_000_000):06d}"
        if not db.session.scalar(select(Patient.id).where(Patient.kit_number == kit)):
            return kit
    raise ConcurrentChange(_("Could not draw a free kit number; try again."))


def _claim_next_entry(trial: Trial, patient: Patient) -> AllocationEntry:
    """Claim the lowest free line of the list for this patient, atomically: the UPDATE only
    succeeds while the line is still free; a lost race moves on to the next line."""
    for _attempt in range(RANDOMIZE_ATTEMPTS):
        entry_id = db.session.scalar(
            select(AllocationEntry.id).where(AllocationEntry.trial_id == trial.id,
                                             AllocationEntry.used_by_patient_id.is_(None),
                                             AllocationEntry.sequence <= trial.target_enrolment)
            .order_by(AllocationEntry.sequence).limit(1))
        if entry_id is None:
            raise RuleViolation(_("Enrolment is complete: the target of %(n)d randomized patients is reached.",
                                  n=trial.target_enrolment))
        claimed = db.session.execute(
            update(AllocationEntry)
            .where(AllocationEntry.id == entry_id, AllocationEntry.used_by_patient_id.is_(None))
            .values(used_by_patient_id=patient.id, used_at=utcnow())
            .execution_options(synchronize_session=False))
        if claimed.rowcount == 1:
            entry = db.session.get(AllocationEntry, entry_id, populate_existing=True)
            assert entry is not None
            return entry
    raise ConcurrentChange(_("The list is busy; try again."))


def randomize_patient(user: User, patient: Patient) -> str:
    """Randomize an eligible patient: reveal only the next line of the list, assign the study ID
    and kit number. Only the unblinded pharmacist randomizes. Returns the arm code."""
    _require_unblinded(user, _("randomize patients"))
    trial = patient.trial
    reasons = []
    if patient.randomized:
        reasons.append(_("Patient %(s)s is already randomized (study ID %(id)s).",
                         s=patient.screening_number, id=patient.study_id))
    elif patient.eligibility != EligibilityStatus.ELIGIBLE:
        reasons.append(_("The eligibility checklist of %(s)s is not complete.", s=patient.screening_number))
    if trial.list_generated_at is None:
        reasons.append(_("The allocation list has not been generated."))
    if reasons:
        raise RuleViolation(_("The patient was not randomized."), reasons)
    try:
        with unit_of_work(actor_of(user), "trial.randomize"):
            # Re-read inside the write transaction: another pharmacist may have just randomized
            # this patient (the version column catches what a re-read cannot on PostgreSQL).
            db.session.refresh(patient)
            if patient.randomized:
                raise RuleViolation(_("The patient was not randomized."), [_(
                    "Patient %(s)s is already randomized (study ID %(id)s).",
                    s=patient.screening_number, id=patient.study_id)])
            entry = _claim_next_entry(trial, patient)
            arm = open_arm(trial.id, entry.sequence, entry.arm_sealed)
            kit_number = _new_kit_number()
            randomized_by_id = user.id
            patient.study_id = f"P-{entry.sequence:03d}"
            patient.kit_number = kit_number
            patient.randomized_at = entry.used_at
            patient.randomized_by_id = randomized_by_id
            record_event(actor_of(user), "trial.randomize", "trial_allocation_entries", entry.id,
                         {"patient_id": patient.id, "study_id": patient.study_id,
                          "kit_number": patient.kit_number, "sequence": entry.sequence})
    except (StaleDataError, IntegrityError):
        raise ConcurrentChange(_("Someone else changed this patient at the same time; nothing was saved."))
    return arm


@dataclass(frozen=True)
class DispensingPatient:
    """A patient as the dispensing checks read them, as plain values in one statement (the
    patient, the trial's dose settings, the current infusion order and the arm from the sealed
    list): the check on every scan only reads; a service that writes loads the records."""
    id: int
    trial_id: int
    study_id: str | None
    kit_number: str | None
    randomized: bool
    weight_kg: Decimal
    arm: str | None
    dose_cells_per_kg: int
    dose_tolerance: Decimal
    max_dose_cells: int | None
    endotoxin_limit_eu_per_kg: Decimal
    order_id: int | None
    order_status: OrderStatus | None
    order_weight_kg: Decimal | None


@functools.cache
def dispensing_patient_statement():
    """Built once per process: the patient by kit number, the trial's settings, the newest order
    that is not cancelled (orders.active_order) and the patient's line of the allocation list.
    Its rows are read by ``dispensing_patient_of``; the dispense check reads them in the same
    statement as the scanned vials (chain_of_custody.services.dispensing_scans)."""
    newest_order = (select(InfusionOrder.id).where(InfusionOrder.patient_id == Patient.id,
                                                   InfusionOrder.status != OrderStatus.CANCELLED)
                    .order_by(InfusionOrder.id.desc()).limit(1).correlate(Patient).scalar_subquery())
    return (select(Patient.id, Patient.trial_id, Patient.study_id, Patient.kit_number, Patient.randomized_at,
                   Patient.weight_kg, Trial.dose_cells_per_kg, Trial.dose_tolerance, Trial.max_dose_cells,
                   Trial.endotoxin_limit_eu_per_kg, InfusionOrder.id, InfusionOrder.status, InfusionOrder.weight_kg,
                   AllocationEntry.sequence, AllocationEntry.arm_sealed)
            .join(Trial, Trial.id == Patient.trial_id)
            .outerjoin(InfusionOrder, InfusionOrder.id == newest_order)
            .outerjoin(AllocationEntry, AllocationEntry.used_by_patient_id == Patient.id)
            .where(Patient.kit_number == bindparam("kit_number")))


def dispensing_patient_of(row) -> DispensingPatient | None:
    """The patient of a row of ``dispensing_patient_statement``'s columns (None when they are
    NULL: no patient holds the kit)."""
    (patient_id, trial_id, study_id, kit, randomized_at, weight, dose, tolerance, max_cells, endotoxin, order_id,
     order_status, order_weight, sequence, sealed) = row
    if patient_id is None:
        return None
    randomized = randomized_at is not None
    arm = open_arm(trial_id, sequence, sealed) if randomized and sealed is not None else None
    return DispensingPatient(patient_id, trial_id, study_id, kit, randomized, weight, arm, dose, tolerance, max_cells,
                             endotoxin, order_id, None if order_status is None else OrderStatus(order_status),
                             order_weight)


def dispensing_patient(kit_number: str) -> DispensingPatient | None:
    """The randomized patient holding this kit number (for dispensing scans), or None."""
    row = read(dispensing_patient_statement(), {"kit_number": kit_number.strip().upper()}).first()
    return None if row is None else dispensing_patient_of(row)


def arm_of(patient: Patient) -> str | None:
    """The patient's arm code (``control`` / ``msc``), unchecked: for services and the custody
    feature's dispensing rules only. Never pass it to a template; use ``arm_label_for``."""
    if not patient.randomized:
        return None
    entry = db.session.scalar(select(AllocationEntry).where(AllocationEntry.used_by_patient_id == patient.id))
    if entry is None:
        return None
    return open_arm(patient.trial_id, entry.sequence, entry.arm_sealed)


def arm_for(user: User, patient: Patient) -> str | None:
    """The arm code for a user allowed to see it; masked users are refused."""
    if not may_see_arm(user, patient.trial):
        raise Forbidden(_("The treatment arm is masked for your role."))
    return arm_of(patient)


def dispensing_arm_check(patient: Patient, kit_number: str | None = None) -> rules.RuleResult:
    """For dispensing: the patient is randomized to receive an infusion. Under masking both arms
    receive one (cells or matching placebo), so the scanned kit must match the patient's kit;
    without masking only the MSC arm receives cells."""
    if not patient.randomized:
        return rules.RuleResult("patient_arm", False, _("The patient is not randomized."))
    if kit_number is not None and kit_number.strip().upper() != patient.kit_number:
        return rules.RuleResult("patient_arm", False, _("The kit number does not match the patient's kit."))
    if not patient.trial.masked and arm_of(patient) != rules.ARM_MSC:
        return rules.RuleResult("patient_arm", False, _("The patient is not in the cell-therapy arm."))
    return rules.RuleResult("patient_arm", True, _("Patient and kit match."))


def emergency_unblind(user: User, patient: Patient, reason: str, check: SignatureCheck) -> tuple[Unblinding, str]:
    """Reveal one patient's arm in an emergency: e-signed, with a reason, audited. The arm is
    returned to the requester only (it is not written into the audit trail)."""
    if not patient.randomized:
        raise RuleViolation(_("The patient is not randomized; there is nothing to unblind."))
    if not (reason or "").strip():
        raise RuleViolation(_("A reason is required."), [_("A reason is required.")], field="reason")
    with unit_of_work(actor_of(user), "trial.emergency_unblind", reason, reason_required=True):
        unblinding = Unblinding(patient_id=patient.id, requested_by_id=user.id, reason=reason.strip(),
                                unblinded_at=utcnow())
        db.session.add(unblinding)
        db.session.flush()
        sign(check, unblinding)
    return unblinding, arm_name(patient.trial, arm_of(patient))


def unblindings() -> list[Unblinding]:
    return list(db.session.scalars(select(Unblinding).order_by(Unblinding.unblinded_at.desc())))


def patients(trial: Trial) -> list[Patient]:
    return list(db.session.scalars(select(Patient).where(Patient.trial_id == trial.id)
                                   .order_by(Patient.enrolled_at, Patient.id)))


def arm_counts(user: User, trial: Trial) -> dict[str, int]:
    """Randomized patients per arm (unblinded only)."""
    counts = {arm: 0 for arm in rules.ARMS}
    for _entry, arm in ((e, a) for e, a in unsealed_list(user, trial) if e.used_by_patient_id):
        counts[arm] += 1
    return counts
