"""Services for donors, cords, batches, process steps, passages, reagents and deviations.

Services are the only writers: each checks every rule, changes state inside one
``unit_of_work`` (which audits and commits once) and raises ``RuleViolation`` with every reason.
Field-level problems travel on ``error.problems`` as ``(field, message)`` pairs so forms can show
each beside its field. Read functions at the end (``open_deviations``, ``unverified_entries``,
``donor_decision``) are the API the release and custody features use."""
from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal
from typing import Any, Iterable, Iterator

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import func, or_, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import unit_of_work
from labsys.auth.models import SignatureMeaning, User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches import rules
from labsys.batches.models import (Batch, Cord, CordStatus, DeliveryType, Deviation, DeviationStatus, Donor,
                                   Inspection, Passage, ProcessStep, Reagent, StepReagent, StepType, TissueMethod)
from labsys.batches.rules import Eligibility, Marker, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.batches.states import BatchStatus, check_batch_transition
from labsys.db import utcnow
from labsys.documents.isbt import donation_identifier, mod37_2_check
from labsys.errors import ConcurrentChange, Forbidden, NotFound, RuleViolation
from labsys.extensions import db


# ---------------------------------------------------------------- helpers
def refuse(message: str, problems: Iterable[tuple[str, str]]) -> RuleViolation:
    """A RuleViolation carrying every field problem (``error.problems``) and its messages."""
    problems = list(problems)
    error = RuleViolation(message, [text for _field, text in problems],
                          field=problems[0][0] if problems else None)
    error.problems = problems  # type: ignore[attr-defined]
    return error


def require_role(user: User, *roles: Role) -> None:
    if not user.has_role(*roles):
        raise Forbidden(_("Your role does not allow this action."))


@contextlib.contextmanager
def work(user: User, action: str, reason: str | None = None, reason_required: bool = False) -> Iterator[Any]:
    """``unit_of_work`` for a user, turning a lost race on a versioned row into ConcurrentChange."""
    try:
        with unit_of_work(actor_of(user), action, reason, reason_required=reason_required) as session:
            yield session
    except StaleDataError:
        raise ConcurrentChange(_("Someone else changed this record at the same time. Reload and try again."))


def load(*records: Any) -> None:
    """Load a record's expired columns before changing it, so the audit entry gets the old values.

    ``unit_of_work`` starts a fresh write transaction, which expires everything read before it;
    assigning to an expired attribute would otherwise record no previous value."""
    for record in records:
        expired = sa_inspect(record).expired_attributes
        if expired:
            getattr(record, next(iter(expired)))


def setting(name: str) -> Any:
    return current_app.config[name]


def get_or_404(model: type, record_id: int) -> Any:
    record = db.session.get(model, record_id)
    if record is None:
        raise NotFound(_("There is no such record."))
    return record


# ---------------------------------------------------------------- donors
def markers_of(donor: Donor) -> dict[Marker, MarkerResult]:
    return {marker: MarkerResult(getattr(donor, marker.value)) for marker in Marker}


def donor_decision(donor: Donor, collection_date: dt.date | None = None) -> rules.EligibilityDecision:
    """What the markers say now (the stored ``donor.eligibility`` is what QA signed)."""
    if collection_date is None and donor.cords:
        collection_date = donor.cords[0].collected_at.date()
    return rules.donor_eligibility(donor.consent_date, ScreeningOutcome(donor.screening_outcome), markers_of(donor),
                                   donor.specimen_date, collection_date, setting("DONOR_SPECIMEN_WINDOW_DAYS"))


def _donor_problems(code: str | None, consent_date: dt.date | None, specimen_date: dt.date | None,
                    today: dt.date) -> list[tuple[str, str]]:
    problems = []
    if code is not None and not code.strip():
        problems.append(("code", _("Enter the coded donor ID.")))
    if consent_date and consent_date > today:
        problems.append(("consent_date", _("The date is in the future.")))
    if specimen_date and specimen_date > today:
        problems.append(("specimen_date", _("The date is in the future.")))
    return problems


