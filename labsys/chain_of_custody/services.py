"""Chain-of-custody services: custody events, allocation, thaw, scans, dispensing checks and
dispensing. Services are the only writers; every state change of a vial is an append-only
custody event written in the same unit of work as the change."""
from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

from flask import current_app
from sqlalchemy import Select, bindparam, literal, or_, select, true
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import Actor, chain_head, record_event_now, unit_of_work
from labsys.auth.models import SignatureMeaning, User
from labsys.auth.roles import Permission, Role
from labsys.auth.services import actor_of, find_user, password_matches, register_failure
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches.models import Batch, Vial, VialEvent, vial_location
from labsys.batches.states import IN_STORAGE_STATES, BatchStatus, VialStatus, check_vial_transition
from labsys.batches.vials import custody_events, find_vial, record_custody_event
from labsys.chain_of_custody import rules
from labsys.chain_of_custody.models import (TEMPERATURE_EVENTS, WITNESSED_EVENTS, AllocationStatus,
                                            CustodyAllocation, CustodyEventType, Dispensing)
from labsys.db import count_of, read, utcnow
from labsys.documents import codec
from labsys.errors import ConcurrentChange, Forbidden, InvalidTransition, NotFound, RuleViolation, SignatureRefused
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.release.selection import counts_as_selected, is_selected_for_trial
from labsys.trial import rules as trial_rules
from labsys.trial.models import InfusionOrder, OrderStatus, Patient
from labsys.trial.services import (DispensingPatient, arm_of, dispensing_patient, dispensing_patient_of,
                                   dispensing_patient_statement, find_patient)
from labsys.timefmt import lab_today

KIT_PATTERN = re.compile(r"^(?P<study>[0-9A-Z][0-9A-Z-]*)-(?P<kit>K-[0-9]{6})$")
MAX_VIALS_PER_SCAN = 50


def hold_minutes() -> int:
    return int(current_app.config.get("THAW_HOLD_MINUTES", 60))


def require_role(user: User, *roles: Role) -> None:
    if not any(user.has_role(role) for role in roles):
        raise Forbidden(_("Your role may not do this."))


# ---------------------------------------------------------------- custody events
def custody_event(actor: Actor, vial: Vial, event_type: CustodyEventType | str, new_status: VialStatus | None = None,
                  *, witness: User | None = None, temperature_c: Decimal | None = None,
                  from_location: str | None = None, to_location: str | None = None, note: str | None = None,
                  order: InfusionOrder | None = None, at: dt.datetime | None = None) -> VialEvent:
    """Append one custody event and, when ``new_status`` is given, move the vial there in the
    same flush. Must run inside the caller's unit of work. The vial UPDATE is conditional on the
    vial's version, so two people acting on the same vial at once cannot both succeed."""
    event_type = CustodyEventType(event_type)
    if event_type in WITNESSED_EVENTS and witness is None:
        raise RuleViolation(_("A %(e)s event needs a witness.", e=event_type.value))
    if witness is not None and witness.id == actor.user_id:
        raise RuleViolation(_("The witness must be a different person."))
    if temperature_c is not None and event_type not in TEMPERATURE_EVENTS:
        raise RuleViolation(_("No temperature is recorded for a %(e)s event.", e=event_type.value))
    before = vial.location
    if new_status is not None:
        new_status = VialStatus(new_status)
        check_vial_transition(VialStatus(vial.status), new_status)
        vial.status = new_status
        if new_status not in IN_STORAGE_STATES and vial.box_id is not None:
            vial.box_id = vial.row = vial.column = None
            vial.box = None
    order_id = order.id if order is not None else None
    witness_id, witness_name = (witness.id, witness.full_name) if witness is not None else (None, None)
    with db.session.no_autoflush:  # the event is complete before it is flushed (append-only)
        event = record_custody_event(actor, vial, event_type.value, from_location=from_location or before,
                                     to_location=to_location if to_location is not None else vial.location, note=note)
        if at is not None:
            event.at = at
        event.witness_id, event.witness_name = witness_id, witness_name
        event.temperature_c = temperature_c
        event.order_id = order_id
    return event


def timeline(vial: Vial) -> list[VialEvent]:
    return custody_events(vial)


def _last_thaw(vial_id) -> Select:
    """When the vial was last thawed (``vial_id`` a value, or ``Vial.id`` inside a larger query)."""
    return (select(VialEvent.at).where(VialEvent.vial_id == vial_id,
                                       VialEvent.event_type == CustodyEventType.THAWED.value)
            .order_by(VialEvent.at.desc(), VialEvent.id.desc()).limit(1))


def thawed_at(vial: Vial) -> dt.datetime | None:
    return db.session.scalar(_last_thaw(vial.id))


def use_by(vial: Vial) -> dt.datetime | None:
    at = thawed_at(vial)
    return None if at is None else at + dt.timedelta(minutes=hold_minutes())


def _stale(message: str):
    return ConcurrentChange(message)


# ---------------------------------------------------------------- allocation
def active_allocations(order: InfusionOrder) -> list[CustodyAllocation]:
    return list(db.session.scalars(select(CustodyAllocation).where(
        CustodyAllocation.order_id == order.id, CustodyAllocation.status == AllocationStatus.ACTIVE)
        .order_by(CustodyAllocation.id)))


