"""Trial records: configuration, patients, the sealed allocation list, unblindings, infusion
orders and follow-up (visits, outcome, adverse events).

The treatment arm is stored in one place only: ``AllocationEntry.arm_sealed``, encrypted with
a key kept outside the database (labsys.trial.sealing) and kept out of the audit trail. Every
other table is arm-neutral: patients carry a kit number."""
from __future__ import annotations

import datetime as dt
import enum
import json
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Integer, Numeric, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.services import Audited
from labsys.auth.models import User, enum_column
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db


class Sex(str, enum.Enum):
    FEMALE = "female"
    MALE = "male"


class EligibilityStatus(str, enum.Enum):
    PENDING = "pending"
    ELIGIBLE = "eligible"


class OrderStatus(str, enum.Enum):
    OPEN = "open"
    PREPARED = "prepared"
    ADMINISTERED = "administered"
    CANCELLED = "cancelled"


ORDER_TRANSITIONS = {
    OrderStatus.OPEN: {OrderStatus.PREPARED, OrderStatus.CANCELLED},
    OrderStatus.PREPARED: {OrderStatus.ADMINISTERED, OrderStatus.CANCELLED},
    OrderStatus.ADMINISTERED: set(),
    OrderStatus.CANCELLED: set(),
}


class VisitStatus(str, enum.Enum):
    DONE = "done"
    MISSED = "missed"