def register_donor(user: User, code: str, consent_date: dt.date | None, screening_outcome: ScreeningOutcome | str,
                   specimen_date: dt.date | None, markers: dict[Marker | str, MarkerResult | str]) -> Donor:
    """Register a birth mother by coded ID (never a name) with her screening and markers."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    code = code.strip().upper()
    problems = _donor_problems(code, consent_date, specimen_date, dt.date.today())
    if db.session.scalar(select(Donor.id).where(Donor.code == code)):
        problems.append(("code", _("Donor %(code)s is already registered.", code=code)))
    if problems:
        raise refuse(_("The donor was not registered."), problems)
    with work(user, "donor.register"):
        donor = Donor(code=code, consent_date=consent_date, screening_outcome=ScreeningOutcome(screening_outcome),
                      specimen_date=specimen_date, created_by_id=user.id, eligibility=Eligibility.PENDING)
        for marker, result in markers.items():
            setattr(donor, Marker(marker).value, MarkerResult(result))
        db.session.add(donor)
    return donor


def update_donor(user: User, donor: Donor, reason: str | None, consent_date: dt.date | None,
                 screening_outcome: ScreeningOutcome | str, specimen_date: dt.date | None,
                 markers: dict[Marker | str, MarkerResult | str]) -> Donor:
    """Enter later results or correct a donor. Changing a signed determination needs a reason and
    returns the donor to pending until QA determines eligibility again."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    problems = _donor_problems(None, consent_date, specimen_date, dt.date.today())
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    determined = donor.eligibility != Eligibility.PENDING
    if any(c.batch is not None for c in donor.cords) and determined:
        raise refuse(_("Nothing was saved."), [("reason", _(
            "A batch was started on this determination; raise a deviation instead of changing it."))])
    with work(user, "donor.update", reason, reason_required=determined) as _session:
        load(donor)
        donor.consent_date = consent_date
        donor.screening_outcome = ScreeningOutcome(screening_outcome)
        donor.specimen_date = specimen_date
        for marker, result in markers.items():
            setattr(donor, Marker(marker).value, MarkerResult(result))
        if determined and db.session.is_modified(donor):
            donor.eligibility = Eligibility.PENDING
            donor.eligibility_determined_at = None
            donor.eligibility_determined_by_id = None
    return donor


def determine_eligibility(user: User, donor: Donor, check: SignatureCheck) -> Donor:
    """QA signs the eligibility computed from the markers (eligible or ineligible); a pending
    outcome cannot be signed."""
    require_role(user, Role.QA)
    if donor.eligibility != Eligibility.PENDING:
        raise RuleViolation(_("Eligibility was already determined."))
    decision = donor_decision(donor)
    if decision.outcome == Eligibility.PENDING:
        raise RuleViolation(_("Eligibility cannot be determined yet."), decision.reasons)
    with work(user, "donor.determine_eligibility") as session, session.no_autoflush:
        load(donor)
        if donor.eligibility != Eligibility.PENDING:
            raise RuleViolation(_("Eligibility was already determined."))
        donor.eligibility_determined_by_id = user.id
        donor.eligibility_determined_at = utcnow()
        donor.eligibility = decision.outcome
        sign(check, donor)
    return donor


