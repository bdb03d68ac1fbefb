"""Reagent and material lots, and deviations (raised against a batch or a cord, closed by QA)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches.common import refuse, require_role, work
from labsys.batches.models import Batch, Cord, Deviation, DeviationStatus, Reagent
from labsys.batches.rules import ReagentStatus
from labsys.db import count_of, utcnow
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.timefmt import lab_today


# ---------------------------------------------------------------- reagents
def add_reagent(user: User, item: str, lot: str, supplier: str | None, expiry_date: dt.date,
                received_on: dt.date) -> Reagent:
    """Receive a reagent or material lot; it starts in quarantine until QA releases it."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    item, lot = item.strip(), lot.strip()
    problems = []
    if received_on > lab_today():
        problems.append(("received_on", _("The date is in the future.")))
    if expiry_date < received_on:
        problems.append(("expiry_date", _("The lot expired before it was received.")))
    if db.session.scalar(select(Reagent.id).where(Reagent.item == item, Reagent.lot == lot)):
        problems.append(("lot", _("This lot of %(item)s is already registered.", item=item)))
    if problems:
        raise refuse(_("The lot was not registered."), problems)
    with work(user, "reagent.receive"):
        # Again under the write lock: the same lot may have just been registered elsewhere.
        if db.session.scalar(select(Reagent.id).where(Reagent.item == item, Reagent.lot == lot)):
            raise refuse(_("The lot was not registered."),
                         [("lot", _("This lot of %(item)s is already registered.", item=item))])
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
        reagent.status = status
        reagent.status_changed_by_id = user.id
    return reagent


def usable_reagents(on: dt.date | None = None) -> list[Reagent]:
    on = on or lab_today()
    return list(db.session.scalars(select(Reagent).where(
        Reagent.status == ReagentStatus.RELEASED, Reagent.expiry_date >= on).order_by(Reagent.item, Reagent.lot)))


# ---------------------------------------------------------------- deviations
def _new_deviation(user: User, batch: Batch | None, cord: Cord | None, description: str) -> Deviation:
    year = utcnow().year
    count = db.session.scalar(count_of(Deviation).where(Deviation.number.like(f"DEV-{year}-%"))) or 0
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
        if deviation.status != DeviationStatus.OPEN:
            raise RuleViolation(_("The deviation is already closed."))
        deviation.closed_by_id = user.id
        deviation.closed_at = utcnow()
        deviation.status = DeviationStatus.CLOSED
        sign(check, deviation)
    return deviation


# ---------------------------------------------------------------- read API for release
def deviations_of(batch: Batch) -> list[Deviation]:
    """Deviations raised against the batch or its cord."""
    return list(db.session.scalars(select(Deviation).where(
        or_(Deviation.batch_id == batch.id, Deviation.cord_id == batch.cord_id)).order_by(Deviation.raised_at)))


def open_deviations(batch: Batch) -> list[Deviation]:
    """Open deviations on the batch or its cord; any one blocks release."""
    return [d for d in deviations_of(batch) if d.status == DeviationStatus.OPEN]
