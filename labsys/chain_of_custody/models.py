"""Chain-of-custody records.

Custody events reuse the batches feature's append-only ``vial_events`` table; this module adds the
columns custody needs (witness, temperature, order) to that mapped class, and the migration
``20261125_*_custody`` adds them to the table. Allocations and dispensings are this feature's own
tables."""
from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labsys.audit.guards import make_append_only
from labsys.audit.services import Audited
from labsys.auth.models import User, enum_column
from labsys.batches.models import Vial, VialEvent
from labsys.db import UTCDateTime, utcnow
from labsys.extensions import db

# ---- columns added to the batches feature's custody events (vial_events) -------------------
if "witness_id" not in VialEvent.__table__.c:
    VialEvent.witness_id = mapped_column("witness_id", ForeignKey("users.id"), nullable=True)
    VialEvent.witness_name = mapped_column("witness_name", String(200), nullable=True)
    VialEvent.temperature_c = mapped_column("temperature_c", Numeric(5, 1), nullable=True)
    VialEvent.order_id = mapped_column("order_id", ForeignKey("trial_infusion_orders.id"), nullable=True)


class CustodyEventType(str, enum.Enum):
    STORED = "stored"
    MOVED = "moved"
    ALLOCATED = "allocated"
    SHIPPED = "shipped"
    RECEIVED = "received"
    THAWED = "thawed"
    DISPENSED = "dispensed"
    ADMINISTERED = "administered"
    RETURNED = "returned"
    DESTROYED = "destroyed"


# Events that need a second person present.
WITNESSED_EVENTS = frozenset({CustodyEventType.DISPENSED, CustodyEventType.DESTROYED})
# Events where the product temperature is recorded when known.
TEMPERATURE_EVENTS = frozenset({CustodyEventType.STORED, CustodyEventType.MOVED, CustodyEventType.SHIPPED,
                                CustodyEventType.RECEIVED, CustodyEventType.THAWED})


class AllocationStatus(str, enum.Enum):
    ACTIVE = "active"
    CANCELLED = "cancelled"
    DISPENSED = "dispensed"


class CustodyAllocation(Audited, db.Model):
    """A vial set aside for one infusion order (the patient's kit)."""

    __tablename__ = "custody_allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("trial_infusion_orders.id"), index=True)
    vial_id: Mapped[int] = mapped_column(ForeignKey("vials.id"), index=True)
    kit_number: Mapped[str] = mapped_column(String(20))
    status: Mapped[AllocationStatus] = mapped_column(enum_column(AllocationStatus, "custody_allocation_status"),
                                                     default=AllocationStatus.ACTIVE)
    allocated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    allocated_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ended_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}

    vial: Mapped[Vial] = relationship()


class Dispensing(Audited, db.Model):
    """One dispensing of vials to a patient for an order: signed by the pharmacist (dispensed) and
    a second person (witnessed); the audit chain head at signing is kept for the certificate."""

    __tablename__ = "custody_dispensings"
    __table_args__ = (
        CheckConstraint("witness_id <> dispenser_id", name="witness_not_dispenser"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("trial_infusion_orders.id"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("trial_patients.id"), index=True)
    study_id: Mapped[str] = mapped_column(String(40))
    kit_number: Mapped[str] = mapped_column(String(20))
    dispensed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dispenser_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    witness_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    vial_identifiers: Mapped[str] = mapped_column(Text)  # comma-separated, in scan order
    delivered_cells: Mapped[int] = mapped_column(BigInteger)
    target_cells: Mapped[int] = mapped_column(BigInteger)
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    checks_json: Mapped[str] = mapped_column(Text)
    chain_head_hash: Mapped[str] = mapped_column(String(64))

    dispenser: Mapped[User] = relationship(foreign_keys=[dispenser_id])
    witness: Mapped[User] = relationship(foreign_keys=[witness_id])

    @property
    def vial_list(self) -> list[str]:
        return [v for v in self.vial_identifiers.split(",") if v]


class Administration(Audited, db.Model):
    """The bedside administration of a dispensing, signed by the investigator (administered)."""

    __tablename__ = "custody_administrations"
    __table_args__ = (
        UniqueConstraint("dispensing_id"),
        CheckConstraint("infusion_stop >= infusion_start", name="stop_after_start"),
        CheckConstraint("(wristband_scanned AND product_scanned) OR override_reason IS NOT NULL",
                        name="scanned_or_overridden"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dispensing_id: Mapped[int] = mapped_column(ForeignKey("custody_dispensings.id"))
    administered_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    infusion_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    infusion_stop: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    wristband_scanned: Mapped[bool] = mapped_column(db.Boolean, default=False)
    product_scanned: Mapped[bool] = mapped_column(db.Boolean, default=False)
    override_reason: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    dispensing: Mapped[Dispensing] = relationship()


make_append_only(Dispensing.__table__)
make_append_only(Administration.__table__)


class ShipmentStatus(str, enum.Enum):
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"


class Shipment(Audited, db.Model):
    """Vials shipped from the lab to the pharmacy, with the shipper, the temperature range the
    shipper must hold, the temperature log, and the receipt (missing and extra vials reported)."""

    __tablename__ = "custody_shipments"
    __table_args__ = (
        CheckConstraint("min_temperature_c < max_temperature_c", name="temperature_range"),
        CheckConstraint("status <> 'received' OR (received_at IS NOT NULL AND received_by_id IS NOT NULL)",
                        name="received_is_complete"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    origin: Mapped[str] = mapped_column(String(120))
    destination: Mapped[str] = mapped_column(String(120))
    shipper: Mapped[str] = mapped_column(String(200))
    min_temperature_c: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    max_temperature_c: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    status: Mapped[ShipmentStatus] = mapped_column(enum_column(ShipmentStatus, "custody_shipment_status"),
                                                   default=ShipmentStatus.IN_TRANSIT)
    shipped_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    shipped_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    received_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    missing_vials: Mapped[str | None] = mapped_column(Text)  # comma-separated identifiers
    extra_vials: Mapped[str | None] = mapped_column(Text)
    receipt_note: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class ShipmentVial(Audited, db.Model):
    __tablename__ = "custody_shipment_vials"
    __table_args__ = (UniqueConstraint("shipment_id", "vial_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("custody_shipments.id"), index=True)
    vial_id: Mapped[int] = mapped_column(ForeignKey("vials.id"), index=True)

    vial: Mapped[Vial] = relationship()


class TemperatureReading(Audited, db.Model):
    """One logged temperature of a shipment (append-only); outside the range is an excursion."""

    __tablename__ = "custody_temperature_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("custody_shipments.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    temperature_c: Mapped[Decimal] = mapped_column(Numeric(5, 1))
    excursion: Mapped[bool] = mapped_column(db.Boolean, default=False)
    recorded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


make_append_only(TemperatureReading.__table__)