# ---------------------------------------------------------------- cords
def receive_cord(user: User, donor: Donor, collected_at: dt.datetime, received_at: dt.datetime,
                 transport_temperature_c: Decimal, weight_g: Decimal, inspection: Inspection | str,
                 inspection_note: str | None, delivery_type: DeliveryType | str, gestational_age_weeks: int,
                 accept_under_deviation: bool = False, deviation_description: str | None = None) -> Cord:
    """Record a cord's receipt. Out of time or temperature limits it is refused, unless accepted
    under a deviation (raised here, closed later by QA; an open deviation blocks release)."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    hard, soft = rules.cord_receipt_problems(
        collected_at, received_at, transport_temperature_c, utcnow(), setting("CORD_MAX_HOURS_TO_RECEIPT"),
        setting("CORD_TRANSPORT_MIN_C"), setting("CORD_TRANSPORT_MAX_C"))
    if weight_g is None or weight_g <= 0:
        hard.append(("weight_g", _("The weight must be positive.")))
    if not 20 <= gestational_age_weeks <= 45:
        hard.append(("gestational_age_weeks", _("Gestational age must be 20 to 45 weeks.")))
    if donor.specimen_date and not rules.specimen_within_window(
            donor.specimen_date, collected_at.date(), setting("DONOR_SPECIMEN_WINDOW_DAYS")):
        hard.append(("collected_at", _("The donor's specimen (%(date)s) is not within ±%(n)d days of collection.",
                                       date=donor.specimen_date.isoformat(), n=setting("DONOR_SPECIMEN_WINDOW_DAYS"))))
    if Inspection(inspection) == Inspection.DOES_NOT_CONFORM:
        soft.append(("inspection", _("The visual inspection does not conform.")))
    if soft and accept_under_deviation and not (deviation_description and deviation_description.strip()):
        hard.append(("deviation_description", _("Describe the deviation to accept this cord.")))
    if hard or (soft and not accept_under_deviation):
        raise refuse(_("The cord was refused."), hard + soft)
    with work(user, "cord.receive"):
        cord = Cord(donor=donor, collected_at=collected_at, received_at=received_at,
                    transport_temperature_c=Decimal(transport_temperature_c), weight_g=Decimal(weight_g),
                    inspection=Inspection(inspection), inspection_note=(inspection_note or "").strip() or None,
                    delivery_type=DeliveryType(delivery_type), gestational_age_weeks=gestational_age_weeks,
                    status=CordStatus.ACCEPTED_UNDER_DEVIATION if soft else CordStatus.ACCEPTED,
                    received_by_id=user.id)
        db.session.add(cord)
        if soft:
            db.session.flush()
            text = deviation_description.strip() + "\n\n" + "\n".join(f"- {m}" for _f, m in soft)  # type: ignore[union-attr]
            _new_deviation(user, None, cord, text)
    return cord


# ---------------------------------------------------------------- batches
def start_batch(user: User, cord: Cord) -> Batch:
    """Open the batch of an eligible donor's cord with the next donation identifier."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    reasons = []
    donor = cord.donor
    if donor.eligibility != Eligibility.ELIGIBLE:
        reasons.append(_("Donor %(code)s is not eligible (%(state)s).", code=donor.code,
                         state=str(rules.ELIGIBILITY_LABELS[Eligibility(donor.eligibility)]).lower()))
    if cord.batch is not None:
        reasons.append(_("This cord already has batch %(id)s.", id=cord.batch.identifier))
    if donor.specimen_date and not rules.specimen_within_window(
            donor.specimen_date, cord.collected_at.date(), setting("DONOR_SPECIMEN_WINDOW_DAYS")):
        reasons.append(_("The donor's specimen is not within ±%(n)d days of this cord's collection.",
                         n=setting("DONOR_SPECIMEN_WINDOW_DAYS")))
    if reasons:
        raise RuleViolation(_("The batch cannot start."), reasons)
    facility = setting("FACILITY_CODE")
    year = utcnow().year % 100
    with work(user, "batch.start"):
        sequence = (db.session.scalar(select(func.max(Batch.sequence)).where(
            Batch.facility_code == facility, Batch.year == year)) or 0) + 1
        identifier = donation_identifier(facility, year, sequence)
        batch = Batch(identifier=identifier, check_character=mod37_2_check(identifier), facility_code=facility,
                      year=year, sequence=sequence, cord=cord, status=BatchStatus.IN_PROCESS,
                      started_at=utcnow(), started_by_id=user.id)
        db.session.add(batch)
    return batch


