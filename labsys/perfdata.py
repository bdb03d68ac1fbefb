"""``flask --app wsgi perf-data --vials 100000``: a volume database for benchmarks.

It fills the database with a year of a busy lab's history in proportion to ``--vials``: per ten
vials one batch (donor, cord, process steps, verified passages and fill, stored vials, verified
QC results, QA decision with e-signature), per hundred vials one approved potency run testing ten
lots, per fifty vials one screened patient, and about ten audit entries per vial.

The rows obey the application's invariants: each vial's status is the one its custody events
lead to, every released or rejected lot has its signed decision (with the rule evaluation the
real release rules give), and every row carries the audit entry the services would have written,
chained with the audit service's own hashing (``chained_entries``), so ``flask audit verify``
passes. For speed the rows are built in Python and written with SQLAlchemy Core ``insert()``
executemany in large chunks inside one transaction, not through the ORM and ``unit_of_work``.

The demo users and demo data set are loaded first (with the real services) when missing; the
generated history lies between the demo specification's approval and yesterday.
"""
from __future__ import annotations

import datetime as dt
import gc
import heapq
import math
import itertools
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import Connection, func, select, text

from labsys.audit.models import GENESIS_HASH, AuditEntry
from labsys.audit.services import Actor, chained_entries, values_hash
from labsys.auth.models import Signature, SignatureMeaning, User
from labsys.auth.services import actor_of
from labsys.batches.models import (Batch, Box, Cord, Donor, Fill, Passage, ProcessStep, Rack, StepType, Tank,
                                   TissueMethod, Vial, VialEvent, position_label)
from labsys.batches.rules import Eligibility, MarkerResult, ScreeningOutcome
from labsys.batches.states import BatchStatus, VialStatus
from labsys.db import lock_audit_chain, utcnow
from labsys.documents.isbt import donation_identifier, mod37_2_check, vial_identifier
from labsys.extensions import db
from labsys.potency.models import LotResult, PotencyRun
from labsys.potency.states import RunState
from labsys.release.decisions import evaluation_snapshot
from labsys.release.models import DecisionKind, QCResult, ReleaseDecision
from labsys.release.rules import BatchFacts, PotencyFact, ResultFact, evaluate_release
from labsys.trial.models import EligibilityStatus, Patient, Sex

VIALS_PER_BATCH = 10
BATCHES_PER_RUN = 10
VIALS_PER_PATIENT = 50
BOX_ROWS = BOX_COLUMNS = 9
BOXES_PER_RACK = 10
RACKS_PER_TANK = 20
CHUNK = 20_000
EQUIPMENT = "BSC-02, CO2-INC-01"
CRYOPROTECTANT = "10% DMSO in CryoStor"
MARKERS = ("hiv_ab", "hiv_nat", "hbsag", "anti_hbc", "hcv_ab", "hcv_nat", "syphilis", "htlv", "cmv")
# Passing QC results as the demo enters them: value, unit, method.
QC_RESULTS = {
    "APPEARANCE": ("conforms", None, "Visual inspection"),
    "VIABLE_CELLS": (Decimal("10.0"), "x10^6 cells/vial", "Automated cell count, AO/PI (target 10 ±20 %)"),
    "VIABILITY": (Decimal("93.0"), "%", "AO/PI"),
    "CD73": (Decimal("98.7"), "%", "Flow cytometry"), "CD90": (Decimal("98.7"), "%", "Flow cytometry"),
    "CD105": (Decimal("98.7"), "%", "Flow cytometry"), "CD34": (Decimal("0.6"), "%", "Flow cytometry"),
    "CD45": (Decimal("0.6"), "%", "Flow cytometry"), "CD11B": (Decimal("0.6"), "%", "Flow cytometry"),
    "CD19": (Decimal("0.6"), "%", "Flow cytometry"), "HLA_DR": (Decimal("0.6"), "%", "Flow cytometry"),
    "STERILITY": ("no growth", None, "BacT/ALERT, 14 days (Ph. Eur. 2.6.27)"),
    "MYCOPLASMA": ("negative", None, "PCR (Ph. Eur. 2.6.7)"),
    "ENDOTOXIN": (Decimal("0.08"), "EU/mL", "LAL kinetic chromogenic"),
    "KARYOTYPE": ("normal", None, "G-banding"),
}
REJECTED_ENDOTOXIN = Decimal("0.90")  # above the 0.5 EU/mL limit: the reason a lot is rejected


class RealDataPresent(click.ClickException):
    pass