def allocations_of(order: InfusionOrder) -> list[CustodyAllocation]:
    return list(db.session.scalars(select(CustodyAllocation).where(CustodyAllocation.order_id == order.id)
                                   .order_by(CustodyAllocation.id)))


def _live_allocation(vial_id) -> Select:
    """The vial's active or dispensed allocation (``vial_id`` a value, or ``Vial.id``)."""
    # Two equalities, not IN (...): an IN list is an "expanding" parameter, which makes every
    # execution re-render the statement's SQL (≈ 50 µs on the scan path).
    return (select(CustodyAllocation).where(
        CustodyAllocation.vial_id == vial_id,
        or_(CustodyAllocation.status == AllocationStatus.ACTIVE, CustodyAllocation.status == AllocationStatus.DISPENSED))
        .order_by(CustodyAllocation.id.desc()).limit(1))


def allocation_of_vial(vial: Vial) -> CustodyAllocation | None:
    return db.session.scalar(_live_allocation(vial.id))


def _current_endotoxin(batch_id) -> Select:
    """The lot's current, entered endotoxin result in EU/mL (the release feature's QC results)."""
    from labsys.release.models import QCResult

    return select(QCResult.numeric_value).where(
        QCResult.batch_id == batch_id, QCResult.test_code == "ENDOTOXIN",
        QCResult.superseded_by_id.is_(None), QCResult.pending.is_(False)).limit(1)


def _endotoxin_of(batch: Batch) -> Decimal | None:
    value = db.session.scalar(_current_endotoxin(batch.id))
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class VialRow:
    """A vial as a scan shows it, read as plain values (not an ORM record): the scan API and the
    dispense check only read; the services that then write load the record itself."""
    id: int
    identifier: str
    status: VialStatus
    lot_identifier: str
    lot_status: BatchStatus
    viable_cells: int
    volume_ml: Decimal
    expiry_date: dt.date
    location: str | None = None


@functools.cache
def _vial_facts_statement(with_place: bool, many: bool = False) -> Select:
    """Built once per process (statements are immutable; building one costs more than running
    it). ``many``: the vials of a list of identifiers (a dispensing check's scans) at once."""
    from labsys.batches.models import Box, Rack, Tank
    from labsys.release.models import TrialSelection

    columns = [Vial.id, Vial.identifier, Vial.status, Batch.identifier, Batch.status, Vial.viable_cells,
               Vial.volume_ml, Vial.expiry_date,
               _live_allocation(Vial.id).with_only_columns(CustodyAllocation.kit_number).scalar_subquery(),
               _last_thaw(Vial.id).scalar_subquery(),
               select(TrialSelection.id).where(TrialSelection.batch_id == Vial.batch_id).exists(),
               _current_endotoxin(Vial.batch_id).scalar_subquery()]
    statement = select(*columns).join(Batch, Batch.id == Vial.batch_id)
    if with_place:
        statement = (statement.add_columns(Tank.code, Rack.code, Box.code, Vial.row, Vial.column)
                     .outerjoin(Box, Box.id == Vial.box_id).outerjoin(Rack, Rack.id == Box.rack_id)
                     .outerjoin(Tank, Tank.id == Rack.tank_id))
    if many:
        return statement.where(Vial.identifier.in_(bindparam("identifiers", expanding=True)))
    return statement.where(Vial.identifier == bindparam("identifier"))


@dataclass(frozen=True)
class VialFacts:
    """What a scan needs to know about a vial, read in one statement (the scanner and dispense
    check paths): the vial with its lot (and storage place when asked), the kit of its live
    allocation, its last thaw, whether QA selected its lot, and the lot's current endotoxin."""
    vial: VialRow
    allocated_kit: str | None
    thawed_at: dt.datetime | None
    lot_has_selection: bool
    endotoxin_eu_per_ml: Decimal | None

    @property
    def lot_selected(self) -> bool:
        """Selected for the trial and released (release.selection.is_selected_for_trial)."""
        return counts_as_selected(self.vial.lot_status, self.lot_has_selection)


def vial_facts(identifier: str, with_place: bool = False) -> VialFacts | None:
    row = read(_vial_facts_statement(with_place), {"identifier": identifier.strip().upper()}).first()
    return None if row is None else _facts_of(row, with_place)


@functools.cache
def _dispensing_scans_statement() -> tuple[Select, int]:
    """The wristband's patient and the scanned vials in one statement, for the dispense check
    (one round trip instead of two; every statement costs the worker ≈ 0.2 ms of CPU on
    PostgreSQL, a check's largest share). A one-row anchor outer-joined to both reads: one row
    per vial found, each carrying the patient's columns (NULL when no patient holds the kit),
    or one row with NULL vial columns when no vial is found. Returned with the number of the
    patient's columns (``trial.services.dispensing_patient_statement``); the vial's
    (``_vial_facts_statement``) follow them."""
    patient = dispensing_patient_statement().subquery("patient")
    vials = _vial_facts_statement(False, many=True).subquery("vials")
    anchor = select(literal(1).label("one")).subquery("anchor")
    statement = (select(*patient.c, *vials.c).select_from(anchor)
                 .outerjoin(patient, true()).outerjoin(vials, true()))
    return statement, len(patient.c)