def apply_batch_transition(batch: Batch, new_status: BatchStatus) -> None:
    """Change a batch's status inside the caller's unit of work (the table refuses anything else)."""
    load(batch)
    check_batch_transition(BatchStatus(batch.status), BatchStatus(new_status))
    batch.status = BatchStatus(new_status)


def transition_batch(user: User, batch: Batch, new_status: BatchStatus | str, reason: str | None = None) -> Batch:
    with work(user, f"batch.{BatchStatus(new_status).value}", reason):
        apply_batch_transition(batch, BatchStatus(new_status))
    return batch


def find_batch(identifier: str) -> Batch | None:
    return db.session.scalar(select(Batch).where(Batch.identifier == identifier.strip().upper()))


def _require_in_process(batch: Batch) -> None:
    if batch.status != BatchStatus.IN_PROCESS:
        raise RuleViolation(_("Batch %(id)s is no longer in process.", id=batch.identifier),
                            [_("Its status is %(s)s.", s=BatchStatus(batch.status).value)])


def _reagents_for(reagent_ids: Iterable[int], use_date: dt.date) -> tuple[list[Reagent], list[tuple[str, str]]]:
    reagents, problems = [], []
    for reagent_id in dict.fromkeys(reagent_ids):
        reagent = db.session.get(Reagent, reagent_id)
        if reagent is None:
            problems.append(("reagent_ids", _("Unknown reagent lot (%(id)s).", id=reagent_id)))
            continue
        problems += [("reagent_ids", m) for m in rules.reagent_use_problems(
            reagent.item, reagent.lot, ReagentStatus(reagent.status), reagent.expiry_date, use_date)]
        reagents.append(reagent)
    return reagents, problems


def _step_problems(batch: Batch, started_at: dt.datetime, ended_at: dt.datetime | None,
                   equipment: str | None) -> list[tuple[str, str]]:
    problems = rules.time_order_problems(started_at, ended_at, utcnow(), batch.cord.received_at)
    if not (equipment or "").strip():
        problems.append(("equipment", _("Name the equipment used (ID).")))
    return problems


def _add_step(user: User, batch: Batch, step_type: StepType, started_at: dt.datetime, ended_at: dt.datetime | None,
              equipment: str, reagents: list[Reagent], method: TissueMethod | None = None,
              notes: str | None = None) -> ProcessStep:
    step = ProcessStep(batch=batch, step_type=step_type, method=method, operator_id=user.id, started_at=started_at,
                       ended_at=ended_at, equipment=equipment.strip(), notes=(notes or "").strip() or None)
    db.session.add(step)
    for reagent in reagents:
        db.session.add(StepReagent(step=step, reagent=reagent))
    return step


def record_step(user: User, batch: Batch, step_type: StepType | str, started_at: dt.datetime,
                ended_at: dt.datetime | None, equipment: str, reagent_ids: Iterable[int] = (),
                method: TissueMethod | str | None = None, notes: str | None = None) -> ProcessStep:
    """Log tissue processing, harvest or formulation with operator, times, equipment and the
    reagent lots used (each must be released and in date on the day of use). Passages go through
    ``record_passage`` and fill through ``fill_batch``."""
    require_role(user, Role.TECHNICIAN)
    step_type = StepType(step_type)
    _require_in_process(batch)
    problems = _step_problems(batch, started_at, ended_at, equipment)
    if step_type in (StepType.P0, StepType.PASSAGE, StepType.FILL):
        problems.append(("step_type", _("Record passages and fill with their own forms.")))
    existing = {s.step_type for s in batch.steps}
    if step_type == StepType.TISSUE_PROCESSING:
        if method is None:
            problems.append(("method", _("Choose explant or enzymatic.")))
        if StepType.TISSUE_PROCESSING in existing:
            problems.append(("step_type", _("Tissue processing is already recorded.")))
    elif not batch.passages:
        problems.append(("step_type", _("Harvest and formulation come after P0.")))
    reagents, reagent_problems = _reagents_for(reagent_ids, started_at.date())
    problems += reagent_problems
    if problems:
        raise refuse(_("The step was not recorded."), problems)
    with work(user, f"batch.step.{step_type.value}"):
        step = _add_step(user, batch, step_type, started_at, ended_at, equipment, reagents,
                         TissueMethod(method) if step_type == StepType.TISSUE_PROCESSING and method else None, notes)
    return step


