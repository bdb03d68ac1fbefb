"""BV2 co-culture potency runs: the plate, its images, the scores and calibrated parameter sets.

Lots are referred to by their identifier strings (the batches feature links them later)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, Boolean, CheckConstraint, Date, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.services import Audited
from labsys.auth.models import User, enum_column
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db
from labsys.potency.states import ParameterSetState, RunState, WellCondition


class PotencyRun(Audited, db.Model):
    """One BV2 co-culture plate: its set-up, state, limits and the outcome of scoring."""

    __tablename__ = "potency_runs"
    __table_args__ = (
        CheckConstraint("plate_format IN (24, 48, 96)", name="plate_format_known"),
        CheckConstraint("lps_ng_per_ml > 0", name="lps_concentration_positive"),
        CheckConstraint("bv2_passage >= 0", name="passage_not_negative"),
        CheckConstraint("state <> 'approved' OR (valid = true AND approved_at IS NOT NULL)",
                        name="approved_only_when_valid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    assay_date: Mapped[dt.date] = mapped_column(Date)
    operator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    bv2_passage: Mapped[int] = mapped_column(Integer)
    lps_lot: Mapped[str] = mapped_column(String(80))
    lps_ng_per_ml: Mapped[float] = mapped_column(Float)
    test_lots: Mapped[list] = mapped_column(JSON, default=list)
    reference_lot: Mapped[str | None] = mapped_column(String(80))
    plate_format: Mapped[int] = mapped_column(Integer)
    pixel_size_um: Mapped[float] = mapped_column(Float, default=0.65)
    image_channel: Mapped[int | None] = mapped_column(Integer)
    measure: Mapped[str] = mapped_column(String(40), default="activation_fraction")
    is_validation: Mapped[bool] = mapped_column(Boolean, default=False)
    parameter_set_name: Mapped[str] = mapped_column(String(80))
    parameter_set_version: Mapped[int] = mapped_column(Integer)
    min_cells_per_field: Mapped[int] = mapped_column(Integer, default=30)
    max_replicate_cv_percent: Mapped[float] = mapped_column(Float, default=20.0)
    min_z_prime: Mapped[float] = mapped_column(Float, default=0.4)
    reference_min_inhibition: Mapped[float | None] = mapped_column(Float)
    reference_max_inhibition: Mapped[float | None] = mapped_column(Float)
    state: Mapped[RunState] = mapped_column(enum_column(RunState, "potency_run_state"), default=RunState.DRAFT)
    fields_total: Mapped[int] = mapped_column(Integer, default=0)
    fields_done: Mapped[int] = mapped_column(Integer, default=0)
    fields_failed: Mapped[int] = mapped_column(Integer, default=0)
    valid: Mapped[bool | None] = mapped_column(Boolean)
    validity: Mapped[list | None] = mapped_column(JSON)
    z_prime: Mapped[float | None] = mapped_column(Float)
    lps_score: Mapped[float | None] = mapped_column(Float)
    unstim_score: Mapped[float | None] = mapped_column(Float)
    scored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    operator: Mapped[User] = relationship()
    wells: Mapped[list["PlateWell"]] = relationship(back_populates="run", order_by="PlateWell.well")
    lot_results: Mapped[list["LotResult"]] = relationship(back_populates="run", order_by="LotResult.id")

    @property
    def lots_under_test(self) -> list[str]:
        return list(self.test_lots or [])

    @property
    def progress_percent(self) -> int:
        if not self.fields_total:
            return 0
        return int(round(100 * self.fields_done / self.fields_total))


class PlateWell(Audited, db.Model):
    """A well of the plate: its condition, lot and MSC:BV2 ratio, and replicate group."""

    __tablename__ = "potency_wells"
    __table_args__ = (
        UniqueConstraint("run_id", "well"),
        CheckConstraint("condition NOT IN ('test', 'reference') OR (lot_identifier IS NOT NULL AND ratio IS NOT NULL)",
                        name="lot_wells_name_lot_and_ratio"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("potency_runs.id"), index=True)
    well: Mapped[str] = mapped_column(String(4))
    condition: Mapped[WellCondition] = mapped_column(enum_column(WellCondition, "potency_well_condition"))
    lot_identifier: Mapped[str | None] = mapped_column(String(80))
    ratio: Mapped[str | None] = mapped_column(String(20))  # MSC:BV2, e.g. "1:10"
    replicate_group: Mapped[str] = mapped_column(String(120))

    run: Mapped[PotencyRun] = relationship(back_populates="wells")
    images: Mapped[list["FieldImage"]] = relationship(back_populates="plate_well",
                                                      order_by="FieldImage.field_number")


class FieldImage(Audited, db.Model):
    """One uploaded field image, stored content-addressed by SHA-256 under instance/images/."""

    __tablename__ = "potency_field_images"
    __table_args__ = (
        UniqueConstraint("well_id", "field_number"),
        CheckConstraint("length(sha256) = 64", name="sha256_hex"),
        CheckConstraint("NOT excluded OR exclusion_reason IS NOT NULL", name="exclusion_has_reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("potency_runs.id"), index=True)
    well_id: Mapped[int] = mapped_column(ForeignKey("potency_wells.id"), index=True)
    field_number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    original_filename: Mapped[str] = mapped_column(String(255))
    byte_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bit_depth: Mapped[int] = mapped_column(Integer)
    channel: Mapped[int | None] = mapped_column(Integer)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(Text)

    plate_well: Mapped[PlateWell] = relationship(back_populates="images")
    result: Mapped["FieldScore | None"] = relationship(back_populates="image", uselist=False)


class FieldScore(Audited, db.Model):
    """What the analysis found in one field, with everything needed to reproduce it."""

    __tablename__ = "potency_field_scores"
    __table_args__ = (
        CheckConstraint("status IN ('scored', 'failed')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("potency_field_images.id"), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("potency_runs.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(Text)
    cell_count: Mapped[int | None] = mapped_column(Integer)
    activated_count: Mapped[int | None] = mapped_column(Integer)
    activation_fraction: Mapped[float | None] = mapped_column(Float)
    median_area_um2: Mapped[float | None] = mapped_column(Float)
    algorithm_version: Mapped[str] = mapped_column(String(40))
    parameter_set_name: Mapped[str] = mapped_column(String(80))
    parameter_set_version: Mapped[int] = mapped_column(Integer)
    library_versions: Mapped[dict] = mapped_column(JSON, default=dict)
    overlay_sha256: Mapped[str | None] = mapped_column(String(64))
    cells_sha256: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    image: Mapped[FieldImage] = relationship(back_populates="result")

    def measure(self, name: str) -> float | None:
        return getattr(self, name) if self.status == "scored" else None


class LotResult(Audited, db.Model):
    """A lot's outcome in a run (at one ratio, or overall): what release reads once approved."""

    __tablename__ = "potency_lot_results"
    __table_args__ = (UniqueConstraint("run_id", "lot_identifier", "ratio"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("potency_runs.id"), index=True)
    lot_identifier: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(10))  # "test" or "reference"
    ratio: Mapped[str] = mapped_column(String(20))  # "all" for the lot over every ratio
    well_count: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    cv_percent: Mapped[float | None] = mapped_column(Float)
    percent_inhibition: Mapped[float | None] = mapped_column(Float)
    relative_potency: Mapped[float | None] = mapped_column(Float)

    run: Mapped[PotencyRun] = relationship(back_populates="lot_results")


class CalibratedParameterSet(Audited, db.Model):
    """A parameter set proposed from a validation run's control wells; usable once QA approves."""

    __tablename__ = "potency_parameter_sets"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict] = mapped_column(JSON)
    based_on_name: Mapped[str] = mapped_column(String(80))
    based_on_version: Mapped[int] = mapped_column(Integer)
    source_run_id: Mapped[int] = mapped_column(ForeignKey("potency_runs.id"))
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[ParameterSetState] = mapped_column(enum_column(ParameterSetState, "potency_parameter_set_state"),
                                                     default=ParameterSetState.DRAFT)
    proposed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    proposed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version_counter: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version_counter}

    source_run: Mapped[PotencyRun] = relationship()
    proposed_by: Mapped[User] = relationship()