def dispensing_scans(kit_number: str | None,
                     identifiers: Iterable[str]) -> tuple[DispensingPatient | None, dict[str, VialFacts]]:
    """The patient holding the kit (None when none does, or no kit was read) and the facts of the
    vials found, by identifier, in one statement: what ``dispensing_patient`` and ``vial_facts``
    answer for each."""
    wanted = sorted({identifier.strip().upper() for identifier in identifiers})
    if kit_number is None and not wanted:
        return None, {}
    statement, split = _dispensing_scans_statement()
    kit = kit_number.strip().upper() if kit_number is not None else None
    rows = read(statement, {"kit_number": kit, "identifiers": wanted}).all()
    patient = dispensing_patient_of(rows[0][:split]) if rows else None
    facts = (_facts_of(row[split:], False) for row in rows if row[split] is not None)
    return patient, {item.vial.identifier: item for item in facts}


def _facts_of(row, with_place: bool) -> VialFacts:
    (vial_id, vial_identifier, status, lot, lot_status, cells, volume, expiry, kit, thawed, selected,
     endotoxin) = row[:12]
    location = None
    if with_place and row[12] is not None:
        location = vial_location(*row[12:17])
    vial = VialRow(vial_id, vial_identifier, VialStatus(status), lot, BatchStatus(lot_status), cells, volume, expiry,
                   location)
    return VialFacts(vial, kit, thawed, bool(selected), None if endotoxin is None else Decimal(str(endotoxin)))


def lot_usable(batch: Batch) -> bool:
    return BatchStatus(batch.status) == BatchStatus.RELEASED and is_selected_for_trial(batch)


@dataclass
class Proposal:
    lot: Batch | None
    vials: list[Vial]
    vials_needed: int
    delivered_cells: int
    target_cells: int
    reasons: list[str]


def propose_vials(order: InfusionOrder, today: dt.date | None = None) -> Proposal:
    """The vials to allocate for an order: released, trial-selected lots only, first expiry first,
    the fewest vials that meet the dose (all from one lot, so the dose and lot release are one)."""
    today = today or lab_today()
    trial = order.patient.trial
    candidates = list(db.session.scalars(
        select(Vial).join(Batch, Vial.batch_id == Batch.id)
        .where(Vial.status == VialStatus.AVAILABLE, Batch.status == BatchStatus.RELEASED, Vial.expiry_date > today)
        .order_by(Vial.expiry_date, Vial.identifier)))
    by_lot: dict[int, list[Vial]] = {}
    for vial in candidates:
        if lot_usable(vial.batch):
            by_lot.setdefault(vial.batch_id, []).append(vial)
    reasons: list[str] = []
    options = []
    for lot_vials in by_lot.values():
        per_vial = lot_vials[0].viable_cells
        needed = trial_rules.vials_needed(order.target_cells, per_vial, None)
        delivered = needed * per_vial
        dose = trial_rules.check_dose(order.target_cells, delivered, trial.dose_tolerance, trial.max_dose_cells)
        if needed > len(lot_vials):
            reasons.append(_("Lot %(lot)s has %(n)d vials in stock; %(m)d are needed.",
                             lot=lot_vials[0].batch.identifier, n=len(lot_vials), m=needed))
            continue
        if not dose.passed:
            reasons.extend(dose.reasons)
            continue
        options.append((min(v.expiry_date for v in lot_vials[:needed]), needed, lot_vials[0].batch.identifier,
                        lot_vials[:needed], delivered))
    if not options:
        if not by_lot:
            reasons.append(_("No released lot selected for the trial has vials in stock."))
        return Proposal(None, [], 0, 0, order.target_cells, reasons)
    options.sort(key=lambda o: (o[0], o[1], o[2]))
    expiry, needed, _lot, vials, delivered = options[0]
    return Proposal(vials[0].batch, vials, needed, delivered, order.target_cells, [])


def _require_order_for_cells(user: User, order: InfusionOrder) -> Patient:
    require_role(user, Role.PHARMACIST)
    if not user.can(Permission.UNBLINDED):
        raise Forbidden(_("Only the unblinded pharmacist allocates vials."))
    patient = order.patient
    if order.status != OrderStatus.OPEN:
        raise InvalidTransition(_("The order is %(s)s, not open.", s=OrderStatus(order.status).value))
    if arm_of(patient) != trial_rules.ARM_MSC:
        raise RuleViolation(_("Kit %(kit)s is not assigned the cell product: no vials are allocated.",
                              kit=patient.kit_number))
    return patient


