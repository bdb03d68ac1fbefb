"""Fill, vials, storage positions, custody events and label print accounting.

``apply_vial_transition`` changes a vial's state inside the caller's unit of work (release and
dispensing call it within their own); ``transition_vial`` is the stand-alone service."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable

from sqlalchemy import select

from labsys.audit.services import Actor, record_event
from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.auth.signatures import SignatureCheck, sign
from labsys.batches import rules
from labsys.batches.models import (Batch, Box, Fill, LabelKind, LabelPrint, Rack, StepType, Tank, Vial, VialEvent,
                                   position_label)
from labsys.batches.search import identifier_contains
from labsys.batches.services import (_add_step, _reagents_for, _require_in_process, _step_problems,
                                     apply_batch_transition, refuse, require_role, setting, unverified_entries, work)
from labsys.batches.states import (IN_STORAGE_STATES, TERMINAL_VIAL_STATES, BatchStatus, VialStatus,
                                   check_vial_transition)
from labsys.db import utcnow
from labsys.documents.isbt import vial_identifier
from labsys.errors import RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _
from labsys.listing import starts_with


def vials_of(batch: Batch, status: VialStatus | None = None) -> list[Vial]:
    query = select(Vial).where(Vial.batch_id == batch.id).order_by(Vial.division)
    if status is not None:
        query = query.where(Vial.status == status)
    return list(db.session.scalars(query))


def identifier_matches(term: str):
    """Vials whose identifier contains ``term``. An identifier is the facility code followed by
    digits only, so a term that starts with a letter found nowhere after the first character of
    the facility code can only match at the start: then the same answer comes from a range on
    the unique index; any other term is answered by the trigram index (batches.search)."""
    term = term.strip().upper()
    if matches_only_at_start(term):
        return starts_with(Vial.identifier, term)
    return identifier_contains(Vial.identifier, Vial.id, term, db.session.get_bind().dialect.name)


def matches_only_at_start(term: str) -> bool:
    """Whether an upper-case ``term`` can only occur at the start of a donation or vial identifier
    (the facility code, then digits): it starts with a letter found nowhere after the first
    character of the facility code."""
    facility = (setting("FACILITY_CODE") or "").upper()
    return bool(term) and term[0].isalpha() and term[0] not in facility[1:]


def find_vial(identifier: str) -> Vial | None:
    return db.session.scalar(select(Vial).where(Vial.identifier == identifier.strip().upper()))


def fill_batch(user: User, batch: Batch, vial_count: int, viable_cells_per_vial: int, volume_ml: Decimal,
               cryoprotectant: str, viability_percent: Decimal, filled_at: dt.datetime, equipment: str,
               started_at: dt.datetime | None = None, reagent_ids: Iterable[int] = ()) -> list[Vial]:
    """Fill N vials in one transaction: each gets the batch identifier + a 3-digit division and
    starts in quarantine; the batch moves to quarantine. Refused while a critical entry awaits
    verification or before any passage."""
    require_role(user, Role.TECHNICIAN)
    _require_in_process(batch)
    started_at = started_at or filled_at
    problems = _step_problems(batch, started_at, filled_at, equipment)
    if not (cryoprotectant or "").strip():
        problems.append(("cryoprotectant", _("Name the cryoprotectant.")))
    last = batch.passages[-1] if batch.passages else None
    if last is None:
        problems.append(("vial_count", _("No passage is recorded: there are no cells to fill.")))
    elif started_at < last.step.started_at:
        problems.append(("started_at", _("The fill is before the last passage.")))
    pending = unverified_entries(batch)
    if pending:
        problems.append(("vial_count", _("%(n)d passage entries await second-person verification: %(list)s.",
                                         n=len(pending), list=", ".join(p.entry_label for p in pending))))
    problems += rules.fill_problems(vial_count, viable_cells_per_vial, volume_ml, viability_percent,
                                    last.harvested_viable_cells if last else None)
    reagents, reagent_problems = _reagents_for(reagent_ids, started_at.date())
    problems += reagent_problems
    if problems:
        raise refuse(_("Nothing was filled."), problems)
    expiry = filled_at.date() + dt.timedelta(days=setting("VIAL_SHELF_LIFE_DAYS"))
    with work(user, "batch.fill"):
        step = _add_step(user, batch, StepType.FILL, started_at, filled_at, equipment, reagents)
        db.session.add(Fill(batch=batch, step=step, vial_count=vial_count, viable_cells_per_vial=viable_cells_per_vial,
                            volume_ml=Decimal(volume_ml), cryoprotectant=cryoprotectant.strip(),
                            viability_percent=Decimal(viability_percent), filled_at=filled_at,
                            entered_by_id=user.id))
        vials = [Vial(identifier=vial_identifier(batch.identifier, division), batch=batch, division=division,
                      viable_cells=viable_cells_per_vial, volume_ml=Decimal(volume_ml),
                      cryoprotectant=cryoprotectant.strip(), filled_at=filled_at, expiry_date=expiry,
                      status=VialStatus.QUARANTINE) for division in range(1, vial_count + 1)]
        db.session.add_all(vials)
        apply_batch_transition(batch, BatchStatus.QUARANTINE)
    return vials


def verify_fill(user: User, fill: Fill, viable_cells_per_vial: int | None, viability_percent: Decimal | None,
                check: SignatureCheck) -> Fill:
    """Second-person verification of the fill's critical entries (EU GMP Annex 11 §6): a different
    user re-enters viable cells per vial and viability from the source record, then signs."""
    require_role(user, Role.TECHNICIAN, Role.QA)
    if fill.is_verified:
        raise RuleViolation(_("The fill is already verified."))
    if user.id == fill.entered_by_id:
        raise RuleViolation(_("A different person must verify the entry."), [_("You entered these values yourself.")])
    problems = []
    if viable_cells_per_vial != fill.viable_cells_per_vial:
        problems.append(("viable_cells_per_vial", _("Does not match the entered count. Check the source record.")))
    if viability_percent is None or Decimal(viability_percent) != fill.viability_percent:
        problems.append(("viability_percent", _("Does not match the entered viability. Check the source record.")))
    if problems:
        raise refuse(_("Verification failed: the values differ."), problems)
    with work(user, "batch.fill.verify") as session, session.no_autoflush:
        if fill.is_verified:  # re-read under the write lock
            raise RuleViolation(_("The fill is already verified."))
        fill.verified_by_id = user.id
        fill.verified_at = utcnow()
        sign(check, fill)
    return fill


# ---------------------------------------------------------------- states and custody
def record_custody_event(actor: Actor, vial: Vial, event_type: str, from_location: str | None = None,
                         to_location: str | None = None, note: str | None = None) -> VialEvent:
    """Append a custody event (inside the caller's unit of work)."""
    event = VialEvent(vial=vial, event_type=event_type, at=utcnow(), actor_id=actor.user_id, actor_name=actor.name,
                      from_location=from_location, to_location=to_location, note=note)
    db.session.add(event)
    return event


def apply_vial_transition(actor: Actor, vial: Vial, new_status: VialStatus, note: str | None = None) -> None:
    """Move a vial to ``new_status`` inside the caller's unit of work. A vial leaving the states
    that sit in storage gives up its position, and the custody trail records it."""
    new_status = VialStatus(new_status)
    check_vial_transition(VialStatus(vial.status), new_status)
    old = VialStatus(vial.status)
    vial.status = new_status
    location = vial.location
    if new_status not in IN_STORAGE_STATES and vial.box_id is not None:
        # Clear the relationship too: a loaded ``vial.box`` would outlive a cleared ``box_id``.
        vial.box = None
        vial.box_id = vial.row = vial.column = None
    record_custody_event(actor, vial, f"status.{new_status.value}", from_location=location,
                         to_location=vial.location, note=note or f"{old.value} -> {new_status.value}")


def transition_vial(user: User, vial: Vial, new_status: VialStatus | str, reason: str | None = None) -> Vial:
    """Change one vial's state (conditional on its version: a concurrent change is refused).
    Taking a vial out of use (destroyed, expired, recalled) and cancelling an allocation need a reason."""
    new_status = VialStatus(new_status)
    needs_reason = new_status in TERMINAL_VIAL_STATES or (
        new_status == VialStatus.AVAILABLE and vial.status == VialStatus.ALLOCATED)
    with work(user, f"vial.{new_status.value}", reason, reason_required=needs_reason):
        apply_vial_transition(actor_of(user), vial, new_status, note=reason)
    return vial


def create_tank(user: User, code: str, description: str | None = None) -> Tank:
    require_role(user, Role.TECHNICIAN, Role.QA)
    code = code.strip().upper()
    if not code or db.session.scalar(select(Tank.id).where(Tank.code == code)):
        raise refuse(_("The tank was not created."), [("code", _("Enter a new, unique code."))])
    with work(user, "storage.tank.create"):
        tank = Tank(code=code, description=(description or "").strip() or None)
        db.session.add(tank)
    return tank


def create_rack(user: User, tank: Tank, code: str) -> Rack:
    require_role(user, Role.TECHNICIAN, Role.QA)
    code = code.strip().upper()
    if not code or any(r.code == code for r in tank.racks):
        raise refuse(_("The rack was not created."), [("code", _("Enter a new, unique code."))])
    with work(user, "storage.rack.create"):
        rack = Rack(tank=tank, code=code)
        db.session.add(rack)
    return rack


def create_box(user: User, rack: Rack, code: str, rows: int, columns: int) -> Box:
    require_role(user, Role.TECHNICIAN, Role.QA)
    code = code.strip().upper()
    problems = []
    if not code or db.session.scalar(select(Box.id).where(Box.code == code)):
        problems.append(("code", _("Enter a new, unique code.")))
    if not 1 <= (rows or 0) <= 26:
        problems.append(("rows", _("1 to 26 rows.")))
    if not 1 <= (columns or 0) <= 26:
        problems.append(("columns", _("1 to 26 columns.")))
    if problems:
        raise refuse(_("The box was not created."), problems)
    with work(user, "storage.box.create"):
        box = Box(rack=rack, code=code, rows=rows, columns=columns)
        db.session.add(box)
    return box


def box_grid(box: Box) -> list[list[Vial | None]]:
    """rows × columns, each cell the vial there or None."""
    grid: list[list[Vial | None]] = [[None] * box.columns for _ in range(box.rows)]
    for vial in db.session.scalars(select(Vial).where(Vial.box_id == box.id)):
        grid[vial.row - 1][vial.column - 1] = vial  # type: ignore[operator]
    return grid


def free_positions(box: Box) -> list[tuple[int, int]]:
    grid = box_grid(box)
    return [(r + 1, c + 1) for r in range(box.rows) for c in range(box.columns) if grid[r][c] is None]


def store_vial(user: User, vial: Vial, box: Box, row: int, column: int, note: str | None = None) -> Vial:
    """Put a vial in a box position, or move it there: a custody event records who, when, from
    and to. A position holds one vial (the database refuses two)."""
    require_role(user, Role.TECHNICIAN, Role.PHARMACIST)
    problems = []
    if VialStatus(vial.status) not in IN_STORAGE_STATES:
        problems.append(("box_id", _("A %(s)s vial is not stored.", s=VialStatus(vial.status).value)))
    if not (1 <= row <= box.rows and 1 <= column <= box.columns):
        problems.append(("row", _("Box %(box)s has rows 1–%(r)d and columns 1–%(c)d.", box=box.code, r=box.rows,
                                  c=box.columns)))
    else:
        occupant = db.session.scalar(select(Vial).where(Vial.box_id == box.id, Vial.row == row, Vial.column == column))
        if occupant is not None and occupant.id != vial.id:
            problems.append(("row", _("%(pos)s in box %(box)s holds vial %(vial)s.", pos=position_label(row, column),
                                      box=box.code, vial=occupant.identifier)))
        elif occupant is not None:
            problems.append(("row", _("The vial is already there.")))
    if problems:
        raise refuse(_("The vial was not moved."), problems)
    before = vial.location
    with work(user, "vial.store" if before is None else "vial.move", note):
        vial.box = box
        vial.row, vial.column = row, column
        db.session.flush()
        record_custody_event(actor_of(user), vial, "stored" if before is None else "moved", before,
                             f"{box.location}/{position_label(row, column)}", (note or "").strip() or None)
    return vial


def store_vials_in_box(user: User, vials: list[Vial], box: Box) -> list[Vial]:
    """Store several unstored vials into the first free positions of a box, in one transaction."""
    require_role(user, Role.TECHNICIAN)
    unstored = [v for v in vials if v.box_id is None and VialStatus(v.status) in IN_STORAGE_STATES]
    free = free_positions(box)
    if len(unstored) > len(free):
        raise refuse(_("The vials were not stored."), [("box_id", _(
            "Box %(box)s has %(n)d free positions for %(m)d vials.", box=box.code, n=len(free), m=len(unstored)))])
    with work(user, "vial.store"):
        actor = actor_of(user)
        for vial, (row, column) in zip(unstored, free):
            vial.box = box
            vial.row, vial.column = row, column
            db.session.flush()
            record_custody_event(actor, vial, "stored", None, f"{box.location}/{position_label(row, column)}")
    return unstored


def custody_events(vial: Vial) -> list[VialEvent]:
    return list(db.session.scalars(select(VialEvent).where(VialEvent.vial_id == vial.id)
                                   .order_by(VialEvent.at, VialEvent.id)))


# ---------------------------------------------------------------- label accounting
def label_prints_of(batch: Batch) -> list[LabelPrint]:
    return list(db.session.scalars(select(LabelPrint).where(LabelPrint.batch_id == batch.id)
                                   .order_by(LabelPrint.printed_at, LabelPrint.id)))


def record_vial_label_print(user: User | None, batch: Batch, reason: str | None = None,
                            actor: Actor | None = None) -> LabelPrint:
    """Count a print of the batch's vial labels; any reprint needs a reason (label reconciliation)."""
    vials = vials_of(batch)
    if not vials:
        raise RuleViolation(_("Batch %(id)s has no vials to label.", id=batch.identifier))
    actor = actor or actor_of(user)  # type: ignore[arg-type]
    reprint = any(v.label_prints > 0 for v in vials)
    if reprint and not (reason and reason.strip()):
        raise refuse(_("A reprint needs a reason."), [("reason", _("State why the labels are printed again."))])
    from labsys.audit.services import unit_of_work

    with unit_of_work(actor, "label.print.vial", reason):
        for vial in vials:
            vial.label_prints += 1
        entry = LabelPrint(kind=LabelKind.VIAL, batch_id=batch.id, labels=len(vials), is_reprint=reprint,
                           reason=(reason or "").strip() or None, printed_at=utcnow(), printed_by_id=actor.user_id,
                           printed_by_name=actor.name)
        db.session.add(entry)
        record_event(actor, "label.print", "batches", batch.id,
                     {"kind": "vial", "labels": len(vials), "reprint": reprint})
    return entry


def record_box_label_print(user: User, box: Box, reason: str | None = None) -> LabelPrint:
    earlier = db.session.scalar(select(LabelPrint.id).where(LabelPrint.box_id == box.id).limit(1))
    if earlier and not (reason and reason.strip()):
        raise refuse(_("A reprint needs a reason."), [("reason", _("State why the labels are printed again."))])
    with work(user, "label.print.box", reason):
        entry = LabelPrint(kind=LabelKind.BOX, box_id=box.id, labels=1, is_reprint=bool(earlier),
                           reason=(reason or "").strip() or None, printed_at=utcnow(), printed_by_id=user.id,
                           printed_by_name=actor_of(user).name)
        db.session.add(entry)
    return entry
