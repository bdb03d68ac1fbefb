"""Shipping lab → pharmacy: a shipment of vials with its shipper and temperature range; the
temperature log (CSV upload or readings) with excursions flagged; receipt by scanning, with
missing and extra vials reported. Each vial's custody trail records shipped and received."""
from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal, InvalidOperation
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.audit.services import unit_of_work
from labsys.batches.models import Vial
from labsys.batches.states import IN_STORAGE_STATES, VialStatus
from labsys.batches.vials import find_vial
from labsys.chain_of_custody.models import (CustodyEventType, Shipment, ShipmentStatus, ShipmentVial,
                                            TemperatureReading)
from labsys.chain_of_custody.services import custody_event, require_role, scan_vial
from labsys.db import count_of, utcnow
from labsys.errors import ConcurrentChange, InvalidTransition, NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _

MAX_READINGS = 10_000


def get_shipment(shipment_id: int) -> Shipment:
    shipment = db.session.get(Shipment, shipment_id)
    if shipment is None:
        raise NotFound(_("No such shipment."))
    return shipment


def shipments() -> list[Shipment]:
    return list(db.session.scalars(select(Shipment).order_by(Shipment.id.desc())))


def vials_of_shipment(shipment: Shipment) -> list[Vial]:
    return [row.vial for row in db.session.scalars(select(ShipmentVial).where(ShipmentVial.shipment_id == shipment.id)
                                                   .order_by(ShipmentVial.id))]


def readings_of(shipment: Shipment) -> list[TemperatureReading]:
    return list(db.session.scalars(select(TemperatureReading).where(TemperatureReading.shipment_id == shipment.id)
                                   .order_by(TemperatureReading.at, TemperatureReading.id)))


def _number() -> str:
    count = db.session.scalar(count_of(Shipment)) or 0
    return f"SHP-{utcnow().year}-{count + 1:04d}"


def ship(user: User, vial_identifiers: Sequence[str], shipper: str, destination: str,
         min_temperature_c: Decimal, max_temperature_c: Decimal, origin: str = "GMP lab") -> Shipment:
    """Ship stock vials (quarantine, available or allocated; never two shipments at once)."""
    require_role(user, Role.TECHNICIAN, Role.PHARMACIST)
    problems: list[tuple[str, str]] = []
    vials: list[Vial] = []
    for identifier in vial_identifiers:
        vial = find_vial(identifier or "")
        if vial is None:
            problems.append(("vials", _("Vial %(v)s is not in labsys.", v=identifier)))
        elif vial in vials:
            problems.append(("vials", _("Vial %(v)s is listed twice.", v=vial.identifier)))
        elif VialStatus(vial.status) not in IN_STORAGE_STATES:
            problems.append(("vials", _("Vial %(v)s is %(s)s and cannot be shipped.", v=vial.identifier,
                                        s=VialStatus(vial.status).value)))
        elif in_transit(vial) is not None:
            problems.append(("vials", _("Vial %(v)s is already in transit.", v=vial.identifier)))
        else:
            vials.append(vial)
    if not vial_identifiers:
        problems.append(("vials", _("List at least one vial.")))
    if not (shipper or "").strip():
        problems.append(("shipper", _("Name the shipper.")))
    if not (destination or "").strip():
        problems.append(("destination", _("Name the destination.")))
    if min_temperature_c is None or max_temperature_c is None or min_temperature_c >= max_temperature_c:
        problems.append(("min_temperature_c", _("The lowest temperature must be below the highest.")))
    if problems:
        error = RuleViolation(_("Nothing was shipped."), [m for _f, m in problems], field=problems[0][0])
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    actor = actor_of(user)
    try:
        with unit_of_work(actor, "custody.ship"):
            shipment = Shipment(number=_number(), origin=origin.strip(), destination=destination.strip(),
                                shipper=shipper.strip(), min_temperature_c=min_temperature_c,
                                max_temperature_c=max_temperature_c, status=ShipmentStatus.IN_TRANSIT,
                                shipped_at=utcnow(), shipped_by_id=user.id)
            db.session.add(shipment)
            db.session.flush()
            for vial in vials:
                db.session.add(ShipmentVial(shipment_id=shipment.id, vial_id=vial.id))
                before = vial.location
                vial.box_id = vial.row = vial.column = None
                vial.box = None
                custody_event(actor, vial, CustodyEventType.SHIPPED, from_location=before,
                              to_location=f"in transit {shipment.number} to {shipment.destination}",
                              note=f"shipper {shipment.shipper}")
    except StaleDataError:
        raise ConcurrentChange(_("A vial changed meanwhile; nothing was shipped."))
    return shipment