def allocate(user: User, order: InfusionOrder, vial_identifiers: Sequence[str]) -> list[CustodyAllocation]:
    """Allocate the confirmed vials to the order's kit: each vial must be available, from a
    released lot selected for the trial, in date; together they must meet the dose."""
    patient = _require_order_for_cells(user, order)
    if active_allocations(order):
        raise RuleViolation(_("Vials are already allocated to this order; cancel them first."))
    reasons = []
    vials: list[Vial] = []
    seen = set()
    for identifier in vial_identifiers:
        vial = find_vial(identifier or "")
        if vial is None:
            reasons.append(_("Vial %(v)s is not in labsys.", v=identifier))
            continue
        if vial.id in seen:
            reasons.append(_("Vial %(v)s is listed twice.", v=vial.identifier))
            continue
        seen.add(vial.id)
        if VialStatus(vial.status) != VialStatus.AVAILABLE:
            reasons.append(_("Vial %(v)s is %(s)s, not available.", v=vial.identifier, s=VialStatus(vial.status).value))
        if not lot_usable(vial.batch):
            reasons.append(_("Lot %(lot)s is not released and selected for the trial.", lot=vial.batch.identifier))
        if vial.expiry_date <= lab_today():
            reasons.append(_("Vial %(v)s is expired.", v=vial.identifier))
        vials.append(vial)
    if not vial_identifiers:
        reasons.append(_("Choose at least one vial."))
    if vials and not reasons:
        trial = patient.trial
        delivered = sum(v.viable_cells for v in vials)
        dose = trial_rules.check_dose(order.target_cells, delivered, trial.dose_tolerance, trial.max_dose_cells)
        reasons.extend(dose.reasons)
    if reasons:
        raise RuleViolation(_("Nothing was allocated."), reasons, field="vials")
    actor = actor_of(user)
    try:
        with unit_of_work(actor, "custody.allocate"):
            # Again under the write lock: another pharmacist may have just allocated other vials.
            if order.status != OrderStatus.OPEN:
                raise InvalidTransition(_("The order is %(s)s, not open.", s=OrderStatus(order.status).value))
            if active_allocations(order):
                raise RuleViolation(_("Vials are already allocated to this order; cancel them first."))
            allocations = []
            for vial in vials:
                custody_event(actor, vial, CustodyEventType.ALLOCATED, VialStatus.ALLOCATED, order=order,
                              note=f"allocated to kit {patient.kit_number}")
                allocation = CustodyAllocation(order_id=order.id, vial_id=vial.id, kit_number=patient.kit_number,
                                               status=AllocationStatus.ACTIVE, allocated_at=utcnow(),
                                               allocated_by_id=user.id)
                db.session.add(allocation)
                allocations.append(allocation)
    except StaleDataError:
        raise _stale(_("A vial changed meanwhile; nothing was allocated. Reload and try again."))
    return allocations


def cancel_allocation(user: User, order: InfusionOrder, reason: str) -> list[CustodyAllocation]:
    """Cancel the order's allocation: allocated vials go back to available (a custody event each).
    A thawed vial cannot go back to stock."""
    require_role(user, Role.PHARMACIST)
    allocations = active_allocations(order)
    if not allocations:
        raise RuleViolation(_("No vials are allocated to this order."))
    thawed = [a.vial.identifier for a in allocations if VialStatus(a.vial.status) != VialStatus.ALLOCATED]
    if thawed:
        raise RuleViolation(_("Thawed vials cannot go back to stock: %(v)s. Destroy them instead.",
                              v=", ".join(thawed)))
    actor = actor_of(user)
    try:
        with unit_of_work(actor, "custody.allocation_cancel", reason, reason_required=True):
            for allocation in allocations:
                custody_event(actor, allocation.vial, CustodyEventType.RETURNED, VialStatus.AVAILABLE, order=order,
                              note=reason.strip())
                allocation.status = AllocationStatus.CANCELLED
                allocation.ended_at, allocation.ended_by_id = utcnow(), user.id
    except StaleDataError:
        raise _stale(_("A vial changed meanwhile; reload and try again."))
    return allocations


# ---------------------------------------------------------------- thaw
def thaw(user: User, vial: Vial, temperature_c: Decimal | None = None, note: str | None = None) -> VialEvent:
    """Record the thaw of an allocated vial; its use-by is thaw time + the hold time."""
    require_role(user, Role.PHARMACIST)
    if VialStatus(vial.status) != VialStatus.ALLOCATED or allocation_of_vial(vial) is None:
        raise InvalidTransition(_("Only a vial allocated to a kit is thawed; %(v)s is %(s)s.",
                                  v=vial.identifier, s=VialStatus(vial.status).value))
    actor = actor_of(user)
    try:
        with unit_of_work(actor, "custody.thaw"):
            # Again under the write lock: the allocation may have been cancelled meanwhile.
            allocation = allocation_of_vial(vial)
            if VialStatus(vial.status) != VialStatus.ALLOCATED or allocation is None:
                raise InvalidTransition(_("Only a vial allocated to a kit is thawed; %(v)s is %(s)s.",
                                          v=vial.identifier, s=VialStatus(vial.status).value))
            order = db.session.get(InfusionOrder, allocation.order_id)
            event = custody_event(actor, vial, CustodyEventType.THAWED, VialStatus.THAWED,
                                  temperature_c=temperature_c, order=order, to_location="pharmacy",
                                  note=(note or "").strip() or None)
    except StaleDataError:
        raise _stale(_("The vial changed meanwhile; reload it."))
    return event


def parse_temperature(text: str | None) -> Decimal | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise RuleViolation(_("Enter the temperature as a number in °C."), field="temperature_c")
    if not value.is_finite() or not Decimal("-200") <= value <= Decimal("60"):
        raise RuleViolation(_("The temperature must be between -200 and 60 °C."), field="temperature_c")
    return value


# ---------------------------------------------------------------- scans
def patient_payload(patient: Patient) -> str:
    return codec.encode("patient", f"{patient.study_id}-{patient.kit_number}")


