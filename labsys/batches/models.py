"""Donors, cords, batches, process steps, passages, reagents, deviations, fill, vials and storage.

Every regulated table subclasses ``Audited`` (every insert and change is audited; nothing is
deleted). State columns use ``enum_column`` (a CHECK on both engines) and a version counter so
two people cannot change the same record from the same state at once."""
from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, Numeric, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.guards import make_append_only
from labsys.audit.services import Audited
from labsys.auth.models import User, enum_column
from labsys.batches.rules import Eligibility, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.batches.search import keep_index
from labsys.batches.states import BatchStatus, VialStatus
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db

_marker = lambda name: mapped_column(enum_column(MarkerResult, name), default=MarkerResult.NOT_TESTED)  # noqa: E731


class Donor(Audited, db.Model):
    """The birth mother, by coded ID only (no name is ever stored)."""

    __tablename__ = "donors"
    __table_args__ = (
        CheckConstraint("eligibility = 'pending' OR eligibility_determined_by_id IS NOT NULL",
                        name="determination_is_signed"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    consent_date: Mapped[dt.date | None] = mapped_column(Date)
    screening_outcome: Mapped[ScreeningOutcome] = mapped_column(
        enum_column(ScreeningOutcome, "screening_outcome"), default=ScreeningOutcome.PENDING)
    specimen_date: Mapped[dt.date | None] = mapped_column(Date)
    hiv_ab: Mapped[MarkerResult] = _marker("marker_hiv_ab")
    hiv_nat: Mapped[MarkerResult] = _marker("marker_hiv_nat")
    hbsag: Mapped[MarkerResult] = _marker("marker_hbsag")
    anti_hbc: Mapped[MarkerResult] = _marker("marker_anti_hbc")
    hcv_ab: Mapped[MarkerResult] = _marker("marker_hcv_ab")
    hcv_nat: Mapped[MarkerResult] = _marker("marker_hcv_nat")
    syphilis: Mapped[MarkerResult] = _marker("marker_syphilis")
    htlv: Mapped[MarkerResult] = _marker("marker_htlv")
    cmv: Mapped[MarkerResult] = _marker("marker_cmv")
    eligibility: Mapped[Eligibility] = mapped_column(enum_column(Eligibility, "eligibility"),
                                                     default=Eligibility.PENDING, index=True)
    eligibility_determined_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    eligibility_determined_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    cords: Mapped[list["Cord"]] = relationship(back_populates="donor", order_by="Cord.id")
    determined_by: Mapped[User | None] = relationship(foreign_keys=[eligibility_determined_by_id])

    @property
    def is_eligible(self) -> bool:
        return self.eligibility == Eligibility.ELIGIBLE


class CordStatus(str, enum.Enum):
    ACCEPTED = "accepted"
    ACCEPTED_UNDER_DEVIATION = "accepted_under_deviation"


class DeliveryType(str, enum.Enum):
    VAGINAL = "vaginal"
    CAESAREAN = "caesarean"


class Inspection(str, enum.Enum):
    CONFORMS = "conforms"
    DOES_NOT_CONFORM = "does_not_conform"


class Cord(Audited, db.Model):
    __tablename__ = "cords"
    __table_args__ = (
        CheckConstraint("received_at >= collected_at", name="received_after_collection"),
        CheckConstraint("weight_g > 0", name="weight_positive"),
        CheckConstraint("gestational_age_weeks BETWEEN 20 AND 45", name="gestational_age_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    donor_id: Mapped[int] = mapped_column(ForeignKey("donors.id"), index=True)
    collected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    transport_temperature_c: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    weight_g: Mapped[Decimal] = mapped_column(Numeric(7, 1))
    inspection: Mapped[Inspection] = mapped_column(enum_column(Inspection, "cord_inspection"))
    inspection_note: Mapped[str | None] = mapped_column(Text)
    delivery_type: Mapped[DeliveryType] = mapped_column(enum_column(DeliveryType, "delivery_type"))
    gestational_age_weeks: Mapped[int] = mapped_column(Integer)
    status: Mapped[CordStatus] = mapped_column(enum_column(CordStatus, "cord_status"))
    received_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    donor: Mapped[Donor] = relationship(back_populates="cords")
    received_by: Mapped[User] = relationship()
    batch: Mapped["Batch | None"] = relationship(back_populates="cord", uselist=False)


class Batch(Audited, db.Model):
    """One lot, from one cord. ``identifier`` is the 13-character ISBT 128 donation identifier."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("facility_code", "year", "sequence"),
        CheckConstraint("length(identifier) = 13", name="identifier_length"),
        CheckConstraint("sequence BETWEEN 1 AND 999999", name="sequence_range"),
        # The batch list, newest first, reads 25 index entries instead of sorting every batch.
        Index("ix_batches_started_at_id", "started_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str] = mapped_column(String(13), unique=True)
    check_character: Mapped[str] = mapped_column(String(1))
    facility_code: Mapped[str] = mapped_column(String(5))
    year: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    cord_id: Mapped[int] = mapped_column(ForeignKey("cords.id"), unique=True)
    status: Mapped[BatchStatus] = mapped_column(enum_column(BatchStatus, "batch_status"),
                                                default=BatchStatus.IN_PROCESS, index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    cord: Mapped[Cord] = relationship(back_populates="batch")
    started_by: Mapped[User] = relationship()
    steps: Mapped[list["ProcessStep"]] = relationship(back_populates="batch",
                                                      order_by="(ProcessStep.started_at, ProcessStep.id)")
    passages: Mapped[list["Passage"]] = relationship(back_populates="batch", order_by="Passage.passage_number")
    vials: Mapped[list["Vial"]] = relationship(back_populates="batch", order_by="Vial.division")
    fill: Mapped["Fill | None"] = relationship(back_populates="batch", uselist=False)

    @property
    def donor(self) -> Donor:
        return self.cord.donor

    @property
    def max_passage_number(self) -> int | None:
        """The highest passage recorded (None before P0)."""
        return max((p.passage_number for p in self.passages), default=None)

    @property
    def display_identifier(self) -> str:
        return f"{self.identifier} {self.check_character}"


class StepType(str, enum.Enum):
    TISSUE_PROCESSING = "tissue_processing"
    P0 = "p0"
    PASSAGE = "passage"
    HARVEST = "harvest"
    FORMULATION = "formulation"
    FILL = "fill"


class TissueMethod(str, enum.Enum):
    EXPLANT = "explant"
    ENZYMATIC = "enzymatic"


class ProcessStep(Audited, db.Model):
    __tablename__ = "process_steps"
    __table_args__ = (
        CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ends_after_start"),
        CheckConstraint("step_type <> 'tissue_processing' OR method IS NOT NULL", name="tissue_method_given"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    step_type: Mapped[StepType] = mapped_column(enum_column(StepType, "step_type"))
    method: Mapped[TissueMethod | None] = mapped_column(enum_column(TissueMethod, "tissue_method"))
    operator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    equipment: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    batch: Mapped[Batch] = relationship(back_populates="steps")
    operator: Mapped[User] = relationship()
    reagent_uses: Mapped[list["StepReagent"]] = relationship(back_populates="step", order_by="StepReagent.id")
    passage: Mapped["Passage | None"] = relationship(back_populates="step", uselist=False)


class Passage(Audited, db.Model):
    """Cell counts of one passage (P0 included). Counts and viability are critical manual entries:
    a different person verifies them (EU GMP Annex 11 §6) before fill."""

    __tablename__ = "passages"
    __table_args__ = (
        UniqueConstraint("batch_id", "passage_number"),
        CheckConstraint("passage_number >= 0", name="passage_number_nonnegative"),
        CheckConstraint("seeded_viable_cells IS NULL OR seeded_viable_cells > 0", name="seeded_positive"),
        CheckConstraint("harvested_viable_cells > 0", name="harvested_positive"),
        CheckConstraint("viability_percent BETWEEN 0 AND 100", name="viability_range"),
        CheckConstraint("confluence_percent IS NULL OR confluence_percent BETWEEN 0 AND 100",
                        name="confluence_range"),
        CheckConstraint("flask_count >= 1", name="flask_count_positive"),
        CheckConstraint("verified_by_id IS NULL OR verified_by_id <> entered_by_id", name="verifier_differs"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("process_steps.id"), unique=True)
    passage_number: Mapped[int] = mapped_column(Integer)
    seeded_viable_cells: Mapped[int | None] = mapped_column(BigInteger)
    harvested_viable_cells: Mapped[int] = mapped_column(BigInteger)
    viability_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    confluence_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    flask_count: Mapped[int] = mapped_column(Integer)
    population_doublings: Mapped[Decimal | None] = mapped_column(Numeric(7, 3))
    cumulative_population_doublings: Mapped[Decimal] = mapped_column(Numeric(7, 3))
    entered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # Indexed: the batches panel counts passages awaiting verification on every list page.
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    batch: Mapped[Batch] = relationship(back_populates="passages")
    step: Mapped[ProcessStep] = relationship(back_populates="passage")
    entered_by: Mapped[User] = relationship(foreign_keys=[entered_by_id])
    verified_by: Mapped[User | None] = relationship(foreign_keys=[verified_by_id])

    @property
    def is_verified(self) -> bool:
        return self.verified_by_id is not None

    @property
    def entry_label(self) -> str:
        return f"P{self.passage_number}"


class Reagent(Audited, db.Model):
    """A reagent or material lot received into the lab."""

    __tablename__ = "reagents"
    __table_args__ = (UniqueConstraint("item", "lot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(120))
    lot: Mapped[str] = mapped_column(String(60))
    supplier: Mapped[str | None] = mapped_column(String(120))
    expiry_date: Mapped[dt.date] = mapped_column(Date)
    received_on: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[ReagentStatus] = mapped_column(enum_column(ReagentStatus, "reagent_status"),
                                                  default=ReagentStatus.QUARANTINE)
    status_changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    @property
    def label(self) -> str:
        return f"{self.item} · {self.lot}"


class StepReagent(Audited, db.Model):
    __tablename__ = "step_reagents"
    __table_args__ = (UniqueConstraint("step_id", "reagent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("process_steps.id"), index=True)
    reagent_id: Mapped[int] = mapped_column(ForeignKey("reagents.id"), index=True)

    step: Mapped[ProcessStep] = relationship(back_populates="reagent_uses")
    reagent: Mapped[Reagent] = relationship()


class DeviationStatus(str, enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Deviation(Audited, db.Model):
    __tablename__ = "deviations"
    __table_args__ = (
        CheckConstraint("batch_id IS NOT NULL OR cord_id IS NOT NULL", name="attached"),
        CheckConstraint("status = 'open' OR (closed_by_id IS NOT NULL AND closed_at IS NOT NULL)",
                        name="closure_is_signed"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    cord_id: Mapped[int | None] = mapped_column(ForeignKey("cords.id"), index=True)
    description: Mapped[str] = mapped_column(Text)
    impact_assessment: Mapped[str | None] = mapped_column(Text)
    capa: Mapped[str | None] = mapped_column(Text)
    status: Mapped[DeviationStatus] = mapped_column(enum_column(DeviationStatus, "deviation_status"),
                                                    default=DeviationStatus.OPEN)
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    raised_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    batch: Mapped[Batch | None] = relationship()
    cord: Mapped[Cord | None] = relationship()
    raised_by: Mapped[User] = relationship(foreign_keys=[raised_by_id])
    closed_by: Mapped[User | None] = relationship(foreign_keys=[closed_by_id])


class Fill(Audited, db.Model):
    """The fill of a batch. Viable cells per vial and viability are critical manual entries: a
    different person verifies them (EU GMP Annex 11 §6) before release."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint("vial_count BETWEEN 1 AND 999", name="vial_count_range"),
        CheckConstraint("viable_cells_per_vial > 0", name="cells_positive"),
        CheckConstraint("volume_ml > 0", name="volume_positive"),
        CheckConstraint("viability_percent BETWEEN 0 AND 100", name="viability_range"),
        CheckConstraint("verified_by_id IS NULL OR verified_by_id <> entered_by_id", name="verifier_differs"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), unique=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("process_steps.id"), unique=True)
    vial_count: Mapped[int] = mapped_column(Integer)
    viable_cells_per_vial: Mapped[int] = mapped_column(BigInteger)
    volume_ml: Mapped[Decimal] = mapped_column(Numeric(6, 2))
    cryoprotectant: Mapped[str] = mapped_column(String(120))
    viability_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    filled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    entered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    batch: Mapped[Batch] = relationship(back_populates="fill")
    step: Mapped[ProcessStep] = relationship()
    entered_by: Mapped[User] = relationship(foreign_keys=[entered_by_id])
    verified_by: Mapped[User | None] = relationship(foreign_keys=[verified_by_id])

    @property
    def is_verified(self) -> bool:
        return self.verified_by_id is not None

    @property
    def entry_label(self) -> str:
        return "Fill"


class Tank(Audited, db.Model):
    __tablename__ = "storage_tanks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    description: Mapped[str | None] = mapped_column(String(200))
    racks: Mapped[list["Rack"]] = relationship(back_populates="tank", order_by="Rack.code")


class Rack(Audited, db.Model):
    __tablename__ = "storage_racks"
    __table_args__ = (UniqueConstraint("tank_id", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tank_id: Mapped[int] = mapped_column(ForeignKey("storage_tanks.id"), index=True)
    code: Mapped[str] = mapped_column(String(20))
    tank: Mapped[Tank] = relationship(back_populates="racks")
    boxes: Mapped[list["Box"]] = relationship(back_populates="rack", order_by="Box.code")


class Box(Audited, db.Model):
    __tablename__ = "storage_boxes"
    __table_args__ = (CheckConstraint("rows BETWEEN 1 AND 26 AND columns BETWEEN 1 AND 26", name="grid_size"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rack_id: Mapped[int] = mapped_column(ForeignKey("storage_racks.id"), index=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[int] = mapped_column(Integer)
    rack: Mapped[Rack] = relationship(back_populates="boxes")

    @property
    def location(self) -> str:
        return f"{self.rack.tank.code}/{self.rack.code}/{self.code}"


def position_label(row: int, column: int) -> str:
    return f"{chr(ord('A') + row - 1)}{column}"


def vial_location(tank: str, rack: str, box: str, row: int, column: int) -> str:
    """Where a stored vial is: tank/rack/box/position (``Vial.location``, from plain values)."""
    return f"{tank}/{rack}/{box}/{position_label(row, column)}"


class Vial(Audited, db.Model):
    """One container of product. Never deleted; its status follows states.VIAL_TRANSITIONS."""

    __tablename__ = "vials"
    __table_args__ = (
        UniqueConstraint("batch_id", "division"),
        UniqueConstraint("box_id", "row", "column", name="one_vial_per_position"),
        CheckConstraint("division BETWEEN 1 AND 999", name="division_range"),
        CheckConstraint("viable_cells > 0", name="cells_positive"),
        CheckConstraint("(box_id IS NULL AND row IS NULL AND \"column\" IS NULL) OR "
                        "(box_id IS NOT NULL AND row >= 1 AND \"column\" >= 1)", name="whole_position"),
        CheckConstraint("label_prints >= 0", name="label_prints_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identifier: Mapped[str] = mapped_column(String(16), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    division: Mapped[int] = mapped_column(Integer)
    viable_cells: Mapped[int] = mapped_column(BigInteger)
    volume_ml: Mapped[Decimal] = mapped_column(Numeric(6, 2))
    cryoprotectant: Mapped[str] = mapped_column(String(120))
    filled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expiry_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[VialStatus] = mapped_column(enum_column(VialStatus, "vial_status"),
                                               default=VialStatus.QUARANTINE, index=True)
    box_id: Mapped[int | None] = mapped_column(ForeignKey("storage_boxes.id"), index=True)
    row: Mapped[int | None] = mapped_column(Integer)
    column: Mapped[int | None] = mapped_column(Integer)
    label_prints: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    batch: Mapped[Batch] = relationship(back_populates="vials")
    box: Mapped[Box | None] = relationship()

    @property
    def location(self) -> str | None:
        if self.box is None:
            return None
        return vial_location(self.box.rack.tank.code, self.box.rack.code, self.box.code,  # type: ignore[arg-type]
                             self.row, self.column)


keep_index(Vial.__table__)


class VialEvent(Audited, db.Model):
    """Chain-of-custody events of a vial (append-only). ``event_type`` is an open vocabulary
    (stored, moved here; later features add thawed, dispensed, …)."""

    __tablename__ = "vial_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vial_id: Mapped[int] = mapped_column(ForeignKey("vials.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_name: Mapped[str] = mapped_column(String(200))
    from_location: Mapped[str | None] = mapped_column(String(80))
    to_location: Mapped[str | None] = mapped_column(String(80))
    note: Mapped[str | None] = mapped_column(Text)

    vial: Mapped[Vial] = relationship()


make_append_only(VialEvent.__table__)


class LabelKind(str, enum.Enum):
    VIAL = "vial"
    BOX = "box"


class LabelPrint(Audited, db.Model):
    """Every label print run, for label reconciliation; a reprint carries its reason."""

    __tablename__ = "label_prints"
    __table_args__ = (CheckConstraint("NOT is_reprint OR reason IS NOT NULL", name="reprint_has_reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[LabelKind] = mapped_column(enum_column(LabelKind, "label_kind"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    box_id: Mapped[int | None] = mapped_column(ForeignKey("storage_boxes.id"))
    labels: Mapped[int] = mapped_column(Integer)
    is_reprint: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    printed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    printed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    printed_by_name: Mapped[str] = mapped_column(String(200))


make_append_only(LabelPrint.__table__)
