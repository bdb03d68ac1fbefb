"""Builders for batch tests: reagent lots, an eligible donor, a received cord, a running batch."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.batches.models import Inspection, StepType, TissueMethod
from labsys.batches.rules import Marker, MarkerResult, ReagentStatus, ScreeningOutcome
from labsys.db import utcnow
from tests.conftest import lab_today

CLEAN = {m: MarkerResult.NON_REACTIVE for m in Marker}


@pytest.fixture(autouse=True)
def _request_context(request):
    """Services translate their messages: give database tests a request (hence a locale)."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    with app.test_request_context():
        yield


class Lab:
    """Small builders over the real services, so tests read as the lab's steps."""

    def __init__(self, users):
        self.users = users
        self.tech, self.tech2, self.qa = users["technician"], users["technician2"], users["qa"]
        self.now = utcnow().replace(microsecond=0)
        self._reagents = None

    def check(self, user, meaning=SignatureMeaning.APPROVED):
        return SignatureCheck(user, meaning, None)

    def reagent(self, item="Medium", lot="L1", status=ReagentStatus.RELEASED, expires_in_days=100):
        from labsys.batches import services

        today = lab_today()
        reagent = services.add_reagent(self.tech, item, lot, "Supplier", today + dt.timedelta(days=expires_in_days),
                                       today - dt.timedelta(days=200 if expires_in_days < 0 else 5))
        if status != ReagentStatus.QUARANTINE:
            services.set_reagent_status(self.qa, reagent, status)
        return reagent

    def donor(self, code="D-001", markers=None, determine=True, specimen_days_ago=3):
        from labsys.batches import services

        donor = services.register_donor(self.tech, code, lab_today() - dt.timedelta(days=30),
                                        ScreeningOutcome.ACCEPTABLE,
                                        lab_today() - dt.timedelta(days=specimen_days_ago), markers or CLEAN)
        if determine:
            services.determine_eligibility(self.qa, donor, self.check(self.qa))
        return donor

    def cord(self, donor, hours_ago=60, transit_hours=6, temperature="4.0"):
        from labsys.batches import services

        collected = self.now - dt.timedelta(hours=hours_ago)
        return services.receive_cord(self.tech, donor, collected, collected + dt.timedelta(hours=transit_hours),
                                     Decimal(temperature), Decimal("40.0"), Inspection.CONFORMS, None,
                                     "vaginal", 39)

    def batch(self, code="D-001"):
        from labsys.batches import services

        batch = services.start_batch(self.tech, self.cord(self.donor(code)))
        start = batch.cord.received_at + dt.timedelta(hours=1)
        services.record_step(self.tech, batch, StepType.TISSUE_PROCESSING, start, start + dt.timedelta(hours=1),
                             "BSC-1", [], TissueMethod.EXPLANT)
        return batch

    def passage(self, batch, number, seeded=1_000_000, harvested=4_000_000, viability="95.0", verify=True,
                hours_after_receipt=None, reagent_ids=()):
        from labsys.batches import services

        start = batch.cord.received_at + dt.timedelta(hours=hours_after_receipt or (3 + 8 * number))
        passage = services.record_passage(self.tech, batch, number, start, start + dt.timedelta(hours=6), "BSC-1",
                                          None if number == 0 else seeded, harvested, Decimal(viability),
                                          Decimal("80"), 2, list(reagent_ids))
        if verify:
            services.verify_passage(self.tech2, passage, harvested, Decimal(viability),
                                    self.check(self.tech2, SignatureMeaning.VERIFIED))
        return passage

    def filled(self, vials=5, code="D-001"):
        from labsys.batches import vials as vial_services

        batch = self.batch(code)
        self.passage(batch, 0, harvested=2_000_000)
        last = self.passage(batch, 1, seeded=1_000_000, harvested=300_000_000)
        at = last.step.ended_at + dt.timedelta(hours=1)
        vial_services.fill_batch(self.tech, batch, vials, 10_000_000, Decimal("5.0"), "10% DMSO", Decimal("93"),
                                 at, "BSC-1", at - dt.timedelta(minutes=30))
        return batch


@pytest.fixture
def lab(app, demo_users):
    return Lab(demo_users)