def vial_payload(vial: Vial) -> str:
    return codec.encode("vial", vial.identifier)


def dispensing_payload(dispensing: Dispensing) -> str:
    return codec.encode("certificate", dispensing.number)


def patient_from_identifier(identifier: str | None) -> Patient | None:
    match = KIT_PATTERN.match(identifier or "")
    if not match:
        return None
    patient = find_patient(kit_number=match.group("kit"))
    if patient is None or patient.study_id != match.group("study"):
        return None
    return patient


def order_for_patient(patient: Patient) -> InfusionOrder | None:
    from labsys.trial.orders import active_order

    return active_order(patient)


def scan_patient(payload: object) -> tuple[rules.ScannedPatient, DispensingPatient | None]:
    """The wristband scan and the patient it names (trial.services.DispensingPatient: plain
    values with the current order and the arm; ``db.session.get(Patient, found.id)`` for the
    record)."""
    refused, match = _read_wristband(payload)
    if refused is not None:
        return refused, None
    return _scanned_patient(match, dispensing_patient(match.group("kit")))


def _read_wristband(payload: object) -> tuple[rules.ScannedPatient | None, re.Match | None]:
    """The wristband code's study ID and kit number (a match of KIT_PATTERN), or the scan's
    verdict when the code names no patient: a code that does not verify, a code of another
    kind, or a patient code without a study ID and kit number."""
    verdict = codec.verify(payload)
    if not verdict.valid:
        return rules.ScannedPatient(False, verdict.reason), None
    if verdict.kind != "patient":
        return rules.ScannedPatient(False, _("this is a %(k)s code, not a wristband", k=verdict.kind)), None
    match = KIT_PATTERN.match(verdict.identifier or "")
    if match is None:
        return rules.ScannedPatient(True, found=False), None
    return None, match


def _scanned_patient(match: re.Match, patient: DispensingPatient | None
                     ) -> tuple[rules.ScannedPatient, DispensingPatient | None]:
    """The scan of a wristband whose kit number read as ``patient``: found only when the study
    ID on the band is the patient's too."""
    if patient is None or patient.study_id != match.group("study"):
        return rules.ScannedPatient(True, found=False), None
    weight = patient.order_weight_kg if patient.order_id is not None else patient.weight_kg
    return rules.ScannedPatient(True, found=True, study_id=patient.study_id, kit_number=patient.kit_number,
                                randomized=patient.randomized, arm=patient.arm, weight_kg=weight), patient


def scan_vial(payload: object, now: dt.datetime | None = None) -> tuple[rules.ScannedVial, VialRow | None]:
    """What a vial code resolves to, and the vial's values (``db.session.get(Vial, row.id)`` for
    the record, when a service goes on to change it)."""
    verdict = codec.verify(payload)
    facts = vial_facts(verdict.identifier) if verdict.valid and verdict.kind == "vial" else None
    return _scanned_vial(payload, verdict, facts)


def _scanned_vial(payload: object, verdict: codec.Verdict,
                  facts: VialFacts | None) -> tuple[rules.ScannedVial, VialRow | None]:
    text = payload if isinstance(payload, str) else ""
    if not verdict.valid:
        return rules.ScannedVial(text[:60], False, verdict.reason), None
    if verdict.kind != "vial":
        return rules.ScannedVial(text[:60], False, _("this is a %(k)s code, not a vial", k=verdict.kind),
                                 identifier=verdict.identifier), None
    if facts is None:
        return rules.ScannedVial(text, True, found=False, identifier=verdict.identifier), None
    vial = facts.vial
    expires = dt.datetime.combine(vial.expiry_date, dt.time(0, 0), tzinfo=dt.timezone.utc)
    return rules.ScannedVial(
        text, True, found=True, identifier=vial.identifier, status=vial.status.value,
        allocated_kit=facts.allocated_kit, lot_identifier=vial.lot_identifier,
        lot_status=vial.lot_status.value, lot_selected=facts.lot_has_selection and vial.lot_status in (
            BatchStatus.RELEASED, BatchStatus.RELEASED_PENDING),
        expires_at=expires, thawed_at=facts.thawed_at, viable_cells=vial.viable_cells, volume_ml=vial.volume_ml,
        endotoxin_eu_per_ml=facts.endotoxin_eu_per_ml), vial


def settings_for(patient: DispensingPatient | None) -> rules.DispenseSettings:
    if patient is None:
        return rules.DispenseSettings(hold_minutes=hold_minutes())
    return rules.DispenseSettings(dose_cells_per_kg=patient.dose_cells_per_kg, dose_tolerance=patient.dose_tolerance,
                                  max_cells=patient.max_dose_cells, hold_minutes=hold_minutes(),
                                  endotoxin_limit_eu_per_kg=patient.endotoxin_limit_eu_per_kg)


@dataclass
class CheckOutcome:
    checks: list[rules.Check]
    patient: DispensingPatient | None
    vials: list[VialRow]
    scanned_patient: rules.ScannedPatient
    scanned_vials: list[rules.ScannedVial]

    @property
    def ok(self) -> bool:
        return rules.all_passed(self.checks)

    def dose_summary(self) -> dict:
        target = next((c for c in self.checks if c.rule == "dose_within_tolerance"), None)
        return {"vials": len(self.vials), "delivered_cells": sum(v.viable_cells for v in self.vials),
                "target_cells": (trial_rules.target_cells(self.patient.dose_cells_per_kg,
                                                          self.scanned_patient.weight_kg)
                                 if self.patient is not None and self.scanned_patient.weight_kg else None),
                "message": target.message if target else None}