def record_passage(user: User, batch: Batch, passage_number: int, started_at: dt.datetime,
                   ended_at: dt.datetime | None, equipment: str, seeded_viable_cells: int | None,
                   harvested_viable_cells: int, viability_percent: Decimal, confluence_percent: Decimal | None,
                   flask_count: int, reagent_ids: Iterable[int] = (), notes: str | None = None) -> Passage:
    """Record P0 or a passage: counts, viability, confluence, flasks; PD and cumulative PD are
    computed. Refused beyond the passage limit or out of sequence. Awaits second-person
    verification."""
    require_role(user, Role.TECHNICIAN)
    _require_in_process(batch)
    previous = [p.passage_number for p in batch.passages]
    problems = _step_problems(batch, started_at, ended_at, equipment)
    if StepType.TISSUE_PROCESSING not in {s.step_type for s in batch.steps}:
        problems.append(("passage_number", _("Record tissue processing before P0.")))
    problems += rules.passage_problems(passage_number, previous, setting("MAX_PASSAGE"), seeded_viable_cells,
                                       harvested_viable_cells, viability_percent, confluence_percent, flask_count,
                                       seeded_required=passage_number > 0)
    if batch.passages and started_at < max(p.step.started_at for p in batch.passages):
        problems.append(("started_at", _("The start is before the previous passage.")))
    reagents, reagent_problems = _reagents_for(reagent_ids, started_at.date())
    problems += reagent_problems
    if problems:
        raise refuse(_("The passage was not recorded."), problems)
    doublings = (rules.population_doublings(seeded_viable_cells, harvested_viable_cells)
                 if seeded_viable_cells else None)
    cumulative = rules.cumulative_population_doublings(
        [p.population_doublings for p in batch.passages] + [doublings])[-1]
    with work(user, "batch.passage.record"):
        step = _add_step(user, batch, StepType.P0 if passage_number == 0 else StepType.PASSAGE, started_at,
                         ended_at, equipment, reagents, notes=notes)
        passage = Passage(batch=batch, step=step, passage_number=passage_number,
                          seeded_viable_cells=seeded_viable_cells, harvested_viable_cells=harvested_viable_cells,
                          viability_percent=Decimal(viability_percent),
                          confluence_percent=None if confluence_percent is None else Decimal(confluence_percent),
                          flask_count=flask_count, population_doublings=doublings,
                          cumulative_population_doublings=cumulative, entered_by_id=user.id)
        db.session.add(passage)
    return passage


