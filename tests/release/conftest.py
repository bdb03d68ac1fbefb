"""Builders for release tests: the default specification, a filled lot in quarantine, its QC
results, and an approved potency run (through the potency hook)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.batches import services as batch_services
from labsys.batches import vials as vial_services
from labsys.batches.models import Inspection, StepType, TissueMethod
from labsys.batches.rules import Marker, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.db import utcnow
from labsys.release import results as result_services
from labsys.release import specs
from labsys.release.defaults import NEGATIVE_MARKERS, POSITIVE_MARKERS
from tests.conftest import lab_today

CLEAN = {m: MarkerResult.NON_REACTIVE for m in Marker}

PASSING = {"APPEARANCE": ("conforms", None), "VIABLE_CELLS": ("10.1", "x10^6 cells/vial"),
           "VIABILITY": ("92.5", "%"), "STERILITY": ("no growth", None), "MYCOPLASMA": ("negative", None),
           "ENDOTOXIN": ("0.12", "EU/mL"), "KARYOTYPE": ("normal", None),
           **{m: ("99.1", "%") for m in POSITIVE_MARKERS}, **{m: ("0.4", "%") for m in NEGATIVE_MARKERS}}


@pytest.fixture
def users(demo_users):
    return demo_users


@pytest.fixture
def spec(app, users):
    check = SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "test specification")
    return specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365), check)


@pytest.fixture
def potency_runs(app):
    """lot identifier -> dict(percent_inhibition, run_valid, run_reference) served as the
    approved potency run of that lot."""
    runs: dict[str, dict] = {}
    app.extensions["labsys_release_potency"] = runs.get
    return runs


class LotBuilder:
    """Builds filled lots in quarantine through the batches services. ``prefix`` keeps donor codes
    apart when several builders share one database; ``reagent_ids`` reuses released reagents."""

    def __init__(self, users, prefix: str = "D-T", reagent_ids: list[int] | None = None):
        self.users = users
        self.count = 0
        self.prefix = prefix
        self.reagent_ids: list[int] | None = reagent_ids
        self.box = None

    def _setup(self):
        tech, qa = self.users["technician"], self.users["qa2"]
        today = lab_today()
        reagent = batch_services.add_reagent(tech, "MSC medium", "LOT-1", "Supplier", today + dt.timedelta(days=300),
                                             today - dt.timedelta(days=200))
        batch_services.set_reagent_status(qa, reagent, ReagentStatus.RELEASED)
        self.reagent_ids = [reagent.id]
        tank = vial_services.create_tank(tech, "T1")
        rack = vial_services.create_rack(tech, tank, "R1")
        self.box = vial_services.create_box(tech, rack, "BOX-1", 9, 9)

    def lot(self, vial_count: int = 4, passages: int = 2, days_ago: int = 40, eligible: bool = True,
            fill: bool = True, verify_fill: bool = True):
        """A lot filled with ``vial_count`` vials (in quarantine), the fill verified by a second
        person unless ``verify_fill=False``; with ``fill=False`` the batch stops in process, its
        passages verified, ready to be filled."""
        if self.reagent_ids is None:
            self._setup()
        self.count += 1
        tech, tech2, qa = self.users["technician"], self.users["technician2"], self.users["qa2"]
        today = lab_today()
        donor = batch_services.register_donor(tech, f"{self.prefix}-{self.count:03d}", today - dt.timedelta(days=days_ago + 30),
                                              ScreeningOutcome.ACCEPTABLE, today - dt.timedelta(days=days_ago + 1),
                                              CLEAN if eligible else {**CLEAN, Marker.HBSAG: MarkerResult.REACTIVE})
        batch_services.determine_eligibility(qa, donor, SignatureCheck(qa, SignatureMeaning.APPROVED, "t"))
        now = utcnow().replace(second=0, microsecond=0)
        collected = now - dt.timedelta(days=days_ago, hours=10)
        cord = batch_services.receive_cord(tech, donor, collected, collected + dt.timedelta(hours=6), Decimal("4.5"),
                                           Decimal("38.5"), Inspection.CONFORMS, None, "caesarean", 39)
        batch = batch_services.start_batch(tech, cord)
        start = cord.received_at + dt.timedelta(hours=1)
        batch_services.record_step(tech, batch, StepType.TISSUE_PROCESSING, start, start + dt.timedelta(hours=2),
                                   "BSC-02", self.reagent_ids, TissueMethod.EXPLANT)
        cells = 4_000_000
        for number in range(passages + 1):
            begin = start + dt.timedelta(days=1 if number == 0 else 11 + 4 * (number - 1))
            seeded = None if number == 0 else cells
            harvested = cells if number == 0 else seeded * 6
            passage = batch_services.record_passage(
                tech, batch, number, begin, begin + dt.timedelta(days=3 if number else 10), "BSC-02",
                seeded, harvested, Decimal("94.5"), Decimal("85"), 2 + number * 2, self.reagent_ids)
            batch_services.verify_passage(tech2, passage, passage.harvested_viable_cells, passage.viability_percent,
                                          SignatureCheck(tech2, SignatureMeaning.VERIFIED, "t"))
            cells = harvested
        if not fill:
            return batch
        last = batch.passages[-1].step.ended_at
        vial_services.fill_batch(tech, batch, vial_count, 10_000_000, Decimal("5.0"), "CryoStor CS10",
                                 Decimal("93.0"), last + dt.timedelta(hours=3), "FILL-01",
                                 last + dt.timedelta(hours=2), self.reagent_ids)
        if verify_fill:
            vial_services.verify_fill(tech2, batch.fill, 10_000_000, Decimal("93.0"),
                                      SignatureCheck(tech2, SignatureMeaning.VERIFIED, "t"))
        return batch


@pytest.fixture
def lots(app, users, spec):
    return LotBuilder(users)


def result_input(code: str, value: str | None, unit: str | None = None, pending: bool = False):
    return result_services.ResultInput(test_code=code, value=value, unit=unit, performed_by="A. Analyst",
                                       performed_on=lab_today(), instrument="INST-1", pending=pending)


def enter_results(users, batch, overrides: dict | None = None, skip: tuple = (), verify: bool = True):
    """Every manual result, entered by technician and (unless ``verify`` is False) verified by
    technician2, written in one unit of work: a fast builder for tests about review and release
    (entry and verification through the services are tested on their own)."""
    from labsys.audit.services import unit_of_work
    from labsys.auth.services import actor_of
    from labsys.release.models import QCResult

    values = {**PASSING, **(overrides or {})}
    version = specs.applicable_version(batch)
    now = utcnow()
    rows = []
    with unit_of_work(actor_of(users["technician"]), "qc_result.enter"):
        for code, (value, unit) in values.items():
            if code in skip:
                continue
            pending = value == "pending"
            numeric = unit is not None and not pending
            rows.append(QCResult(
                batch_id=batch.id, specification_version_id=version.id, test_code=code, pending=pending,
                numeric_value=Decimal(value) if numeric else None, unit=unit if numeric else None,
                text_value=None if numeric or pending else value, performed_by="A. Analyst",
                performed_on=lab_today(), instrument="INST-1", entered_at=now,
                entered_by_id=users["technician"].id,
                verified_by_id=users["technician2"].id if verify and not pending else None,
                verified_at=now if verify and not pending else None))
        for row in rows:
            from labsys.extensions import db

            db.session.add(row)
    return rows


def passing_potency(potency_runs, batch, value="35.0", valid=True):
    potency_runs[batch.identifier] = {"percent_inhibition": Decimal(value), "run_valid": valid,
                                      "run_reference": f"PR-{batch.identifier[-4:]}"}


def enter_results_via_services(users, batch, overrides: dict | None = None):
    """Every manual result entered (technician) and verified (technician2) through the services."""
    values = {**PASSING, **(overrides or {})}
    entered = [result_services.enter_result(users["technician"], batch, result_input(code, value, unit))
               for code, (value, unit) in values.items()]
    for result in entered:
        result_services.verify_result(users["technician2"], result)
    return entered