def evaluate(patient_code: object, vial_codes: Sequence[object], dispenser: User | None = None,
             witness: User | None = None, require_witness: bool = False,
             now: dt.datetime | None = None) -> CheckOutcome:
    """Every dispensing check for these scans; writes nothing."""
    now = now or utcnow()
    refused, wristband = _read_wristband(patient_code)
    codes = list(vial_codes)[:MAX_VIALS_PER_SCAN]
    verdicts = [codec.verify(code) for code in codes]
    found, facts = dispensing_scans(wristband.group("kit") if wristband else None,
                                    (v.identifier for v in verdicts if v.valid and v.kind == "vial"))
    scanned_patient, patient = (refused, None) if refused is not None else _scanned_patient(wristband, found)
    scanned, vials = [], []
    for code, verdict in zip(codes, verdicts):
        item, vial = _scanned_vial(code, verdict, facts.get(verdict.identifier) if verdict.valid else None)
        scanned.append(item)
        if vial is not None:
            vials.append(vial)
    checks = rules.dispensing_checks(scanned_patient, scanned, settings_for(patient), now,
                                     dispenser_id=dispenser.id if dispenser else None,
                                     witness_id=witness.id if witness else None, require_witness=require_witness)
    if patient is not None:
        has_order = patient.order_id is not None and patient.order_status == OrderStatus.OPEN
        checks.insert(min(3, len(checks)), rules.Check(
            "order_open", has_order,
            _("Kit %(kit)s has an open infusion order.", kit=patient.kit_number) if has_order else
            _("Kit %(kit)s has no open infusion order.", kit=patient.kit_number)))
    return CheckOutcome(checks, patient, vials, scanned_patient, scanned)


# ---------------------------------------------------------------- witness and dispensing
def authenticate_witness(current_user: User, username: str, password: str,
                         comment: str | None = None) -> SignatureCheck:
    """Re-authenticate the WITNESS (a second person at the same screen): their own user ID and
    password, not the signed-in user's. A wrong password counts toward the witness's lockout."""
    username = (username or "").strip().lower()
    witness = find_user(username) if username else None
    if witness is None:
        raise SignatureRefused(_("The witness signature was refused."), [_("Unknown witness user ID or wrong password.")])
    if witness.id == current_user.id:
        raise SignatureRefused(_("The witness signature was refused."),
                               [_("The witness must be a different person from the one dispensing.")])
    if not witness.can(Permission.SIGN):
        raise SignatureRefused(_("The witness signature was refused."), [_("The witness's role cannot sign.")])
    if not witness.may_act:
        raise SignatureRefused(_("The witness signature was refused."), [_("The witness's account cannot sign.")])
    if not password_matches(witness, password or ""):
        locked = register_failure(witness, "signature.failed")
        reasons = [_("Unknown witness user ID or wrong password.")]
        if locked:
            reasons.append(_("The witness's account is now locked after too many failed attempts."))
        raise SignatureRefused(_("The witness signature was refused."), reasons)
    return SignatureCheck(witness, SignatureMeaning.WITNESSED, comment)


def record_refusal(user: User, outcome: CheckOutcome, action: str = "custody.dispense_refused") -> None:
    failed = [c.as_dict() for c in outcome.checks if not c.passed]
    record_event_now(actor_of(user), action, "custody_dispensings", None,
                     {"kit_number": outcome.scanned_patient.kit_number,
                      "vials": [v.identifier for v in outcome.scanned_vials],
                      "failed": [{"rule": c["rule"], "message": c["message"]} for c in failed]})


def _next_number() -> str:
    year = utcnow().year
    count = db.session.scalar(count_of(Dispensing)) or 0
    return f"DSP-{year}-{count + 1:05d}"


