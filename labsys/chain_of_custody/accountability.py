"""Product accountability per lot: every vial made is accounted for (released, allocated,
dispensed, administered, destroyed, recalled, expired, in stock), with each vial's custody trail."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from sqlalchemy import select

from labsys.batches.models import Batch, Vial, VialEvent
from labsys.batches.states import VialStatus
from labsys.batches.vials import vials_of
from labsys.extensions import db

IN_STOCK = (VialStatus.AVAILABLE, VialStatus.ALLOCATED, VialStatus.QUARANTINE)
RELEASED_STATES = (VialStatus.AVAILABLE, VialStatus.ALLOCATED, VialStatus.THAWED, VialStatus.DISPENSED,
                   VialStatus.ADMINISTERED)


@dataclass
class LotAccount:
    batch: Batch
    made: int = 0
    released: int = 0
    allocated: int = 0
    dispensed: int = 0
    administered: int = 0
    destroyed: int = 0
    recalled: int = 0
    expired: int = 0
    in_stock: int = 0
    in_process: int = 0  # thawed or dispensed, not yet administered
    trails: list[tuple[Vial, list[VialEvent]]] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """Made = administered + destroyed + recalled + expired + in stock + in process."""
        return self.made == (self.administered + self.destroyed + self.recalled + self.expired + self.in_stock
                             + self.in_process)

    def as_row(self) -> dict:
        return {"lot": self.batch.identifier, "made": self.made, "released": self.released,
                "allocated": self.allocated, "dispensed": self.dispensed, "administered": self.administered,
                "destroyed": self.destroyed, "recalled": self.recalled, "expired": self.expired,
                "in_stock": self.in_stock, "in_process": self.in_process, "balanced": self.balanced}


def account_for(batch: Batch) -> LotAccount:
    account = LotAccount(batch)
    vials = vials_of(batch)
    ids = [v.id for v in vials]
    events: dict[int, list[VialEvent]] = {i: [] for i in ids}
    if ids:
        for event in db.session.scalars(select(VialEvent).where(VialEvent.vial_id.in_(ids))
                                        .order_by(VialEvent.at, VialEvent.id)):
            events[event.vial_id].append(event)
    for vial in vials:
        trail = events[vial.id]
        kinds = {e.event_type for e in trail}
        status = VialStatus(vial.status)
        account.made += 1
        account.released += int("status.available" in kinds or "allocated" in kinds or status in RELEASED_STATES)
        account.allocated += int("allocated" in kinds)
        account.dispensed += int("dispensed" in kinds)
        account.administered += int(status == VialStatus.ADMINISTERED)
        account.destroyed += int(status == VialStatus.DESTROYED)
        account.recalled += int(status == VialStatus.RECALLED)
        account.expired += int(status == VialStatus.EXPIRED)
        account.in_stock += int(status in IN_STOCK)
        account.in_process += int(status in (VialStatus.THAWED, VialStatus.DISPENSED))
        account.trails.append((vial, trail))
    return account


def lots() -> list[Batch]:
    return list(db.session.scalars(select(Batch).where(Batch.vials.any()).order_by(Batch.identifier)))


def account_csv(account: LotAccount) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    row = account.as_row()
    writer.writerow(list(row))
    writer.writerow(list(row.values()))
    writer.writerow([])
    writer.writerow(["vial", "status", "event_at_utc", "event", "actor", "witness", "from", "to", "temperature_c",
                     "note"])
    for vial, trail in account.trails:
        for event in trail or [None]:
            if event is None:
                writer.writerow([vial.identifier, VialStatus(vial.status).value, "", "", "", "", "", "", "", ""])
                continue
            writer.writerow([vial.identifier, VialStatus(vial.status).value, event.at.isoformat(), event.event_type,
                             event.actor_name, event.witness_name or "", event.from_location or "",
                             event.to_location or "", "" if event.temperature_c is None else str(event.temperature_c),
                             event.note or ""])
    return buffer.getvalue()
