"""Builders for trial tests: a configured trial with its list, eligible patients."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from labsys.trial import services
from labsys.trial.demo import DEMO_TRIAL
from tests.conftest import lab_today

ARM_NAMES = (DEMO_TRIAL["control_arm_name"], DEMO_TRIAL["msc_arm_name"])


@pytest.fixture
def pharmacist(demo_users):
    return demo_users["pharmacist"]


@pytest.fixture
def investigator(demo_users):
    return demo_users["investigator"]


@pytest.fixture
def make_trial(pharmacist):
    def _make(generate: bool = True, seed: int | None = 11, **overrides):
        values = {**DEMO_TRIAL, **overrides}
        trial = services.save_trial(pharmacist, values)
        if generate:
            services.generate_allocation_list(pharmacist, trial, rng=None if seed is None else random.Random(seed))
        return trial

    return _make


@pytest.fixture
def trial(make_trial):
    return make_trial()


def screening_values(trial, number: str, **overrides) -> dict:
    values = {"screening_number": number, "year_of_birth": None, "age_years": 45, "sex": "female",
              "weight_kg": Decimal("70.0"), "weight_date": lab_today(), "consent_date": lab_today(),
              "diagnosis_confirmed": "yes", "exclusions": {item: "no" for item in trial.exclusions}}
    values.update(overrides)
    return values


@pytest.fixture
def enrol(investigator):
    counter = {"n": 0}

    def _enrol(trial, **overrides):
        counter["n"] += 1
        return services.enrol_patient(investigator, trial,
                                      screening_values(trial, f"SCR-{counter['n']:03d}", **overrides))

    return _enrol