def dispense(user: User, dispenser_check: SignatureCheck, witness_check: SignatureCheck, patient_code: object,
             vial_codes: Sequence[object], now: dt.datetime | None = None) -> Dispensing:
    """Dispense the scanned vials to the patient: every check must pass (else the refusal is
    audited and nothing is written). All vials move to dispensed in one unit of work; each vial
    UPDATE is conditional on its version, so a vial is never dispensed twice."""
    require_role(user, Role.PHARMACIST)
    if dispenser_check.signer.id != user.id or dispenser_check.meaning != SignatureMeaning.DISPENSED:
        raise RuleViolation(_("The pharmacist signs the dispensing (meaning: dispensed)."))
    if witness_check.meaning != SignatureMeaning.WITNESSED:
        raise RuleViolation(_("The witness signs with the meaning 'witnessed'."))
    outcome = evaluate(patient_code, vial_codes, user, witness_check.signer, require_witness=True, now=now)
    if not outcome.ok:
        record_refusal(user, outcome)
        raise RuleViolation(_("Not dispensed: a check failed."),
                            [c.message for c in outcome.checks if not c.passed], field="vials")
    patient = db.session.get(Patient, outcome.patient.id)
    order = order_for_patient(patient)
    actor = actor_of(user)
    witness = witness_check.signer
    try:
        with unit_of_work(actor, "custody.dispense"), db.session.no_autoflush:
            # The records, read again inside the writing transaction (the checks read values).
            vials = [db.session.get(Vial, row.id, populate_existing=True) for row in outcome.vials]
            moved = []
            for vial in vials:
                if VialStatus(vial.status) != VialStatus.THAWED:
                    raise ConcurrentChange(_("Vial %(v)s is %(s)s now; nothing was dispensed.",
                                             v=vial.identifier, s=VialStatus(vial.status).value))
                custody_event(actor, vial, CustodyEventType.DISPENSED, VialStatus.DISPENSED, witness=witness,
                              order=order, to_location=f"kit {patient.kit_number}",
                              note=f"dispensed to {patient.study_id} / {patient.kit_number}")
                moved.append(vial)
            for allocation in active_allocations(order):
                allocation.status = AllocationStatus.DISPENSED
                allocation.ended_at, allocation.ended_by_id = utcnow(), user.id
            db.session.flush()
            delivered = sum(v.viable_cells for v in moved)
            dispensing = Dispensing(
                number=_next_number(), order_id=order.id, patient_id=patient.id, study_id=patient.study_id,
                kit_number=patient.kit_number, dispensed_at=utcnow(), dispenser_id=user.id, witness_id=witness.id,
                vial_identifiers=",".join(v.identifier for v in moved), delivered_cells=delivered,
                target_cells=order.target_cells, weight_kg=order.weight_kg,
                checks_json=json.dumps([c.as_dict() for c in outcome.checks], ensure_ascii=False),
                chain_head_hash=chain_head(db.session))
            db.session.add(dispensing)
            _prepare_order(user, order, moved)
            db.session.flush()
            sign(dispenser_check, dispensing)
            sign(witness_check, dispensing)
    except StaleDataError:
        raise ConcurrentChange(_("A vial was dispensed or changed at the same moment; nothing was dispensed."))
    return dispensing


def _prepare_order(user: User, order: InfusionOrder, vials: Sequence[Vial]) -> None:
    """Record on the trial's order what was prepared (sealed, as the trial feature keeps it), and
    move it to prepared, inside the dispensing's unit of work."""
    from labsys.trial import orders as trial_orders

    lot = vials[0].batch
    per_vial = vials[0].viable_cells
    endotoxin = _endotoxin_of(lot)
    delivered = sum(v.viable_cells for v in vials)
    trial = order.patient.trial
    dose = trial_rules.check_dose(order.target_cells, delivered, trial.dose_tolerance, trial.max_dose_cells)
    volume = sum((v.volume_ml for v in vials), Decimal(0))
    eu_per_kg = (trial_rules.endotoxin_eu_per_kg(endotoxin, volume, order.weight_kg) if endotoxin is not None else None)
    order.preparation_sealed = trial_orders.seal_preparation(order, trial_orders.Preparation(
        kind=trial_orders.CELLS, lot_identifier=lot.identifier, vial_identifiers=[v.identifier for v in vials],
        viable_cells_per_vial=per_vial, post_thaw_viability=None, vials_needed=len(vials),
        delivered_cells=delivered, dose_ratio=dose.ratio, endotoxin_eu_per_ml=endotoxin,
        endotoxin_eu_per_kg=eu_per_kg))
    order.prepared_by_id, order.prepared_at = user.id, utcnow()
    order.volume_ml = volume
    trial_orders.move_order(order, OrderStatus.PREPARED)


def dispensing_of_order(order: InfusionOrder) -> Dispensing | None:
    return db.session.scalar(select(Dispensing).where(Dispensing.order_id == order.id))


def get_dispensing(dispensing_id: int) -> Dispensing:
    dispensing = db.session.get(Dispensing, dispensing_id)
    if dispensing is None:
        raise NotFound(_("No such dispensing."))
    return dispensing


def find_dispensing(number: str) -> Dispensing | None:
    return db.session.scalar(select(Dispensing).where(Dispensing.number == (number or "").strip().upper()))


def vials_of_dispensing(dispensing: Dispensing) -> list[Vial]:
    return [v for v in (find_vial(i) for i in dispensing.vial_list) if v is not None]


def dispensings() -> list[Dispensing]:
    return list(db.session.scalars(select(Dispensing).order_by(Dispensing.id.desc())))


def patients_of_vials(vials: Iterable[Vial]) -> dict[int, str]:
    """For the release feature's recall page: vial id → study ID it was dispensed to."""
    ids = [v.id for v in vials]
    if not ids:
        return {}
    rows = db.session.execute(select(CustodyAllocation.vial_id, CustodyAllocation.order_id).where(
        CustodyAllocation.vial_id.in_(ids), CustodyAllocation.status == AllocationStatus.DISPENSED)).all()
    found = {}
    for vial_id, order_id in rows:
        order = db.session.get(InfusionOrder, order_id)
        if order is not None:
            found[vial_id] = order.patient.study_id
    return found


def thawed_vials() -> list[Vial]:
    """Thawed vials waiting to be dispensed, oldest thaw first (the dispense page's countdowns)."""
    vials = list(db.session.scalars(select(Vial).where(Vial.status == VialStatus.THAWED).order_by(Vial.identifier)))
    return sorted(vials, key=lambda v: thawed_at(v) or utcnow())