@dataclass
class Plan:
    vials: int
    batches: int
    runs: int
    patients: int

    @classmethod
    def for_vials(cls, vials: int) -> "Plan":
        batches = max(1, round(vials / VIALS_PER_BATCH))
        return cls(vials=batches * VIALS_PER_BATCH, batches=batches, runs=-(-batches // BATCHES_PER_RUN),
                   patients=max(1, round(vials / VIALS_PER_PATIENT)))


@dataclass
class Generated:
    rows: dict[str, int] = field(default_factory=dict)
    audit_entries: int = 0
    seconds: float = 0.0


def real_users(session) -> list[str]:
    """Users that are not demo users: their presence means the database holds real work."""
    from labsys.cli import DEMO_USERS

    demo = {username for username, _, _ in DEMO_USERS}
    return sorted(u for u in session.scalars(select(User.username)) if u not in demo)


def ensure_demo_base() -> None:
    """The demo users and data set, through the real services (idempotent)."""
    from labsys.cli import ensure_demo_users
    from labsys.navigation import demo_loaders

    ensure_demo_users()
    for loader in demo_loaders(current_app):
        loader()


class Ids:
    """Primary keys handed out in Python (the rows are inserted with their ids)."""

    def __init__(self) -> None:
        self.connection = None
        self.next: dict[str, Any] = {}

    def __call__(self, model: Any) -> int:
        name = model.__tablename__
        if name not in self.next:
            start = (self.connection.scalar(select(func.max(model.id))) or 0) + 1
            self.next[name] = itertools.count(start)
        return next(self.next[name])


class Chain:
    """Audit rows of the generated history, emitted to the chain in time order.

    Rows are pushed with their time; ``emit_before(moment)`` appends, in time order, every row
    older than ``moment`` (no later push is older). A row may carry ``before_hash``, called with
    the chain head just before the row is hashed (a decision records the head at signing)."""

    def __init__(self, connection, seq: int, head: str) -> None:
        self.connection = connection
        self.seq, self.head = seq, head
        self.heap: list[tuple] = []
        self.counter = itertools.count()
        self.buffer: list[dict[str, Any]] = []
        self.written = 0

    def push(self, at: dt.datetime, actor: Actor, action: str, entity_type: str, entity_id: Any,
             old: dict | None, new: dict | None, reason: str | None = None,
             before_hash: Callable[[str], None] | None = None) -> None:
        row = {"at": at, "actor": actor, "action": action, "entity_type": entity_type,
               "entity_id": None if entity_id is None else str(entity_id), "old": old, "new": new,
               "reason": reason, "before_hash": before_hash}
        heapq.heappush(self.heap, (at, next(self.counter), row))

    def emit_before(self, moment: dt.datetime | None) -> None:
        while self.heap and (moment is None or self.heap[0][0] < moment):
            row = heapq.heappop(self.heap)[2]
            if row["before_hash"] is not None:
                row["before_hash"](self.head)
            entry = chained_entries([row], self.seq, self.head)[0]
            self.seq, self.head = entry["seq"], entry["hash"]
            self.buffer.append(entry)
            if len(self.buffer) >= CHUNK:
                self._write()
        if moment is None:
            self._write()

    def _write(self) -> None:
        if not self.buffer:
            return
        write_audit_rows(self.connection, self.buffer)
        self.written += len(self.buffer)
        self.buffer = []


def write_audit_rows(connection: Connection, rows: list[dict]) -> None:
    """Insert prepared (chained and hashed) audit entries in bulk.

    PostgreSQL counts entries with a statement-level trigger (labsys.audit.counts), and psycopg's
    executemany sends one INSERT per row: each would update the same counter rows again, and one
    transaction's versions of a row form a chain that every later update walks (the load slowed
    from seconds to minutes per 1,000 lots). Multi-row INSERTs fire the trigger once per few
    thousand entries; parameters stay < 65,535. SQLite's trigger is per row either way."""
    table = AuditEntry.__table__
    if connection.dialect.name == "postgresql":
        rows_per_statement = 65_000 // len(table.c)
        for offset in range(0, len(rows), rows_per_statement):
            connection.execute(table.insert().values(rows[offset:offset + rows_per_statement]))
    else:
        connection.execute(table.insert(), rows)


def _money(value: float, places: str = "0.1") -> Decimal:
    return Decimal(str(value)).quantize(Decimal(places))


class Generator:
    def __init__(self, plan: Plan, seed: int = 2026) -> None:
        self.plan = plan
        self.random = random.Random(seed)
        self.session = db.session
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.ids = Ids()

    # ------------------------------------------------------------------ set-up
    def _user(self, username: str) -> User:
        user = self.session.scalar(select(User).where(User.username == username))
        if user is None:
            raise click.ClickException(f"demo user {username} is missing")
        return user

    def _add(self, model: Any, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.setdefault(model.__tablename__, []).append(row)
        return row

    def prepare(self) -> None:
        from labsys.release import specs
        from labsys.trial.services import get_trial

        users = {name: self._user(name) for name in ("technician", "technician2", "qa", "qa2", "investigator")}
        self.user_ids = {name: user.id for name, user in users.items()}
        self.actors = {name: actor_of(user) for name, user in users.items()}
        self.names = {name: user.full_name for name, user in users.items()}
        version = specs.current_version()
        trial = get_trial()
        if version is None or version.approved_at is None or trial is None:
            raise click.ClickException("the demo specification and trial are missing; run demo-data first")
        self.spec_version_id = version.id
        self.criteria = version.rule_criteria()
        self.trial_id = trial.id
        self.facility = current_app.config["FACILITY_CODE"]
        self.shelf_life = int(current_app.config.get("VIAL_SHELF_LIFE_DAYS", 365))
        self.passage_limit = int(current_app.config.get("MAX_PASSAGE", 5))
        self.now = utcnow().replace(microsecond=0)
        self.window_start = version.approved_at + dt.timedelta(days=1)
        self.window_end = self.now - dt.timedelta(days=42)
        if self.window_end <= self.window_start:
            raise click.ClickException("the specification was approved too recently for a year of history")
        self.sequences: dict[int, int] = {}
        for year, top in self.session.execute(select(Batch.year, func.max(Batch.sequence)).where(
                Batch.facility_code == self.facility).group_by(Batch.year)):
            self.sequences[year] = top
        self.run_number = self.session.scalar(select(func.count(PotencyRun.id))) or 0
        self.patient_number = self.session.scalar(select(func.count(Patient.id))) or 0
        self.donor_number = self.session.scalar(select(func.count(Donor.id))) or 0
        self.box_number = self.session.scalar(select(func.count(Box.id))) or 0
        self.tank_number = self.session.scalar(select(func.count(Tank.id))) or 0
        self.free_positions: list[tuple[dict, int, int]] = []
        self.boxes_in_rack = BOXES_PER_RACK
        self.racks_in_tank = RACKS_PER_TANK
        self.rack: dict | None = None
        self.tank: dict | None = None

    # ------------------------------------------------------------------ helpers
    def _sign(self, at: dt.datetime, who: str, meaning: SignatureMeaning, entity_type: str, entity_id: int,
              values: dict[str, Any] | None, comment: str, action: str) -> dict[str, Any]:
        row = self._add(Signature, {
            "id": self.ids(Signature), "user_id": self.user_ids[who], "printed_name": self.names[who],
            "meaning": meaning, "signed_at": at, "entity_type": entity_type, "entity_id": str(entity_id),
            "record_hash": None if values is None else values_hash(entity_type, values), "comment": comment})
        self.chain.push(at, self.actors[who], action, "signatures", row["id"], None, row)
        return row

    def _next_position(self, at: dt.datetime) -> tuple[dict, int, int]:
        if not self.free_positions:
            if self.rack is None or self.boxes_in_rack >= BOXES_PER_RACK:
                if self.tank is None or self.racks_in_tank >= RACKS_PER_TANK:
                    self.tank_number += 1
                    self.tank = self._add(Tank, {"id": self.ids(Tank), "code": f"LN2-P{self.tank_number:03d}",
                                                 "description": "Vapour-phase liquid nitrogen (volume data)"})
                    self.chain.push(at, self.actors["technician"], "storage.tank.create", "storage_tanks",
                                    self.tank["id"], None, dict(self.tank))
                    self.racks_in_tank = 0
                self.racks_in_tank += 1
                self.rack = self._add(Rack, {"id": self.ids(Rack), "tank_id": self.tank["id"],
                                             "code": f"R{self.racks_in_tank:02d}"})
                self.chain.push(at, self.actors["technician"], "storage.rack.create", "storage_racks",
                                self.rack["id"], None, dict(self.rack))
                self.boxes_in_rack = 0
            self.boxes_in_rack += 1
            self.box_number += 1
            box = self._add(Box, {"id": self.ids(Box), "rack_id": self.rack["id"], "code": f"PX-{self.box_number:06d}",
                                  "rows": BOX_ROWS, "columns": BOX_COLUMNS})
            box["location"] = f"{self.tank['code']}/{self.rack['code']}/{box['code']}"
            self.chain.push(at, self.actors["technician"], "storage.box.create", "storage_boxes", box["id"], None,
                            {k: v for k, v in box.items() if k != "location"})
            self.free_positions = [(box, r, c) for r in range(BOX_ROWS, 0, -1) for c in range(BOX_COLUMNS, 0, -1)]
        return self.free_positions.pop()

    # ------------------------------------------------------------------ one lot
    def batch(self, number: int, start: dt.datetime, outcome: str) -> dict[str, Any] | None:
        """One lot from donor to storage (and its QC results); returns what the decision needs."""
        r = self.random
        tech, tech2, qa2 = self.actors["technician"], self.actors["technician2"], self.actors["qa2"]
        self.donor_number += 1
        registered = start - dt.timedelta(days=2)
        donor = self._add(Donor, {
            "id": self.ids(Donor), "code": f"D-P{self.donor_number:07d}",
            "consent_date": (start - dt.timedelta(days=30)).date(), "screening_outcome": ScreeningOutcome.ACCEPTABLE,
            "specimen_date": (start - dt.timedelta(days=1)).date(),
            **{m: MarkerResult.NON_REACTIVE for m in MARKERS},
            "eligibility": Eligibility.PENDING, "eligibility_determined_at": None, "eligibility_determined_by_id": None,
            "created_at": registered, "created_by_id": self.user_ids["technician"], "version": 1})
        self.chain.push(registered, tech, "donor.register", "donors", donor["id"], None, dict(donor))
        determined = registered + dt.timedelta(hours=1)
        donor.update(eligibility=Eligibility.ELIGIBLE, eligibility_determined_at=determined,
                     eligibility_determined_by_id=self.user_ids["qa2"], version=2)
        self.chain.push(determined, qa2, "donor.determine_eligibility", "donors", donor["id"],
                        {"eligibility": Eligibility.PENDING, "eligibility_determined_at": None,
                         "eligibility_determined_by_id": None},
                        {"eligibility": Eligibility.ELIGIBLE, "eligibility_determined_at": determined,
                         "eligibility_determined_by_id": self.user_ids["qa2"]})
        self._sign(determined, "qa2", SignatureMeaning.APPROVED, "donors", donor["id"], dict(donor),
                   "donor eligible", "donor.determine_eligibility")
        collected = start - dt.timedelta(hours=8)
        cord = self._add(Cord, {
            "id": self.ids(Cord), "donor_id": donor["id"], "collected_at": collected,
            "received_at": collected + dt.timedelta(hours=6), "transport_temperature_c": _money(r.uniform(3, 7)),
            "weight_g": _money(r.uniform(25, 55)), "inspection": "conforms", "inspection_note": None,
            "delivery_type": "caesarean" if r.random() < 0.6 else "vaginal", "gestational_age_weeks": r.randint(37, 41),
            "status": "accepted", "received_by_id": self.user_ids["technician"]})
        from labsys.batches.models import CordStatus, DeliveryType, Inspection

        cord["inspection"] = Inspection.CONFORMS
        cord["delivery_type"] = DeliveryType(cord["delivery_type"])
        cord["status"] = CordStatus.ACCEPTED
        self.chain.push(cord["received_at"], tech, "cord.receive", "cords", cord["id"], None, dict(cord))
        year = start.year % 100
        sequence = self.sequences.get(year, 0) + 1
        self.sequences[year] = sequence
        identifier = donation_identifier(self.facility, year, sequence)
        batch = self._add(Batch, {
            "id": self.ids(Batch), "identifier": identifier, "check_character": mod37_2_check(identifier),
            "facility_code": self.facility, "year": year, "sequence": sequence, "cord_id": cord["id"],
            "status": BatchStatus.IN_PROCESS, "started_at": start, "started_by_id": self.user_ids["technician"],
            "version": 1})
        self.chain.push(start, tech, "batch.start", "batches", batch["id"], None, dict(batch))

        def step(step_type: StepType, begin: dt.datetime, end: dt.datetime, action: str,
                 method: TissueMethod | None = None) -> dict:
            row = self._add(ProcessStep, {
                "id": self.ids(ProcessStep), "batch_id": batch["id"], "step_type": step_type, "method": method,
                "operator_id": self.user_ids["technician"], "started_at": begin, "ended_at": end,
                "equipment": EQUIPMENT, "notes": None, "recorded_at": end})
            self.chain.push(end, tech, action, "process_steps", row["id"], None, dict(row))
            return row

        tissue_start = start + dt.timedelta(hours=1)
        step(StepType.TISSUE_PROCESSING, tissue_start, tissue_start + dt.timedelta(hours=2),
             "batch.step.tissue_processing", TissueMethod.EXPLANT)
        passages = 1 if outcome == "in_process" else 4
        cells = r.randint(3_000_000, 5_000_000)
        cumulative = Decimal("0")
        last_end = tissue_start
        for number_ in range(passages):
            begin = tissue_start + dt.timedelta(days=1 if number_ == 0 else 11 + 4 * (number_ - 1))
            end = begin + dt.timedelta(days=3 if number_ else 10)
            seeded = None if number_ == 0 else cells
            harvested = cells if number_ == 0 else cells * r.randint(5, 7)
            doublings = None if seeded is None else Decimal(str(round(math.log2(harvested / seeded), 3)))
            cumulative += doublings or Decimal("0")
            row = step(StepType.P0 if number_ == 0 else StepType.PASSAGE, begin, end, "batch.passage.record")
            passage = self._add(Passage, {
                "id": self.ids(Passage), "batch_id": batch["id"], "step_id": row["id"], "passage_number": number_,
                "seeded_viable_cells": seeded, "harvested_viable_cells": harvested,
                "viability_percent": _money(94.5 - number_ + r.uniform(-1, 1), "0.01"),
                "confluence_percent": Decimal("85.00"), "flask_count": 2 + number_ * 2,
                "population_doublings": doublings, "cumulative_population_doublings": cumulative,
                "entered_by_id": self.user_ids["technician"], "verified_by_id": None, "verified_at": None,
                "version": 1})
            self.chain.push(end, tech, "batch.passage.record", "passages", passage["id"], None, dict(passage))
            verified = end + dt.timedelta(hours=2)
            passage.update(verified_by_id=self.user_ids["technician2"], verified_at=verified, version=2)
            self.chain.push(verified, tech2, "batch.passage.verify", "passages", passage["id"],
                            {"verified_at": None, "verified_by_id": None},
                            {"verified_at": verified, "verified_by_id": self.user_ids["technician2"]})
            self._sign(verified, "technician2", SignatureMeaning.VERIFIED, "passages", passage["id"], dict(passage),
                       "verified against the source record", "batch.passage.verify")
            cells = harvested
            last_end = verified
        if outcome == "in_process":
            return None
        fill_start = last_end + dt.timedelta(hours=1)
        filled_at = fill_start + dt.timedelta(hours=1)
        fill_step = step(StepType.FILL, fill_start, filled_at, "batch.fill")
        cells_per_vial = 10_000_000
        fill = self._add(Fill, {
            "id": self.ids(Fill), "batch_id": batch["id"], "step_id": fill_step["id"], "vial_count": VIALS_PER_BATCH,
            "viable_cells_per_vial": cells_per_vial, "volume_ml": Decimal("5.00"), "cryoprotectant": CRYOPROTECTANT,
            "viability_percent": Decimal("93.00"), "filled_at": filled_at,
            "entered_by_id": self.user_ids["technician"], "verified_by_id": None, "verified_at": None, "version": 1})
        self.chain.push(filled_at, tech, "batch.fill", "fills", fill["id"], None, dict(fill))
        expiry = filled_at.date() + dt.timedelta(days=self.shelf_life)
        vials = []
        for division in range(1, VIALS_PER_BATCH + 1):
            vial = self._add(Vial, {
                "id": self.ids(Vial), "identifier": vial_identifier(identifier, division), "batch_id": batch["id"],
                "division": division, "viable_cells": cells_per_vial, "volume_ml": Decimal("5.00"),
                "cryoprotectant": CRYOPROTECTANT, "filled_at": filled_at, "expiry_date": expiry,
                "status": VialStatus.QUARANTINE, "box_id": None, "row": None, "column": None, "label_prints": 0,
                "version": 1})
            self.chain.push(filled_at, tech, "batch.fill", "vials", vial["id"], None, dict(vial))
            vials.append(vial)
        batch.update(status=BatchStatus.QUARANTINE, version=2)
        self.chain.push(filled_at, tech, "batch.fill", "batches", batch["id"], {"status": BatchStatus.IN_PROCESS},
                        {"status": BatchStatus.QUARANTINE})
        fill_verified = filled_at + dt.timedelta(hours=1)
        fill.update(verified_by_id=self.user_ids["technician2"], verified_at=fill_verified, version=2)
        self.chain.push(fill_verified, tech2, "batch.fill.verify", "fills", fill["id"],
                        {"verified_at": None, "verified_by_id": None},
                        {"verified_at": fill_verified, "verified_by_id": self.user_ids["technician2"]})
        self._sign(fill_verified, "technician2", SignatureMeaning.VERIFIED, "fills", fill["id"], dict(fill),
                   "verified against the source record", "batch.fill.verify")
        stored_at = fill_verified + dt.timedelta(hours=1)
        for vial in vials:
            box, row_, column = self._next_position(stored_at)
            vial.update(box_id=box["id"], row=row_, column=column, version=2)
            vial["_location"] = f"{box['location']}/{position_label(row_, column)}"
            self.chain.push(stored_at, tech, "vial.store", "vials", vial["id"],
                            {"box_id": None, "row": None, "column": None},
                            {"box_id": box["id"], "row": row_, "column": column})
            self._event(stored_at, "technician", vial, "stored", None, vial["_location"], None, "vial.store")
        # QC results, entered a week after fill (sterility after its 14-day culture) and verified.
        results: dict[str, ResultFact] = {}
        for code, (value, unit, method) in QC_RESULTS.items():
            if code == "ENDOTOXIN" and outcome == "rejected":
                value = REJECTED_ENDOTOXIN
            entered = filled_at + dt.timedelta(days=15 if code == "STERILITY" else 7, minutes=r.randint(0, 600))
            numeric = value if isinstance(value, Decimal) else None
            result = self._add(QCResult, {
                "id": self.ids(QCResult), "batch_id": batch["id"], "specification_version_id": self.spec_version_id,
                "test_code": code, "numeric_value": numeric, "text_value": None if numeric is not None else value,
                "unit": unit, "pending": False, "method": method, "instrument": "QC-LAB-01",
                "performed_by": "QC Analyst", "performed_on": entered.date(), "entered_at": entered,
                "entered_by_id": self.user_ids["technician"], "verified_at": None, "verified_by_id": None,
                "supersedes_id": None, "superseded_by_id": None, "correction_reason": None,
                "panel_key": "flow" if method == "Flow cytometry" else None, "version": 1})
            self.chain.push(entered, tech, "qc_result.enter", "qc_results", result["id"], None, dict(result))
            verified = entered + dt.timedelta(hours=20)
            result.update(verified_at=verified, verified_by_id=self.user_ids["technician2"], version=2)
            self.chain.push(verified, tech2, "qc_result.verify", "qc_results", result["id"],
                            {"verified_at": None, "verified_by_id": None},
                            {"verified_at": verified, "verified_by_id": self.user_ids["technician2"]})
            results[code] = ResultFact(numeric_value=numeric, text_value=None if numeric is not None else value,
                                       unit=unit)
        return {"batch": batch, "vials": vials, "results": results, "filled_at": filled_at,
                "results_done": filled_at + dt.timedelta(days=17)}

    def _event(self, at: dt.datetime, who: str, vial: dict, event_type: str, from_location: str | None,
               to_location: str | None, note: str | None, action: str) -> None:
        event = self._add(VialEvent, {
            "id": self.ids(VialEvent), "vial_id": vial["id"], "event_type": event_type, "at": at,
            "actor_id": self.user_ids[who], "actor_name": self.actors[who].name, "from_location": from_location,
            "to_location": to_location, "note": note, "witness_id": None, "witness_name": None,
            "temperature_c": None, "order_id": None})
        self.chain.push(at, self.actors[who], action, "vial_events", event["id"], None, event)

    def potency_run(self, lots: list[dict[str, Any]]) -> tuple[dt.datetime, dict[str, Decimal], str]:
        """One approved BV2 run testing these lots (scored elsewhere: no field images are stored)."""
        r = self.random
        tech, qa = self.actors["technician"], self.actors["qa"]
        self.run_number += 1
        created = max(lot["filled_at"] for lot in lots) + dt.timedelta(days=3)
        approved = created + dt.timedelta(days=4)
        identifiers = [lot["batch"]["identifier"] for lot in lots]
        run = self._add(PotencyRun, {
            "id": self.ids(PotencyRun), "code": f"PR-P{self.run_number:06d}", "assay_date": created.date(),
            "operator_id": self.user_ids["technician"], "bv2_passage": r.randint(8, 20), "lps_lot": "LPS-PERF-01",
            "lps_ng_per_ml": 100.0, "test_lots": identifiers, "reference_lot": None, "plate_format": 96,
            "pixel_size_um": 0.65, "image_channel": None, "measure": "activation_fraction", "is_validation": False,
            "parameter_set_name": "bv2-default", "parameter_set_version": 1, "min_cells_per_field": 30,
            "max_replicate_cv_percent": 20.0, "min_z_prime": 0.4, "reference_min_inhibition": None,
            "reference_max_inhibition": None, "state": RunState.DRAFT, "fields_total": 0, "fields_done": 0,
            "fields_failed": 0, "valid": None, "validity": None, "z_prime": None, "lps_score": None,
            "unstim_score": None, "scored_at": None, "approved_at": None, "notes": "volume data", "created_at": created,
            "version": 1})
        self.chain.push(created, tech, "potency.run.create", "potency_runs", run["id"], None, dict(run))
        lps, unstim = round(r.uniform(0.70, 0.80), 4), round(r.uniform(0.08, 0.12), 4)
        inhibitions = {}
        for identifier in identifiers:
            inhibition = round(r.uniform(30, 55), 2)
            score = round(lps - (lps - unstim) * inhibition / 100, 4)
            result = self._add(LotResult, {
                "id": self.ids(LotResult), "run_id": run["id"], "lot_identifier": identifier, "role": "test",
                "ratio": "all", "well_count": 6, "score": score, "cv_percent": round(r.uniform(3, 12), 2),
                "percent_inhibition": inhibition, "relative_potency": None})
            self.chain.push(approved - dt.timedelta(days=1), tech, "potency.scoring.finish", "potency_lot_results",
                            result["id"], None, dict(result))
            inhibitions[identifier] = Decimal(str(inhibition))
        scored = approved - dt.timedelta(days=1)
        old = {"state": RunState.DRAFT, "valid": None, "validity": None, "z_prime": None, "lps_score": None,
               "unstim_score": None, "scored_at": None, "approved_at": None}
        new = {"state": RunState.APPROVED, "valid": True, "validity": [], "z_prime": round(r.uniform(0.5, 0.8), 3),
               "lps_score": lps, "unstim_score": unstim, "scored_at": scored, "approved_at": approved}
        run.update(new, version=2)
        self.chain.push(approved, qa, "potency.run.approve", "potency_runs", run["id"], old, new)
        self._sign(approved, "qa", SignatureMeaning.APPROVED, "potency_runs", run["id"], dict(run),
                   "run valid", "potency.run.approve")
        return approved, inhibitions, run["code"]

    def decide(self, lot: dict[str, Any], at: dt.datetime, inhibition: Decimal, run_code: str, release: bool) -> None:
        """QA's signed decision, with the evaluation the real release rules give for these facts."""
        batch, qa = lot["batch"], self.actors["qa"]
        facts = BatchFacts(donor_eligible=True, open_deviation_count=0, max_passage=3,
                           passage_limit=self.passage_limit, unverified_result_count=0,
                           potency=PotencyFact(inhibition, True, run_code), results=lot["results"])
        evaluation = evaluate_release(self.criteria, facts)
        kind = DecisionKind.RELEASED if release else DecisionKind.REJECTED
        old_status = batch["status"]
        batch.update(status=BatchStatus(kind.value), version=3)
        action = "lot.release" if release else "lot.reject"
        comment = "meets specification" if release else "endotoxin above the specification limit"
        decision = self._add(ReleaseDecision, {
            "id": self.ids(ReleaseDecision), "batch_id": batch["id"], "specification_version_id": self.spec_version_id,
            "decision": kind, "decided_at": at, "decided_by_id": self.user_ids["qa"], "comment": comment,
            "evaluation_json": evaluation_snapshot(evaluation), "chain_head_hash": None,
            "certificate_number": f"COA-{batch['identifier']}"})
        signed: dict[str, dict[str, Any]] = {}

        def at_signing(head: str) -> None:
            """The decision keeps the chain head at signing; its signature binds that version."""
            decision["chain_head_hash"] = head
            signed["signature"]["record_hash"] = values_hash("release_decisions", decision)

        self.chain.push(at, qa, action, "batches", batch["id"], {"status": old_status},
                        {"status": BatchStatus(kind.value)}, comment, before_hash=at_signing)
        for vial in lot["vials"]:
            location = vial.pop("_location")
            if release:
                vial.update(status=VialStatus.AVAILABLE, version=3)
                self.chain.push(at, qa, action, "vials", vial["id"], {"status": VialStatus.QUARANTINE},
                                {"status": VialStatus.AVAILABLE}, comment)
                self._event(at, "qa", vial, "status.available", location, location, f"lot {kind.value}", action)
            else:
                old = {"status": VialStatus.QUARANTINE, "box_id": vial["box_id"], "row": vial["row"],
                       "column": vial["column"]}
                vial.update(status=VialStatus.DESTROYED, box_id=None, row=None, column=None, version=3)
                self.chain.push(at, qa, action, "vials", vial["id"], old,
                                {"status": VialStatus.DESTROYED, "box_id": None, "row": None, "column": None}, comment)
                self._event(at, "qa", vial, "status.destroyed", location, None, "lot rejected; pending disposal",
                            action)
        self.chain.push(at, qa, action, "release_decisions", decision["id"], None, decision, comment)
        signed["signature"] = self._sign(at, "qa", SignatureMeaning.RELEASED if release else SignatureMeaning.REJECTED,
                                         "release_decisions", decision["id"], None, comment, action)

    def patient(self, at: dt.datetime) -> None:
        r = self.random
        self.patient_number += 1
        age = r.randint(18, 75)
        row = self._add(Patient, {
            "id": self.ids(Patient), "trial_id": self.trial_id, "screening_number": f"SCR-P{self.patient_number:06d}",
            "study_id": None, "kit_number": None, "year_of_birth": at.year - age, "age_years": age,
            "sex": Sex.MALE if r.random() < 0.55 else Sex.FEMALE, "weight_kg": _money(r.uniform(45, 110)),
            "weight_date": at.date(), "consent_date": at.date(), "diagnosis_confirmed": True,
            "exclusion_answers": "{}", "eligibility": EligibilityStatus.ELIGIBLE, "enrolled_at": at,
            "enrolled_by_id": self.user_ids["investigator"], "randomized_at": None, "randomized_by_id": None,
            "admission_date": (at - dt.timedelta(days=2)).date(), "discharge_date": None, "vital_status_day90": None,
            "death_date": None, "version": 1})
        self.chain.push(at, self.actors["investigator"], "trial.enrol", "trial_patients", row["id"], None, dict(row))

    # ------------------------------------------------------------------ the whole history
    def run(self, connection, echo: Callable[[str], None]) -> Generated:
        plan = self.plan
        started = time.perf_counter()
        self.ids.connection = connection
        head = connection.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
        self.chain = Chain(connection, head.seq if head else 0, head.hash if head else GENESIS_HASH)
        span = (self.window_end - self.window_start) / plan.batches
        in_process = max(1, plan.batches // 100)
        patients_per_batch = plan.patients / plan.batches
        patients_made = 0
        group: list[dict[str, Any]] = []
        for index in range(plan.batches):
            start = self.window_start + span * index + dt.timedelta(seconds=self.random.randint(0, 3600))
            outcome = "in_process" if index >= plan.batches - in_process else (
                "rejected" if index % 25 == 7 else "released")
            lot = self.batch(index, start, outcome)
            if lot is not None:
                lot["outcome"] = outcome
                group.append(lot)
            while patients_made < round((index + 1) * patients_per_batch):
                self.patient(start + dt.timedelta(minutes=self.random.randint(0, 600)))
                patients_made += 1
            if len(group) == BATCHES_PER_RUN or (index == plan.batches - 1 and group):
                approved, inhibitions, run_code = self.potency_run(group)
                for lot in group:
                    at = max(approved, lot["results_done"]) + dt.timedelta(hours=2, minutes=self.random.randint(0, 300))
                    if at >= self.now - dt.timedelta(hours=1):
                        for vial in lot["vials"]:
                            vial.pop("_location", None)
                        continue  # still awaiting QA: the lot stays in quarantine
                    self.decide(lot, at, inhibitions[lot["batch"]["identifier"]], run_code,
                                lot["outcome"] == "released")
                group = []
                self.chain.emit_before(start - dt.timedelta(days=3))
            if index and index % 1000 == 0:
                echo(f"  {index} of {plan.batches} batches built ({time.perf_counter() - started:.0f} s)")
        echo(f"  history built ({time.perf_counter() - started:.0f} s); writing rows")
        self.chain.emit_before(None)
        echo(f"  audit chain written ({time.perf_counter() - started:.0f} s)")
        self._insert(connection)
        if connection.dialect.name == "postgresql":
            for name in self.rows:
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                        f"(SELECT max(id) FROM {name}))"))
        result = Generated({name: len(rows) for name, rows in self.rows.items()}, self.chain.written)
        result.seconds = time.perf_counter() - started
        return result

    def _insert(self, connection) -> None:
        order = [Tank, Rack, Box, Donor, Cord, Batch, ProcessStep, Passage, Fill, Vial, VialEvent, QCResult,
                 PotencyRun, LotResult, ReleaseDecision, Patient, Signature]
        for model in order:
            rows = self.rows.get(model.__tablename__, [])
            columns = set(model.__table__.c.keys())
            for offset in range(0, len(rows), CHUNK):
                chunk = [{k: v for k, v in row.items() if k in columns} for row in rows[offset:offset + CHUNK]]
                connection.execute(model.__table__.insert(), chunk)


def generate(vials: int, force: bool = False, echo: Callable[[str], None] = lambda _: None) -> Generated:
    """Fill the current database with volume data in proportion to ``vials`` (see the module)."""
    session = db.session
    others = real_users(session)
    session.rollback()
    if others and not force:
        raise RealDataPresent(
            "This database has real users (" + ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            + "), so it may hold real records. perf-data only fills demo or scratch databases; "
              "pass --force to fill it anyway.")
    ensure_demo_base()
    session.rollback()
    plan = Plan.for_vials(vials)
    generator = Generator(plan)
    generator.prepare()
    session.rollback()
    # Millions of small dicts live until they are written: the cyclic garbage collector would
    # rescan them ever more often (the build slowed eightfold by the end without this).
    gc.disable()
    try:
        with db.engine.begin() as connection:
            lock_audit_chain(connection)
            result = generator.run(connection, echo)
    finally:
        gc.enable()
    if db.engine.dialect.name == "postgresql":
        # What autovacuum would do after such a load: planner statistics, and the visibility map
        # that lets counts be answered from indexes alone.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for name in [*result.rows, "audit_entries"]:
                connection.execute(text(f"VACUUM (ANALYZE) {name}"))
        echo("  vacuumed and analysed")
    session.rollback()  # later reads see the new rows
    return result


@click.command("perf-data")
@click.option("--vials", default=100_000, show_default=True, type=click.IntRange(10, 5_000_000),
              help="Vials to create; batches, runs, patients and audit entries follow in proportion.")
@click.option("--force", is_flag=True, help="Fill a database that has non-demo users (never in production).")
@with_appcontext
def perf_data_command(vials: int, force: bool) -> None:
    """Fill the database with realistic, consistent volume data for benchmarks."""
    plan = Plan.for_vials(vials)
    click.echo(f"Generating {plan.batches} batches, {plan.vials} vials, {plan.runs} potency runs, "
               f"{plan.patients} patients …")
    result = generate(vials, force, click.echo)
    for name, count in sorted(result.rows.items()):
        click.echo(f"  {name:<28} {count:>9}")
    click.echo(f"  {'audit_entries':<28} {result.audit_entries:>9}")
    click.echo(f"Done in {result.seconds:.1f} s.")
