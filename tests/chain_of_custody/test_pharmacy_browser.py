"""Browser test of the pharmacy flow: keyboard-wedge scans into the scan field (text + Enter),
a wrong vial shows red, the right vials show green, the witness signs, the certificate prints."""
from __future__ import annotations

import datetime as dt
import random

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.chain_of_custody import services
from labsys.db import utcnow
from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import browser, live_server, page, screenshot, sign_in, wait_until  # noqa: F401  (fixtures)
from tests.conftest import lab_today


def _prepare(app):
    """Two released lots (one selected for the trial), a cell-arm patient whose order has the
    proposed vials allocated and thawed. Returns (wristband, right vial codes, a wrong vial code)."""
    from labsys.release import decisions, specs
    from labsys.release.selection import select_for_trial
    from labsys.trial import orders as trial_orders
    from labsys.trial import services as trial_services
    from labsys.trial.demo import DEMO_TRIAL
    from labsys.trial.rules import ARM_MSC
    from tests.release.conftest import LotBuilder, enter_results, passing_potency
    from tests.trial.conftest import screening_values

    with app.app_context():
        users = {n: find_user(n) for n in ("technician", "technician2", "qa", "qa2", "pharmacist", "investigator")}
        specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365),
                                            SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "spec"))
        runs: dict = {}
        app.extensions["labsys_release_potency"] = runs.get
        builder = LotBuilder(users)
        lots = []
        for select in (True, False):
            lot = builder.lot(vial_count=6)
            enter_results(users, lot)
            passing_potency(runs, lot)
            decisions.decide_lot(users["qa"], lot, True, SignatureCheck(users["qa"], SignatureMeaning.RELEASED, "QP"),
                                 "ok", None)
            if select:
                select_for_trial(users["qa"], lot, SignatureCheck(users["qa"], SignatureMeaning.APPROVED, "select"))
            lots.append(lot)
        trial = trial_services.save_trial(users["pharmacist"], {**DEMO_TRIAL, "dose_cells_per_kg": 500_000})
        trial_services.generate_allocation_list(users["pharmacist"], trial, rng=random.Random(3))
        number = 0
        while True:
            number += 1
            patient = trial_services.enrol_patient(users["investigator"], trial,
                                                   screening_values(trial, f"SCR-B{number:03d}"))
            if trial_services.randomize_patient(users["pharmacist"], patient) == ARM_MSC:
                break
        order = trial_orders.order_infusion(users["investigator"], patient, lab_today())
        proposal = services.propose_vials(order)
        services.allocate(users["pharmacist"], order, [v.identifier for v in proposal.vials])
        for vial in proposal.vials:
            services.thaw(users["pharmacist"], vial)
        return (services.patient_payload(patient), [services.vial_payload(v) for v in proposal.vials],
                services.vial_payload(lots[1].vials[0]))


def _scan(page, code: str) -> None:
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def test_the_pharmacist_scans_sees_red_then_green_has_it_witnessed_and_prints_the_certificate(live_server, page):
    base_url, app = live_server
    wristband, right, wrong = _prepare(app)
    sign_in(page, base_url, "pharmacist", DEMO_PASSWORD)
    page.goto(f"{base_url}/pharmacy/dispense")
    assert page.evaluate("document.activeElement.id") == "scan-input"
    _scan(page, wristband)
    _scan(page, wrong)
    result = page.locator("#check-result")
    result.locator("h2").wait_for()
    assert "check-failed" in result.get_attribute("class")
    assert "All checks passed" not in result.inner_text()
    assert page.locator("#check-result li.check-fail").count() >= 2  # not allocated/thawed, lot not selected
    assert page.evaluate("document.activeElement.id") == "scan-input"
    screenshot(page, "custody-dispense-red")
    page.click("#scan-reset")
    _scan(page, wristband)
    for code in right:
        _scan(page, code)
    wait_until(page, "document.querySelector('#check-result').classList.contains('check-passed')")
    assert "All checks passed" in result.inner_text()
    assert "vial(s)" in result.inner_text()  # the dose summary
    screenshot(page, "custody-dispense-green")
    page.fill("#sign_username", "pharmacist")
    page.fill("#sign_password", DEMO_PASSWORD)
    page.fill("#witness_username", "pharmacist2")
    page.fill("#witness_password", DEMO_PASSWORD)
    page.click("#dispense-submit")
    page.wait_for_url("**/pharmacy/dispensings/*")
    assert "Liu Yang" in page.content() and "Zhang Wei" in page.content()
    href = page.locator("a", has_text="Print chain-of-custody certificate").get_attribute("href")
    pdf = page.request.get(f"{base_url}{href}")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body()[:4] == b"%PDF"