ARM_REVEALING_RULES = ("patient_receives_product",)


def checks_of(dispensing: Dispensing, viewer: User | None = None) -> list[dict]:
    """The checks recorded at dispensing; for a viewer who may not see arms, the check naming
    the kit's treatment is left out."""
    from labsys.trial.masking import may_see_arm

    checks = list(json.loads(dispensing.checks_json))
    patient = db.session.get(Patient, dispensing.patient_id)
    if viewer is None or not may_see_arm(viewer, patient.trial):
        checks = [c for c in checks if c["rule"] not in ARM_REVEALING_RULES]
    return checks


# ---------------------------------------------------------------- administration
def administration_of(dispensing: Dispensing):
    from labsys.chain_of_custody.models import Administration

    return db.session.scalar(select(Administration).where(Administration.dispensing_id == dispensing.id))


def administer(user: User, dispensing: Dispensing, check: SignatureCheck, wristband_code: str | None,
               vial_codes: Sequence[str], infusion_start: dt.datetime | None, infusion_stop: dt.datetime | None,
               override_reason: str | None = None, now: dt.datetime | None = None):
    """Record the bedside administration: the wristband and every vial scanned (or an override
    reason when a scan is impossible; a scan that names another patient or vial is always
    refused), infusion start and stop, the investigator's signature (administered). The vials
    move to administered and the trial order to administered in one unit of work."""
    from labsys.chain_of_custody.models import Administration
    from labsys.trial import orders as trial_orders

    require_role(user, Role.INVESTIGATOR)
    if check.signer.id != user.id or check.meaning != SignatureMeaning.ADMINISTERED:
        raise RuleViolation(_("The administering investigator signs (meaning: administered)."))
    now = now or utcnow()
    override = (override_reason or "").strip() or None
    problems: list[tuple[str, str]] = []
    if administration_of(dispensing) is not None:
        raise InvalidTransition(_("This dispensing is already administered."))
    patient = db.session.get(Patient, dispensing.patient_id)
    wristband_ok = False
    if wristband_code and wristband_code.strip():
        scanned, found = scan_patient(wristband_code.strip())
        if found is None or found.id != patient.id:
            problems.append(("wristband", _("The wristband does not belong to kit %(kit)s: do not administer.",
                                            kit=dispensing.kit_number)))
        else:
            wristband_ok = True
    expected = set(dispensing.vial_list)
    seen = set()
    for code in [c for c in vial_codes if c and c.strip()]:
        item, vial = scan_vial(code.strip(), now)
        if vial is None or vial.identifier not in expected:
            problems.append(("vials", _("%(v)s is not a vial of dispensing %(n)s: do not administer.",
                                        v=item.identifier or _("unreadable code"), n=dispensing.number)))
        else:
            seen.add(vial.identifier)
    product_ok = seen == expected
    if not (wristband_ok and product_ok) and not override:
        missing = sorted(expected - seen)
        if not wristband_ok:
            problems.append(("override_reason", _("Scan the wristband or record why it cannot be scanned.")))
        if missing:
            problems.append(("override_reason", _("Not scanned: %(v)s. Scan them or record an override reason.",
                                                  v=", ".join(missing))))
    if infusion_start is None:
        problems.append(("infusion_start", _("Enter the infusion start time.")))
    if infusion_stop is None:
        problems.append(("infusion_stop", _("Enter the infusion stop time.")))
    if infusion_start and infusion_stop:
        if infusion_stop < infusion_start:
            problems.append(("infusion_stop", _("The infusion stops before it starts.")))
        if infusion_stop > now + dt.timedelta(minutes=1):
            problems.append(("infusion_stop", _("The infusion stop time is in the future.")))
        if infusion_start < dispensing.dispensed_at.replace(second=0, microsecond=0):
            problems.append(("infusion_start", _("The infusion starts before the product was dispensed.")))
    if problems:
        error = RuleViolation(_("The administration was not recorded."), [m for _f, m in problems],
                              field=problems[0][0])
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    actor = actor_of(user)
    order = db.session.get(InfusionOrder, dispensing.order_id)
    try:
        with unit_of_work(actor, "custody.administer", override), db.session.no_autoflush:
            for vial in vials_of_dispensing(dispensing):
                custody_event(actor, vial, CustodyEventType.ADMINISTERED, VialStatus.ADMINISTERED, order=order,
                              from_location=f"kit {dispensing.kit_number}", to_location="patient",
                              note=override)
            administration = Administration(dispensing_id=dispensing.id, administered_by_id=user.id,
                                            infusion_start=infusion_start, infusion_stop=infusion_stop,
                                            wristband_scanned=wristband_ok, product_scanned=product_ok,
                                            override_reason=override, recorded_at=utcnow())
            db.session.add(administration)
            if order is not None and OrderStatus(order.status) == OrderStatus.PREPARED:
                order.administered_by_id, order.administered_at = user.id, infusion_start
                trial_orders.move_order(order, OrderStatus.ADMINISTERED)
            db.session.flush()
            sign(check, administration)
    except StaleDataError:
        raise ConcurrentChange(_("The vials or the order changed meanwhile; reload and try again."))
    return administration
