"""Infusion orders: the investigator orders the day-1 infusion, the pharmacist prepares cells
(MSC arm) or the matching placebo (control arm under masking), the investigator records the
administration. Dose and endotoxin are checked with the pure rules before anything is written.

Lots and vials are referred to by their identifiers only (the batches feature owns them)."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import unit_of_work
from labsys.auth.models import SignatureMeaning, User
from labsys.auth.roles import Permission
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.db import utcnow
from labsys.errors import ConcurrentChange, Forbidden, InvalidTransition, NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.trial import rules
from labsys.trial.masking import may_see_arm
from labsys.trial.models import ORDER_TRANSITIONS, InfusionOrder, OrderStatus, Patient
from labsys.trial.sealing import open_record, seal_record
from labsys.trial.services import arm_of
from labsys.timefmt import lab_today


CELLS = "cells"
PLACEBO = "placebo"


@dataclass(frozen=True)
class Preparation:
    """What the pharmacist prepared for an order. Stored sealed on the order: it reveals the arm."""

    kind: str  # "cells" or "placebo"
    lot_identifier: str  # the cell lot, or the placebo preparation's identifier
    vial_identifiers: list[str] = field(default_factory=list)
    viable_cells_per_vial: int | None = None
    post_thaw_viability: Decimal | None = None
    vials_needed: int | None = None
    delivered_cells: int | None = None
    dose_ratio: Decimal | None = None
    endotoxin_eu_per_ml: Decimal | None = None
    endotoxin_eu_per_kg: Decimal | None = None

    @property
    def is_cells(self) -> bool:
        return self.kind == CELLS


_DECIMALS = ("post_thaw_viability", "dose_ratio", "endotoxin_eu_per_ml", "endotoxin_eu_per_kg")


def seal_preparation(order: InfusionOrder, preparation: Preparation) -> str:
    """The sealed form of a preparation, for ``order.preparation_sealed``. Public so that the
    custody feature can record a preparation inside its own unit of work (dispensing)."""
    return seal_record("preparation", f"order:{order.id}", asdict(preparation))


def preparation_of(order: InfusionOrder) -> Preparation | None:
    """The unsealed preparation (unchecked: for services and the custody feature's rules)."""
    if order.preparation_sealed is None:
        return None
    data = open_record("preparation", f"order:{order.id}", order.preparation_sealed)
    for name in _DECIMALS:
        if data.get(name) is not None:
            data[name] = Decimal(data[name])
    return Preparation(**data)


def preparation_for(user: User, order: InfusionOrder) -> Preparation | None:
    """The preparation for users who may see arms; ``None`` for masked users."""
    return preparation_of(order) if may_see_arm(user, order.patient.trial) else None


def get_order(order_id: int) -> InfusionOrder:
    order = db.session.get(InfusionOrder, order_id)
    if order is None:
        raise NotFound(_("No such order."))
    return order


def move_order(order: InfusionOrder, target: OrderStatus) -> None:
    """Change an order's state by the transition table; call inside the caller's unit of work."""
    if target not in ORDER_TRANSITIONS[order.status]:
        raise InvalidTransition(_("An order that is %(a)s cannot become %(b)s.",
                                  a=order.status.value, b=target.value))
    order.status = target


def active_order(patient: Patient) -> InfusionOrder | None:
    return db.session.scalar(select(InfusionOrder).where(
        InfusionOrder.patient_id == patient.id, InfusionOrder.status != OrderStatus.CANCELLED)
        .order_by(InfusionOrder.id.desc()).limit(1))


def orders_for(patient: Patient) -> list[InfusionOrder]:
    return list(db.session.scalars(select(InfusionOrder).where(InfusionOrder.patient_id == patient.id)
                                   .order_by(InfusionOrder.id)))


def open_orders() -> list[InfusionOrder]:
    """Orders waiting for the pharmacy, oldest infusion date first."""
    return list(db.session.scalars(select(InfusionOrder).where(InfusionOrder.status == OrderStatus.OPEN)
                                   .order_by(InfusionOrder.infusion_date, InfusionOrder.id)))


def all_orders() -> list[InfusionOrder]:
    return list(db.session.scalars(select(InfusionOrder).order_by(InfusionOrder.id.desc())))


def order_infusion(user: User, patient: Patient, infusion_date: dt.date | None,
                   today: dt.date | None = None) -> InfusionOrder:
    """Order the single day-1 infusion for a randomized patient. The target dose is computed from
    the weight measured at enrolment. Without masking, routine-care patients get no infusion."""
    today = today or lab_today()
    trial = patient.trial
    reasons = []
    if not patient.randomized:
        reasons.append(_("The patient is not randomized yet."))
    elif not trial.masked and arm_of(patient) != rules.ARM_MSC:
        reasons.append(_("This patient is in the routine-care arm of an unmasked trial: no infusion is given."))
    if infusion_date is None:
        reasons.append(_("The infusion date is required."))
    elif infusion_date < today:
        reasons.append(_("The infusion date is in the past."))
    if patient.randomized and active_order(patient) is not None:
        reasons.append(_("The patient already has an infusion order (one infusion per patient)."))
    if reasons:
        raise RuleViolation(_("The order was not placed."), reasons, field="infusion_date")
    target = rules.target_cells(trial.dose_cells_per_kg, patient.weight_kg)
    with unit_of_work(actor_of(user), "trial.order"):
        # Check again inside the unit of work, which holds the writer lock: two orders placed at
        # the same moment both passed the check above, and the second sees the first here.
        if active_order(patient) is not None:
            raise RuleViolation(_("The order was not placed."),
                                [_("The patient already has an infusion order (one infusion per patient).")],
                                field="infusion_date")
        order = InfusionOrder(patient_id=patient.id, infusion_date=infusion_date, status=OrderStatus.OPEN,
                              ordered_by_id=user.id, ordered_at=utcnow(), weight_kg=patient.weight_kg,
                              target_cells=target)
        db.session.add(order)
    return order


def cancel_order(user: User, order: InfusionOrder, reason: str) -> InfusionOrder:
    try:
        with unit_of_work(actor_of(user), "trial.order_cancel", reason, reason_required=True):
            move_order(order, OrderStatus.CANCELLED)
    except StaleDataError:
        raise ConcurrentChange(_("The order changed meanwhile; reload it."))
    return order


def plan_cells(order: InfusionOrder, viable_cells_per_vial: int,
               post_thaw_viability: Decimal | None) -> tuple[int, int]:
    """(vials needed, cells delivered) for this order and vial strength."""
    trial = order.patient.trial
    viability = post_thaw_viability if trial.apply_post_thaw_viability else None
    vials = rules.vials_needed(order.target_cells, viable_cells_per_vial, viability)
    delivered = vials * rules.viable_cells_after_thaw(viable_cells_per_vial, viability)
    return vials, delivered


def prepare_cells(user: User, order: InfusionOrder, *, lot_identifier: str, vial_identifiers: list[str],
                  viable_cells_per_vial: int, post_thaw_viability: Decimal | None,
                  endotoxin_eu_per_ml: Decimal, volume_ml: Decimal, check: SignatureCheck) -> InfusionOrder:
    """Record the cell preparation for an MSC-arm patient, refusing a dose outside tolerance or
    above the cap, or endotoxin above the limit per kg; signed by the pharmacist (dispensed)."""
    if not user.can(Permission.UNBLINDED):
        raise Forbidden(_("Only the unblinded pharmacist prepares infusions."))
    patient = order.patient
    trial = patient.trial
    reasons = []
    if arm_of(patient) != rules.ARM_MSC:
        reasons.append(_("This patient is not in the cell-therapy arm: prepare the matching placebo."))
    if order.status != OrderStatus.OPEN:
        reasons.append(_("The order is not open."))
    if not lot_identifier.strip():
        reasons.append(_("The lot identifier is required."))
    try:
        vials, delivered = plan_cells(order, viable_cells_per_vial, post_thaw_viability)
    except ValueError as error:
        raise RuleViolation(_("The preparation was refused."), [str(error)])
    if len(vial_identifiers) != vials:
        reasons.append(_("%(n)d vials are needed for this dose; %(m)d were listed.", n=vials, m=len(vial_identifiers)))
    if len(set(vial_identifiers)) != len(vial_identifiers):
        reasons.append(_("A vial is listed twice."))
    dose = rules.check_dose(order.target_cells, delivered, trial.dose_tolerance, trial.max_dose_cells)
    reasons.extend(dose.reasons)
    eu_per_kg = rules.endotoxin_eu_per_kg(endotoxin_eu_per_ml, volume_ml, order.weight_kg)
    endotoxin = rules.check_endotoxin(eu_per_kg, trial.endotoxin_limit_eu_per_kg)
    if not endotoxin.passed:
        reasons.append(endotoxin.message)
    if reasons:
        raise RuleViolation(_("The preparation was refused."), reasons)
    try:
        with unit_of_work(actor_of(user), "trial.prepare"), db.session.no_autoflush:
            order.preparation_sealed = seal_preparation(order, Preparation(
                kind=CELLS, lot_identifier=lot_identifier.strip(), vial_identifiers=list(vial_identifiers),
                viable_cells_per_vial=viable_cells_per_vial, post_thaw_viability=post_thaw_viability,
                vials_needed=vials, delivered_cells=delivered, dose_ratio=dose.ratio,
                endotoxin_eu_per_ml=endotoxin_eu_per_ml, endotoxin_eu_per_kg=eu_per_kg))
            order.prepared_by_id, order.prepared_at = user.id, utcnow()
            order.volume_ml = volume_ml
            move_order(order, OrderStatus.PREPARED)  # last: the table checks a prepared order is complete
            sign(check, order)
    except StaleDataError:
        raise ConcurrentChange(_("The order changed meanwhile; reload it."))
    return order


def prepare_placebo(user: User, order: InfusionOrder, *, placebo_identifier: str, volume_ml: Decimal,
                    check: SignatureCheck) -> InfusionOrder:
    """Record the matching placebo for a control-arm patient under masking."""
    if not user.can(Permission.UNBLINDED):
        raise Forbidden(_("Only the unblinded pharmacist prepares infusions."))
    patient = order.patient
    reasons = []
    if not patient.trial.masked:
        reasons.append(_("The trial is not masked: no placebo is prepared."))
    if arm_of(patient) != rules.ARM_CONTROL:
        reasons.append(_("This patient is in the cell-therapy arm: prepare cells."))
    if order.status != OrderStatus.OPEN:
        reasons.append(_("The order is not open."))
    if not placebo_identifier.strip():
        reasons.append(_("The placebo preparation identifier is required."))
    if reasons:
        raise RuleViolation(_("The preparation was refused."), reasons)
    try:
        with unit_of_work(actor_of(user), "trial.prepare"), db.session.no_autoflush:
            order.preparation_sealed = seal_preparation(order, Preparation(
                kind=PLACEBO, lot_identifier=placebo_identifier.strip()))
            order.prepared_by_id, order.prepared_at = user.id, utcnow()
            order.volume_ml = volume_ml
            move_order(order, OrderStatus.PREPARED)
            sign(check, order)
    except StaleDataError:
        raise ConcurrentChange(_("The order changed meanwhile; reload it."))
    return order


def record_administration(user: User, order: InfusionOrder, administered_at: dt.datetime,
                          check: SignatureCheck) -> InfusionOrder:
    """The investigator records that the prepared infusion was given (signed: administered)."""
    if check.meaning != SignatureMeaning.ADMINISTERED:
        raise RuleViolation(_("The signature must mean 'administered'."))
    if administered_at > utcnow():
        raise RuleViolation(_("The administration time is in the future."), field="administered_at")
    try:
        with unit_of_work(actor_of(user), "trial.administer"), db.session.no_autoflush:
            order.administered_by_id, order.administered_at = user.id, administered_at
            move_order(order, OrderStatus.ADMINISTERED)
            sign(check, order)
    except StaleDataError:
        raise ConcurrentChange(_("The order changed meanwhile; reload it."))
    return order


def dispensing_dose_checks(patient: Patient, delivered_cells: int, endotoxin_eu_per_ml: Decimal,
                           volume_ml: Decimal) -> list[rules.RuleResult]:
    """The dose and endotoxin rules for a dispensing screen (chain of custody): the dose against
    the trial's target for the weight measured at enrolment, tolerance and cap, and endotoxin per
    kg. Every rule is returned so the caller can show every failure."""
    trial = patient.trial
    target = rules.target_cells(trial.dose_cells_per_kg, patient.weight_kg)
    dose = rules.check_dose(target, delivered_cells, trial.dose_tolerance, trial.max_dose_cells)
    eu_per_kg = rules.endotoxin_eu_per_kg(endotoxin_eu_per_ml, volume_ml, patient.weight_kg)
    return [*dose.results, rules.check_endotoxin(eu_per_kg, trial.endotoxin_limit_eu_per_kg)]


def administered_order(patient: Patient) -> InfusionOrder | None:
    return db.session.scalar(select(InfusionOrder).where(
        InfusionOrder.patient_id == patient.id, InfusionOrder.status == OrderStatus.ADMINISTERED).limit(1))
