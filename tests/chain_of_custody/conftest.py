"""Builders for custody tests: a released lot selected for the trial (through the batches and
release services), a randomized cell-arm patient with an open infusion order."""
from __future__ import annotations

import datetime as dt
import random

import pytest

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.release import decisions
from labsys.release.selection import select_for_trial
from labsys.trial import orders as trial_orders
from labsys.trial import rules as trial_rules
from labsys.trial import services as trial_services
from labsys.trial.demo import DEMO_TRIAL
from tests.release.conftest import LotBuilder, enter_results, passing_potency  # noqa: F401
from tests.trial.conftest import screening_values
from tests.conftest import lab_today


@pytest.fixture
def users(demo_users):
    return demo_users


@pytest.fixture
def potency_runs(app):
    runs: dict[str, dict] = {}
    app.extensions["labsys_release_potency"] = runs.get
    return runs


@pytest.fixture
def lots(app, users):
    from labsys.release import specs
    from labsys.db import utcnow

    specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365),
                                        SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "test specification"))
    return LotBuilder(users)


@pytest.fixture
def released_lot(lots, users, potency_runs):
    """lot(vial_count=6, select=True) -> a released lot (10e6 viable cells a vial), selected for the trial."""

    def _make(vial_count: int = 6, select: bool = True):
        batch = lots.lot(vial_count=vial_count)
        enter_results(users, batch)
        passing_potency(potency_runs, batch)
        decisions.decide_lot(users["qa"], batch, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                             "meets specification", None)
        if select:
            select_for_trial(users["qa"], batch, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "select"))
        return batch

    return _make


@pytest.fixture
def trial(users):
    trial = trial_services.save_trial(users["pharmacist"], {**DEMO_TRIAL, "dose_cells_per_kg": 500_000})
    trial_services.generate_allocation_list(users["pharmacist"], trial, rng=random.Random(11))
    return trial


@pytest.fixture
def patient_in_arm(trial, users):
    """patient_in_arm("msc", weight_kg=...) -> a randomized patient in that arm with an open order."""
    counter = {"n": 0}

    def _make(arm: str = trial_rules.ARM_MSC, order: bool = True, **overrides):
        while True:
            counter["n"] += 1
            patient = trial_services.enrol_patient(users["investigator"], trial,
                                                   screening_values(trial, f"SCR-C{counter['n']:03d}", **overrides))
            got = trial_services.randomize_patient(users["pharmacist"], patient)
            if got == arm:
                break
        if order:
            trial_orders.order_infusion(users["investigator"], patient, lab_today())
        return patient

    return _make


@pytest.fixture
def ready(users, released_lot, patient_in_arm):
    """ready(thaw=True) -> (lot, patient, order, vials): a lot of 6 vials, an MSC patient of 70 kg
    (35e6 cells → 4 vials) with the proposed vials allocated and, by default, thawed."""
    from labsys.chain_of_custody import services

    def _make(thaw: bool = True):
        lot = released_lot()
        patient = patient_in_arm()
        order = trial_orders.active_order(patient)
        proposal = services.propose_vials(order)
        services.allocate(users["pharmacist"], order, [v.identifier for v in proposal.vials])
        if thaw:
            for vial in proposal.vials:
                services.thaw(users["pharmacist"], vial)
        return lot, patient, order, proposal.vials

    return _make


@pytest.fixture
def api_token(users):
    from labsys.auth.services import create_api_token

    def _make(username: str) -> dict:
        _token, secret = create_api_token(users[username], "test scanner")
        return {"Authorization": f"Bearer {secret}"}

    return _make