def in_transit(vial: Vial) -> Shipment | None:
    return db.session.scalar(select(Shipment).join(ShipmentVial, ShipmentVial.shipment_id == Shipment.id).where(
        ShipmentVial.vial_id == vial.id, Shipment.status == ShipmentStatus.IN_TRANSIT).limit(1))


def parse_readings(text: str) -> list[tuple[dt.datetime, Decimal]]:
    """CSV ``time,temperature_c`` (ISO 8601 time with offset or Z; a header row is allowed)."""
    readings, problems = [], []
    for number, row in enumerate(csv.reader(io.StringIO(text or "")), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            problems.append(_("Line %(n)d: expected time,temperature.", n=number))
            continue
        stamp, value = row[0].strip(), row[1].strip()
        if number == 1 and not stamp[:1].isdigit():
            continue  # header
        try:
            at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError
            temperature = Decimal(value)
            if not temperature.is_finite() or not Decimal("-200") <= temperature <= Decimal("60"):
                raise InvalidOperation
        except (ValueError, InvalidOperation):
            problems.append(_("Line %(n)d: expected an ISO time with offset and a temperature in °C.", n=number))
            continue
        readings.append((at.astimezone(dt.timezone.utc), temperature))
        if len(readings) > MAX_READINGS:
            problems.append(_("At most %(n)d readings per upload.", n=MAX_READINGS))
            break
    if problems or not readings:
        raise RuleViolation(_("The temperature log was not recorded."),
                            problems[:20] or [_("The log has no readings.")], field="log")
    return readings


def record_readings(user: User, shipment: Shipment, readings: Sequence[tuple[dt.datetime, Decimal]]) -> list[TemperatureReading]:
    require_role(user, Role.TECHNICIAN, Role.PHARMACIST)
    rows = []
    with unit_of_work(actor_of(user), "custody.shipment_temperatures"):
        for at, temperature in readings:
            excursion = not (shipment.min_temperature_c <= temperature <= shipment.max_temperature_c)
            row = TemperatureReading(shipment_id=shipment.id, at=at, temperature_c=temperature, excursion=excursion,
                                     recorded_by_id=user.id)
            db.session.add(row)
            rows.append(row)
    return rows


def receive(user: User, shipment: Shipment, scanned_codes: Sequence[str], note: str | None = None) -> Shipment:
    """Receive a shipment by scanning its vials: each expected vial scanned is received into the
    pharmacy; expected vials not scanned are reported missing, scanned vials not on the shipment
    are reported extra."""
    require_role(user, Role.PHARMACIST)
    if shipment.status != ShipmentStatus.IN_TRANSIT:
        raise InvalidTransition(_("Shipment %(n)s was already received.", n=shipment.number))
    expected = {v.identifier: v for v in vials_of_shipment(shipment)}
    received, extra, unreadable = [], [], 0
    for code in scanned_codes:
        if not (code or "").strip():
            continue
        item, vial = scan_vial(code.strip())
        if vial is None:
            if item.identifier:
                extra.append(item.identifier)
            else:
                unreadable += 1
        elif vial.identifier in expected and expected[vial.identifier] not in received:
            received.append(expected[vial.identifier])
        elif vial.identifier not in expected:
            extra.append(vial.identifier)
    missing = sorted(set(expected) - {v.identifier for v in received})
    excursions = sum(1 for r in readings_of(shipment) if r.excursion)
    actor = actor_of(user)
    try:
        with unit_of_work(actor, "custody.receive", (note or "").strip() or None), db.session.no_autoflush:
            for vial in received:
                custody_event(actor, vial, CustodyEventType.RECEIVED, from_location=f"in transit {shipment.number}",
                              to_location=shipment.destination,
                              note="temperature excursion during transport" if excursions else None)
            shipment.received_at, shipment.received_by_id = utcnow(), user.id
            shipment.missing_vials = ",".join(missing) or None
            shipment.extra_vials = ",".join(sorted(set(extra))) or None
            notes = [(note or "").strip()] if (note or "").strip() else []
            if unreadable:
                notes.append(f"{unreadable} unreadable code(s)")
            shipment.receipt_note = "; ".join(notes) or None
            shipment.status = ShipmentStatus.RECEIVED  # last: the table checks a received shipment is complete
    except StaleDataError:
        raise ConcurrentChange(_("The shipment changed meanwhile; reload it."))
    return shipment