def verify_passage(user: User, passage: Passage, harvested_viable_cells: int | None,
                   viability_percent: Decimal | None, check: SignatureCheck) -> Passage:
    """Second-person verification (EU GMP Annex 11 §6): a different user re-enters the harvested
    count and viability from the source record; they must match, then the verifier signs."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    problems = []
    if passage.is_verified:
        raise RuleViolation(_("This passage is already verified."))
    if user.id == passage.entered_by_id:
        raise RuleViolation(_("A different person must verify the entry."),
                            [_("You entered these values yourself.")])
    if harvested_viable_cells != passage.harvested_viable_cells:
        problems.append(("harvested_viable_cells", _("Does not match the entered count. Check the source record.")))
    if viability_percent is None or Decimal(viability_percent) != passage.viability_percent:
        problems.append(("viability_percent", _("Does not match the entered viability. Check the source record.")))
    if problems:
        raise refuse(_("Verification failed: the values differ."), problems)
    with work(user, "batch.passage.verify"):
        load(passage)
        if passage.is_verified:  # re-read under the write lock: someone may have just verified it
            raise RuleViolation(_("This passage is already verified."))
        passage.verified_by_id = user.id
        passage.verified_at = utcnow()
        sign(check, passage)
    return passage


def correct_passage(user: User, passage: Passage, reason: str | None, seeded_viable_cells: int | None,
                    harvested_viable_cells: int, viability_percent: Decimal, confluence_percent: Decimal | None,
                    flask_count: int) -> Passage:
    """Correct a passage's values (a reason is required). PDs of this and later passages are
    recomputed and the entry needs verification again."""
    require_role(user, Role.TECHNICIAN)
    batch = passage.batch
    _require_in_process(batch)
    problems = [p for p in rules.passage_problems(
        passage.passage_number, [], setting("MAX_PASSAGE"), seeded_viable_cells, harvested_viable_cells,
        viability_percent, confluence_percent, flask_count, seeded_required=passage.passage_number > 0)
        if p[0] != "passage_number"]
    if problems:
        raise refuse(_("The correction was not saved."), problems)
    with work(user, "batch.passage.correct", reason, reason_required=True) as session, session.no_autoflush:
        load(passage, *batch.passages)
        passage.seeded_viable_cells = seeded_viable_cells
        passage.harvested_viable_cells = harvested_viable_cells
        passage.viability_percent = Decimal(viability_percent)
        passage.confluence_percent = None if confluence_percent is None else Decimal(confluence_percent)
        passage.flask_count = flask_count
        passage.population_doublings = (rules.population_doublings(seeded_viable_cells, harvested_viable_cells)
                                        if seeded_viable_cells else None)
        passage.entered_by_id = user.id
        passage.verified_by_id = None
        passage.verified_at = None
        cumulative = rules.cumulative_population_doublings([p.population_doublings for p in batch.passages])
        for other, value in zip(batch.passages, cumulative):
            other.cumulative_population_doublings = value
    return passage


# ---------------------------------------------------------------- reagents
def add_reagent(user: User, item: str, lot: str, supplier: str | None, expiry_date: dt.date,
                received_on: dt.date) -> Reagent:
    """Receive a reagent or material lot; it starts in quarantine until QA releases it."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    item, lot = item.strip(), lot.strip()
    problems = []
    if received_on > dt.date.today():
        problems.append(("received_on", _("The date is in the future.")))
    if expiry_date < received_on:
        problems.append(("expiry_date", _("The lot expired before it was received.")))
    if db.session.scalar(select(Reagent.id).where(Reagent.item == item, Reagent.lot == lot)):
        problems.append(("lot", _("This lot of %(item)s is already registered.", item=item)))
    if problems:
        raise refuse(_("The lot was not registered."), problems)
    with work(user, "reagent.receive"):
        reagent = Reagent(item=item, lot=lot, supplier=(supplier or "").strip() or None, expiry_date=expiry_date,
                          received_on=received_on, status=ReagentStatus.QUARANTINE)
        db.session.add(reagent)
    return reagent


def set_reagent_status(user: User, reagent: Reagent, status: ReagentStatus | str, reason: str | None = None) -> Reagent:
    """QA releases or rejects a reagent lot (a released lot can still be rejected later, with a reason)."""
    require_role(user, Role.QA)
    status = ReagentStatus(status)
    if status == ReagentStatus.QUARANTINE or reagent.status == ReagentStatus.REJECTED or reagent.status == status:
        raise RuleViolation(_("A lot goes from quarantine to released or rejected, or from released to rejected."))
    with work(user, f"reagent.{status.value}", reason, reason_required=reagent.status == ReagentStatus.RELEASED):
        load(reagent)
        reagent.status = status
        reagent.status_changed_by_id = user.id
    return reagent