class VitalStatus(str, enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


class Severity(str, enum.Enum):
    """CTCAE grades."""
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"
    LIFE_THREATENING = "life_threatening"
    FATAL = "fatal"


class Relatedness(str, enum.Enum):
    UNRELATED = "unrelated"
    UNLIKELY = "unlikely"
    POSSIBLE = "possible"
    PROBABLE = "probable"
    DEFINITE = "definite"


class Trial(Audited, db.Model):
    """One registered trial's configuration. The arm names are configuration shown only to
    unblinded roles while the trial is masked (and masked in the audit trail)."""

    __tablename__ = "trials"
    __audit_mask__ = ("control_arm_name", "msc_arm_name")
    __table_args__ = (
        CheckConstraint("age_min >= 18 AND age_min <= age_max", name="adult_age_range"),
        CheckConstraint("dose_tolerance > 0 AND dose_tolerance < 1", name="tolerance_fraction"),
        CheckConstraint("target_enrolment > 1 AND ratio_control > 0 AND ratio_msc > 0", name="positive_design"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_number: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    control_arm_name: Mapped[str] = mapped_column(String(120))
    msc_arm_name: Mapped[str] = mapped_column(String(120))
    ratio_control: Mapped[int] = mapped_column(Integer, default=1)
    ratio_msc: Mapped[int] = mapped_column(Integer, default=1)
    block_sizes: Mapped[str] = mapped_column(String(40), default="2,4")
    target_enrolment: Mapped[int] = mapped_column(Integer, default=40)
    age_min: Mapped[int] = mapped_column(Integer, default=18)
    age_max: Mapped[int] = mapped_column(Integer, default=75)
    dose_cells_per_kg: Mapped[int] = mapped_column(BigInteger, default=1_000_000)
    dose_tolerance: Mapped[Decimal] = mapped_column(Numeric(4, 3), default=Decimal("0.200"))
    max_dose_cells: Mapped[int | None] = mapped_column(BigInteger)
    apply_post_thaw_viability: Mapped[bool] = mapped_column(Boolean, default=True)
    endotoxin_limit_eu_per_kg: Mapped[Decimal] = mapped_column(Numeric(6, 2), default=Decimal("5"))
    masked: Mapped[bool] = mapped_column(Boolean, default=True)
    weight_basis: Mapped[str] = mapped_column(String(40), default="enrolment")
    follow_up_days: Mapped[int] = mapped_column(Integer, default=90)
    visit_days: Mapped[str] = mapped_column(String(200), default="1,3,7,14,28,90")
    exclusion_criteria: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of strings
    list_generated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    list_generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    @property
    def exclusions(self) -> list[str]:
        return list(json.loads(self.exclusion_criteria or "[]"))

    @property
    def visit_day_list(self) -> list[int]:
        return [int(d) for d in self.visit_days.split(",") if d.strip()]

    @property
    def block_size_list(self) -> list[int]:
        return [int(b) for b in self.block_sizes.split(",") if b.strip()]


class AllocationEntry(Audited, db.Model):
    """One line of the concealed list. The arm is sealed (encrypted); it is never audited,
    listed or returned except through services that check the unblinded permission."""

    __tablename__ = "trial_allocation_entries"
    __table_args__ = (
        UniqueConstraint("trial_id", "sequence"),
        CheckConstraint("(used_by_patient_id IS NULL) = (used_at IS NULL)", name="used_with_time"),
    )
    __audit_exclude__ = ("arm_sealed",)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(Integer)
    block_size: Mapped[int] = mapped_column(Integer)
    arm_sealed: Mapped[str] = mapped_column(Text)
    used_by_patient_id: Mapped[int | None] = mapped_column(ForeignKey("trial_patients.id"), unique=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Patient(Audited, db.Model):
    """A participant, known only by codes (no names; the site keeps its own link)."""

    __tablename__ = "trial_patients"
    __table_args__ = (
        UniqueConstraint("trial_id", "screening_number"),
        # Randomization sets study ID, kit and time together; a patient is never half-randomized.
        CheckConstraint("(study_id IS NULL) = (kit_number IS NULL) AND (study_id IS NULL) = (randomized_at IS NULL)",
                        name="randomized_together"),
        CheckConstraint("eligibility = 'eligible' OR randomized_at IS NULL", name="randomized_only_if_eligible"),
        CheckConstraint("weight_kg >= 30 AND weight_kg <= 300", name="plausible_weight"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    screening_number: Mapped[str] = mapped_column(String(40))
    study_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    kit_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    year_of_birth: Mapped[int | None] = mapped_column(Integer)
    age_years: Mapped[int] = mapped_column(Integer)
    sex: Mapped[Sex] = mapped_column(enum_column(Sex, "patient_sex"))
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    weight_date: Mapped[dt.date] = mapped_column(Date)
    consent_date: Mapped[dt.date | None] = mapped_column(Date)
    diagnosis_confirmed: Mapped[bool | None] = mapped_column(Boolean)
    exclusion_answers: Mapped[str] = mapped_column(Text, default="{}")  # JSON {item: true/false/null}
    eligibility: Mapped[EligibilityStatus] = mapped_column(
        enum_column(EligibilityStatus, "patient_eligibility"), default=EligibilityStatus.PENDING)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enrolled_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    randomized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    randomized_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Primary outcomes
    admission_date: Mapped[dt.date | None] = mapped_column(Date)
    discharge_date: Mapped[dt.date | None] = mapped_column(Date)
    vital_status_day90: Mapped[VitalStatus | None] = mapped_column(enum_column(VitalStatus, "vital_status"))
    death_date: Mapped[dt.date | None] = mapped_column(Date)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    trial: Mapped[Trial] = relationship()
    enrolled_by: Mapped[User] = relationship(foreign_keys=[enrolled_by_id])

    @property
    def randomized(self) -> bool:
        return self.randomized_at is not None

    @property
    def exclusions(self) -> dict[str, bool | None]:
        return dict(json.loads(self.exclusion_answers or "{}"))

    @property
    def length_of_stay_days(self) -> int | None:
        if self.admission_date and self.discharge_date and self.discharge_date >= self.admission_date:
            return (self.discharge_date - self.admission_date).days
        return None


class Unblinding(Audited, db.Model):
    """An emergency unblinding of one patient: e-signed, with a reason."""

    __tablename__ = "trial_unblindings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("trial_patients.id"), index=True)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    unblinded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship()
    requested_by: Mapped[User] = relationship()


class InfusionOrder(Audited, db.Model):
    """The investigator's order for the day-1 infusion, the pharmacist's preparation (cells or
    matching placebo), and the administration. Dose fields are shown to unblinded roles only."""

    __tablename__ = "trial_infusion_orders"
    __table_args__ = (
        CheckConstraint("status NOT IN ('prepared', 'administered') OR "
                        "(preparation_sealed IS NOT NULL AND prepared_at IS NOT NULL)", name="prepared_has_preparation"),
        CheckConstraint("status <> 'administered' OR administered_at IS NOT NULL", name="administered_has_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("trial_patients.id"), index=True)
    infusion_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[OrderStatus] = mapped_column(enum_column(OrderStatus, "infusion_order_status"),
                                                default=OrderStatus.OPEN)
    ordered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    ordered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    target_cells: Mapped[int] = mapped_column(BigInteger)
    # Preparation (pharmacist). What was prepared (cells or placebo, lot, vials, dose, endotoxin)
    # reveals the arm, so it is sealed like the allocation list (see orders.preparation_of).
    preparation_sealed: Mapped[str | None] = mapped_column(Text)
    prepared_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    prepared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    volume_ml: Mapped[Decimal | None] = mapped_column(Numeric(7, 1))
    # Administration (investigator)
    administered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    administered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    patient: Mapped[Patient] = relationship()
    ordered_by: Mapped[User] = relationship(foreign_keys=[ordered_by_id])


class VisitRecord(Audited, db.Model):
    """Secondary endpoints at one scheduled visit, or the visit marked missed."""

    __tablename__ = "trial_visits"
    __table_args__ = (UniqueConstraint("patient_id", "study_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("trial_patients.id"), index=True)
    study_day: Mapped[int] = mapped_column(Integer)
    status: Mapped[VisitStatus] = mapped_column(enum_column(VisitStatus, "visit_status"))
    visit_date: Mapped[dt.date | None] = mapped_column(Date)
    crp_mg_l: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    il6_pg_ml: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    lymphocytes_10e9_l: Mapped[Decimal | None] = mapped_column(Numeric(6, 2))
    procalcitonin_ng_ml: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    viral_load_log10_copies_ml: Mapped[Decimal | None] = mapped_column(Numeric(4, 2))
    pao2_fio2_mmhg: Mapped[Decimal | None] = mapped_column(Numeric(6, 1))
    chest_imaging_score: Mapped[int | None] = mapped_column(Integer)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class AdverseEvent(Audited, db.Model):
    """An adverse event, linked to the patient and (when cells were given) to the lot and vials
    administered. The product link is sealed: an empty link would reveal the placebo arm."""

    __tablename__ = "trial_adverse_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("trial_patients.id"), index=True)
    term: Mapped[str] = mapped_column(String(200))
    onset_date: Mapped[dt.date] = mapped_column(Date)
    severity: Mapped[Severity] = mapped_column(enum_column(Severity, "ae_severity"))
    serious: Mapped[bool] = mapped_column(Boolean, default=False)
    relatedness: Mapped[Relatedness] = mapped_column(enum_column(Relatedness, "ae_relatedness"))
    product_link_sealed: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    reported_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship()
