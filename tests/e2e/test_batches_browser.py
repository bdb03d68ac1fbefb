"""A technician logs a batch in a real browser: cord receipt, batch start, tissue processing, P0,
second-person verification by a colleague, fill, and the filled vials on the batch record."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import screenshot, sign_in
from tests.conftest import lab_today

pytestmark = pytest.mark.e2e


def lab_time(value: dt.datetime) -> str:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%dT%H:%M")


def _eligible_donor(app):
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.services import find_user
    from labsys.auth.signatures import SignatureCheck
    from labsys.batches import services
    from labsys.batches.rules import Marker, MarkerResult, ScreeningOutcome

    with app.app_context(), app.test_request_context():
        technician, qa = find_user("technician"), find_user("qa")
        donor = services.register_donor(technician, "D-E2E-1", lab_today() - dt.timedelta(days=20),
                                        ScreeningOutcome.ACCEPTABLE, lab_today() - dt.timedelta(days=1),
                                        {m: MarkerResult.NON_REACTIVE for m in Marker})
        services.determine_eligibility(qa, donor, SignatureCheck(qa, SignatureMeaning.APPROVED, None))
        return donor.id


def test_a_batch_is_logged_from_cord_to_filled_vials(live_server, browser):
    base_url, app = live_server
    donor_id = _eligible_donor(app)
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    collected = now - dt.timedelta(hours=30)

    technician = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    sign_in(technician, base_url, "technician", DEMO_PASSWORD)
    technician.goto(f"{base_url}/batches/donors/{donor_id}")
    technician.click("text=Receive a cord")
    assert technician.locator("#collected_at").evaluate("el => el === document.activeElement")
    # A late receipt is refused with the reason beside the field, and the typed values stay.
    technician.fill("#collected_at", lab_time(collected))
    technician.fill("#received_at", lab_time(collected + dt.timedelta(hours=26)))
    technician.fill("#transport_temperature_c", "4.5")
    technician.fill("#weight_g", "41.2")
    technician.select_option("#delivery_type", "caesarean")
    technician.fill("#gestational_age_weeks", "39")
    assert technician.locator("#deviation_description").is_hidden()  # shown only when accepting under deviation
    technician.click("button[type=submit].primary")
    assert "the limit is 24 h" in technician.inner_text("#received_at-errors")
    assert technician.input_value("#weight_g") == "41.2"
    technician.fill("#received_at", lab_time(collected + dt.timedelta(hours=5)))
    technician.click("button[type=submit].primary")
    technician.click("text=Start the batch")
    technician.wait_for_selector("h1:has-text('Batch record')")
    batch_url = technician.url
    identifier = technician.inner_text("h1 .din").split()[0]

    received = collected + dt.timedelta(hours=5)
    technician.click("text=Record tissue processing")
    technician.select_option("#step_type", "tissue_processing")
    technician.select_option("#method", "explant")
    technician.fill("#started_at", lab_time(received + dt.timedelta(hours=1)))
    technician.fill("#ended_at", lab_time(received + dt.timedelta(hours=2)))
    technician.fill("#equipment", "BSC-02")
    technician.click("button[type=submit].primary")

    technician.click("text=Record passage P0")
    technician.fill("#started_at", lab_time(received + dt.timedelta(hours=3)))
    technician.fill("#ended_at", lab_time(received + dt.timedelta(hours=20)))
    technician.fill("#equipment", "BSC-02, INC-01")
    technician.fill("#harvested_viable_cells", "50000000")
    technician.fill("#viability_percent", "130")
    technician.fill("#flask_count", "4")
    technician.click("button[type=submit].primary")
    assert "Between 0 and 100 %" in technician.inner_text("#viability_percent-errors")
    technician.fill("#viability_percent", "94.5")
    technician.click("button[type=submit].primary")
    assert "1 critical entry awaits second-person verification" in technician.inner_text("#unverified-alert")

    # A colleague verifies the count by re-entering it and signing.
    colleague = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    sign_in(colleague, base_url, "technician2", DEMO_PASSWORD)
    colleague.goto(batch_url)
    colleague.click("#unverified-alert a")
    colleague.fill("#harvested_viable_cells", "50000000")
    colleague.fill("#viability_percent", "94.5")
    colleague.fill("#sign_username", "technician2")
    colleague.fill("#sign_password", DEMO_PASSWORD)
    colleague.click("button[type=submit].primary")
    assert colleague.locator("#unverified-alert").count() == 0

    technician.goto(batch_url)
    technician.click("text=Fill vials")
    technician.fill("#vial_count", "4")
    technician.fill("#viable_cells_per_vial", "10000000")
    technician.fill("#volume_ml", "5")
    technician.fill("#viability_percent", "93")
    technician.fill("#started_at", lab_time(received + dt.timedelta(hours=21)))
    technician.fill("#filled_at", lab_time(received + dt.timedelta(hours=22)))
    technician.fill("#equipment", "BSC-02, FILL-01")
    technician.click("button[type=submit].primary")
    technician.wait_for_selector("text=4 vials filled")
    body = technician.inner_text("main")
    for division in range(1, 5):
        assert f"{identifier}{division:03d}" in body
    assert "Quarantine" in technician.inner_text("h1")
    assert technician.locator("svg.growth-chart circle").count() == 1
    screenshot(technician, "batches-filled-batch-record")
