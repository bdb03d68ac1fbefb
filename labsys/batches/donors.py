"""Donors (the birth mother, by coded ID) and cord receipt."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches import rules
from labsys.batches.common import refuse, require_role, setting, work
from labsys.batches.models import Cord, CordStatus, DeliveryType, Donor, Inspection
from labsys.batches.quality import _new_deviation
from labsys.batches.rules import Eligibility, Marker, MarkerResult, ScreeningOutcome
from labsys.db import utcnow
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.timefmt import lab_today


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
    problems = _donor_problems(code, consent_date, specimen_date, lab_today())
    if db.session.scalar(select(Donor.id).where(Donor.code == code)):
        problems.append(("code", _("Donor %(code)s is already registered.", code=code)))
    if problems:
        raise refuse(_("The donor was not registered."), problems)
    with work(user, "donor.register"):
        # Again under the write lock: the same code may have just been registered elsewhere.
        if db.session.scalar(select(Donor.id).where(Donor.code == code)):
            raise refuse(_("The donor was not registered."),
                         [("code", _("Donor %(code)s is already registered.", code=code))])
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
    problems = _donor_problems(None, consent_date, specimen_date, lab_today())
    if problems:
        raise refuse(_("Nothing was saved."), problems)
    determined = donor.eligibility != Eligibility.PENDING
    if any(c.batch is not None for c in donor.cords) and determined:
        raise refuse(_("Nothing was saved."), [("reason", _(
            "A batch was started on this determination; raise a deviation instead of changing it."))])
    with work(user, "donor.update", reason, reason_required=determined):
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
    if donor.eligibility == Eligibility.INELIGIBLE:
        hard.append(("collected_at", _("Donor %(code)s is ineligible: her cord is not received for processing.",
                                       code=donor.code)))
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