def usable_reagents(on: dt.date | None = None) -> list[Reagent]:
    on = on or dt.date.today()
    return list(db.session.scalars(select(Reagent).where(
        Reagent.status == ReagentStatus.RELEASED, Reagent.expiry_date >= on).order_by(Reagent.item, Reagent.lot)))


# ---------------------------------------------------------------- deviations
def _new_deviation(user: User, batch: Batch | None, cord: Cord | None, description: str) -> Deviation:
    year = utcnow().year
    count = db.session.scalar(select(func.count(Deviation.id)).where(Deviation.number.like(f"DEV-{year}-%"))) or 0
    deviation = Deviation(number=f"DEV-{year}-{count + 1:04d}", batch=batch, cord=cord,
                          description=description.strip(), status=DeviationStatus.OPEN, raised_at=utcnow(),
                          raised_by_id=user.id)
    db.session.add(deviation)
    return deviation


def raise_deviation(user: User, description: str, batch: Batch | None = None, cord: Cord | None = None) -> Deviation:
    """Raise a deviation against a batch or a cord. It stays open until QA closes it."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    if not (description or "").strip():
        raise refuse(_("The deviation was not raised."), [("description", _("Describe what happened."))])
    if batch is None and cord is None:
        raise RuleViolation(_("A deviation belongs to a batch or a cord."))
    with work(user, "deviation.raise"):
        deviation = _new_deviation(user, batch, cord if batch is None else batch.cord, description)
    return deviation


def assess_deviation(user: User, deviation: Deviation, impact_assessment: str, capa: str) -> Deviation:
    """Record the impact assessment and CAPA of an open deviation."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    if deviation.status != DeviationStatus.OPEN:
        raise RuleViolation(_("The deviation is closed."))
    problems = []
    if not (impact_assessment or "").strip():
        problems.append(("impact_assessment", _("Assess the impact on the product.")))
    if not (capa or "").strip():
        problems.append(("capa", _("State the corrective and preventive action.")))
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    with work(user, "deviation.assess"):
        load(deviation)
        deviation.impact_assessment = impact_assessment.strip()
        deviation.capa = capa.strip()
    return deviation


def close_deviation(user: User, deviation: Deviation, check: SignatureCheck) -> Deviation:
    """QA closes an assessed deviation with an e-signature."""
    require_role(user, Role.QA)
    reasons = []
    if deviation.status != DeviationStatus.OPEN:
        reasons.append(_("The deviation is already closed."))
    if not deviation.impact_assessment:
        reasons.append(_("The impact assessment is missing."))
    if not deviation.capa:
        reasons.append(_("The CAPA is missing."))
    if reasons:
        raise RuleViolation(_("The deviation cannot be closed."), reasons)
    with work(user, "deviation.close") as session, session.no_autoflush:
        load(deviation)
        if deviation.status != DeviationStatus.OPEN:
            raise RuleViolation(_("The deviation is already closed."))
        deviation.closed_by_id = user.id
        deviation.closed_at = utcnow()
        deviation.status = DeviationStatus.CLOSED
        sign(check, deviation)
    return deviation


# ---------------------------------------------------------------- read API for release and custody
def deviations_of(batch: Batch) -> list[Deviation]:
    """Deviations raised against the batch or its cord."""
    return list(db.session.scalars(select(Deviation).where(
        or_(Deviation.batch_id == batch.id, Deviation.cord_id == batch.cord_id)).order_by(Deviation.raised_at)))


def open_deviations(batch: Batch) -> list[Deviation]:
    """Open deviations on the batch or its cord; any one blocks release."""
    return [d for d in deviations_of(batch) if d.status == DeviationStatus.OPEN]


def unverified_entries(batch: Batch) -> list[Passage]:
    """Critical manual entries (passage counts and viability) still awaiting second-person
    verification; fill is refused while any remains, and release reads this."""
    return [p for p in batch.passages if not p.is_verified]
