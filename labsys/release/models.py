"""Specifications and their versions, QC results, QA release decisions, recalls and trial-lot
selection. Every table is regulated (``Audited``): inserts and changes are audited, nothing is
deleted; state columns carry CHECK constraints."""
from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import (Boolean, CheckConstraint, Date, ForeignKey, Integer, LargeBinary, Numeric, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.services import Audited
from labsys.auth.models import User, enum_column
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db
from labsys.release.rules import Criterion, CriterionKind


class SpecStatus(str, enum.Enum):
    DRAFT = "draft"
    APPROVED = "approved"
    SUPERSEDED = "superseded"


class Specification(Audited, db.Model):
    __tablename__ = "specifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(200))

    versions: Mapped[list["SpecificationVersion"]] = relationship(
        back_populates="specification", order_by="SpecificationVersion.version_number")


class SpecificationVersion(Audited, db.Model):
    """A version of a specification: draft → approved (QA e-signature) → superseded."""

    __tablename__ = "specification_versions"
    __table_args__ = (
        UniqueConstraint("specification_id", "version_number"),
        CheckConstraint("status = 'draft' OR (approved_at IS NOT NULL AND approved_by_id IS NOT NULL)",
                        name="approval_is_signed"),
        CheckConstraint("status <> 'superseded' OR superseded_at IS NOT NULL", name="superseded_has_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    specification_id: Mapped[int] = mapped_column(ForeignKey("specifications.id"), index=True)
    version_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[SpecStatus] = mapped_column(enum_column(SpecStatus, "spec_status"), default=SpecStatus.DRAFT)
    change_summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    superseded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    specification: Mapped[Specification] = relationship(back_populates="versions")
    criteria: Mapped[list["SpecCriterion"]] = relationship(back_populates="spec_version",
                                                           order_by="SpecCriterion.position")
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id])

    @property
    def label(self) -> str:
        return f"{self.specification.code} v{self.version_number}"

    def criterion(self, test_code: str) -> "SpecCriterion | None":
        return next((c for c in self.criteria if c.test_code == test_code), None)

    def rule_criteria(self) -> list[Criterion]:
        return [c.as_rule() for c in self.criteria]


class SpecCriterion(Audited, db.Model):
    __tablename__ = "spec_criteria"
    __table_args__ = (
        UniqueConstraint("spec_version_id", "test_code"),
        CheckConstraint("kind <> 'text' OR expected_text IS NOT NULL", name="text_has_expected"),
        CheckConstraint("lower_limit IS NULL OR upper_limit IS NULL OR lower_limit <= upper_limit",
                        name="limits_ordered"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec_version_id: Mapped[int] = mapped_column(ForeignKey("specification_versions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    test_code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    method: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[CriterionKind] = mapped_column(enum_column(CriterionKind, "criterion_kind"))
    unit: Mapped[str | None] = mapped_column(String(40))
    lower_limit: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    upper_limit: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    expected_text: Mapped[str | None] = mapped_column(String(120))
    may_be_pending: Mapped[bool] = mapped_column(Boolean, default=False)

    spec_version: Mapped[SpecificationVersion] = relationship(back_populates="criteria")

    def as_rule(self) -> Criterion:
        return Criterion(self.test_code, self.name, CriterionKind(self.kind), self.unit,
                         None if self.lower_limit is None else Decimal(self.lower_limit),
                         None if self.upper_limit is None else Decimal(self.upper_limit),
                         self.expected_text, bool(self.may_be_pending), self.method)


class QCResult(Audited, db.Model):
    """One result of one test for one batch. A correction never overwrites: a new result
    supersedes the old one (``superseded_by_id``) with a reason, so the old value stays."""

    __tablename__ = "qc_results"
    __table_args__ = (
        CheckConstraint("verified_by_id IS NULL OR verified_by_id <> entered_by_id", name="verifier_differs"),
        CheckConstraint("pending OR numeric_value IS NOT NULL OR text_value IS NOT NULL", name="has_value"),
        CheckConstraint("supersedes_id IS NULL OR correction_reason IS NOT NULL", name="correction_has_reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    specification_version_id: Mapped[int] = mapped_column(ForeignKey("specification_versions.id"))
    test_code: Mapped[str] = mapped_column(String(40))
    numeric_value: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    text_value: Mapped[str | None] = mapped_column(String(120))
    unit: Mapped[str | None] = mapped_column(String(40))
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str | None] = mapped_column(String(200))
    instrument: Mapped[str | None] = mapped_column(String(120))
    performed_by: Mapped[str] = mapped_column(String(200))
    performed_on: Mapped[dt.date] = mapped_column(Date)
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    entered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("qc_results.id"))
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("qc_results.id"))
    correction_reason: Mapped[str | None] = mapped_column(Text)
    panel_key: Mapped[str | None] = mapped_column(String(40))  # groups a flow cytometry panel
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    entered_by: Mapped[User] = relationship(foreign_keys=[entered_by_id])
    verified_by: Mapped[User | None] = relationship(foreign_keys=[verified_by_id])
    attachments: Mapped[list["ResultAttachment"]] = relationship(back_populates="result",
                                                                 order_by="ResultAttachment.id")

    @property
    def is_current(self) -> bool:
        return self.superseded_by_id is None

    @property
    def is_verified(self) -> bool:
        return self.verified_by_id is not None

    @property
    def display_value(self) -> str:
        from labsys.release.rules import fmt

        if self.pending:
            return "pending"
        if self.numeric_value is not None:
            return fmt(Decimal(self.numeric_value)) + (f" {self.unit}" if self.unit else "")
        return self.text_value or ""


class ResultAttachment(Audited, db.Model):
    """A raw data file attached to a result (an instrument export, a chromatogram)."""

    __tablename__ = "qc_result_attachments"
    __audit_exclude__ = ("content",)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("qc_results.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    result: Mapped[QCResult] = relationship(back_populates="attachments")


class DecisionKind(str, enum.Enum):
    RELEASED = "released"
    RELEASED_PENDING = "released_pending"
    REJECTED = "rejected"


class ReleaseDecision(Audited, db.Model):
    """QA's signed decision on a lot, with the evaluation it saw (a frozen snapshot) and the
    audit chain head at signing. One per lot: the unique batch id is a last line of defence
    against two decisions, behind the conditional update of the batch."""

    __tablename__ = "release_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), unique=True)
    specification_version_id: Mapped[int] = mapped_column(ForeignKey("specification_versions.id"))
    decision: Mapped[DecisionKind] = mapped_column(enum_column(DecisionKind, "release_decision"))
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    evaluation_json: Mapped[str] = mapped_column(Text)
    chain_head_hash: Mapped[str] = mapped_column(String(64))
    certificate_number: Mapped[str] = mapped_column(String(40), unique=True)

    specification_version: Mapped[SpecificationVersion] = relationship()
    decided_by: Mapped[User] = relationship()


class Recall(Audited, db.Model):
    """A lot recalled after release because a late result failed."""

    __tablename__ = "recalls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), unique=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("qc_results.id"))
    recalled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recalled_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)

    result: Mapped[QCResult] = relationship()


class TrialSelection(Audited, db.Model):
    """A released lot that QA selected, with an e-signature, to supply the trial."""

    __tablename__ = "trial_lot_selections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), unique=True)
    selected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    selected_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    percent_inhibition: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    comment: Mapped[str | None] = mapped_column(Text)

    selected_by: Mapped[User] = relationship()
