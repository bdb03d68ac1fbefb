"""The batches service layer: batches, process steps and passages here; donors and cords
(``donors``), reagents and deviations (``quality``), fill, vials and storage (``vials``).

Services are the only writers: each checks every rule, changes state inside one
``unit_of_work`` (which audits and commits once) and raises ``RuleViolation`` with every reason.
Field-level problems travel on ``error.problems`` as ``(field, message)`` pairs so forms can show
each beside its field. This module is also the facade other features read: it re-exports the
donor and quality functions (``open_deviations``, ``donor_decision`` …)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches import rules
from labsys.batches.common import get_or_404, refuse, require_role, setting, work  # noqa: F401
from labsys.batches.donors import (determine_eligibility, donor_decision, markers_of, receive_cord,  # noqa: F401
                                   register_donor, update_donor)
from labsys.batches.models import (Batch, Cord, Fill, Passage, ProcessStep, Reagent, StepReagent, StepType,
                                   TissueMethod)
from labsys.batches.quality import (add_reagent, assess_deviation, close_deviation, deviations_of,  # noqa: F401
                                    open_deviations, raise_deviation, set_reagent_status, usable_reagents)
from labsys.batches.rules import Eligibility, ReagentStatus
from labsys.batches.states import BatchStatus, check_batch_transition
from labsys.db import utcnow
from labsys.documents.isbt import donation_identifier, mod37_2_check
from labsys.errors import ConcurrentChange, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _


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
    for attempt in range(3):
        try:
            with work(user, "batch.start"):
                # Re-read under the write lock: the cord may just have got its batch.
                if db.session.scalar(select(Batch.id).where(Batch.cord_id == cord.id)) is not None:
                    raise RuleViolation(_("The batch cannot start."), [_("This cord already has a batch.")])
                sequence = (db.session.scalar(select(func.max(Batch.sequence)).where(
                    Batch.facility_code == facility, Batch.year == year)) or 0) + 1
                identifier = donation_identifier(facility, year, sequence)
                batch = Batch(identifier=identifier, check_character=mod37_2_check(identifier),
                              facility_code=facility, year=year, sequence=sequence, cord_id=cord.id,
                              status=BatchStatus.IN_PROCESS, started_at=utcnow(), started_by_id=user.id)
                db.session.add(batch)
            return batch
        except IntegrityError:
            # Two batches took the same sequence at once (PostgreSQL): take the next one.
            if attempt == 2:
                raise ConcurrentChange(_("Someone else changed this record at the same time. Reload and try again."))
    raise AssertionError("unreachable")


def apply_batch_transition(batch: Batch, new_status: BatchStatus) -> None:
    """Change a batch's status inside the caller's unit of work (the table refuses anything else)."""
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


# ---------------------------------------------------------------- read API for release and custody
def unverified_entries(batch: Batch) -> list[Passage | Fill]:
    """Critical manual entries (passage counts and viability, the fill's cells per vial and
    viability) still awaiting second-person verification. Fill is refused while a passage entry
    remains; release reads this list. Each entry has ``entry_label`` (P0, P1 … or Fill)."""
    entries: list[Passage | Fill] = [p for p in batch.passages if not p.is_verified]
    if batch.fill is not None and not batch.fill.is_verified:
        entries.append(batch.fill)
    return entries
