"""The trial in a real browser: the investigator enrols through the form, the pharmacist
randomizes, the investigator sees only the kit number; no CSP violations on the way."""
from __future__ import annotations

import re

import pytest

from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import browser, live_server, page, screenshot, sign_in  # noqa: F401  (fixtures)

from .conftest import ARM_NAMES

pytestmark = pytest.mark.e2e


def test_enrol_randomize_and_stay_masked_in_the_browser(live_server, browser):  # noqa: F811
    base_url, app = live_server
    with app.app_context():
        from labsys.trial.demo import load_demo_data

        load_demo_data()
    problems: list[str] = []

    def new_page():
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        tab = context.new_page()
        tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        return tab

    investigator = new_page()
    sign_in(investigator, base_url, "investigator", DEMO_PASSWORD)
    investigator.goto(f"{base_url}/trial/patients/new")
    assert investigator.locator("#screening_number").evaluate("el => el === document.activeElement")
    investigator.fill("#screening_number", "SCR-777")
    investigator.fill("#age_years", "17")
    investigator.select_option("#sex", "female")
    investigator.fill("#weight_kg", "62.5")
    investigator.fill("#weight_date", "2026-11-25")
    investigator.fill("#consent_date", "2026-11-25")
    investigator.check("#diagnosis_confirmed-0")
    for index in range(4):
        investigator.check(f"#exclusion_{index}-1")
    investigator.click("button[type=submit].primary")
    assert "Age 17 is outside the trial's range 18–75 years." in investigator.inner_text("main")
    assert investigator.input_value("#screening_number") == "SCR-777"
    investigator.fill("#age_years", "52")
    investigator.click("button[type=submit].primary")
    investigator.wait_for_selector("h1:has-text('Patient SCR-777')")
    patient_url = investigator.url
    assert "Eligible" in investigator.inner_text("main")

    pharmacist = new_page()
    sign_in(pharmacist, base_url, "pharmacist", DEMO_PASSWORD)
    pharmacist.goto(patient_url)
    pharmacist.click("text=Randomize (reveals the next line only)")
    pharmacist.wait_for_selector(".alert-success")
    assert any(name in pharmacist.inner_text(".alert-success") for name in ARM_NAMES)
    screenshot(pharmacist, "trial-randomized-pharmacist")

    investigator.goto(patient_url)
    text = investigator.inner_text("main")
    assert re.search(r"Kit K-\d{6}", text)
    assert not any(name.lower() in investigator.content().lower() for name in ARM_NAMES)
    investigator.goto(f"{base_url}/trial/summary")
    assert investigator.locator("svg.trial-plot").count() == 7
    screenshot(investigator, "trial-summary-investigator")
    assert not [p for p in problems if "Content Security Policy" in p], problems
