"""In a real browser: QA reviews a lot and sees its one failing criterion, then releases a
passing lot with an e-signature."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from labsys.auth.models import SignatureMeaning
from labsys.auth.services import find_user
from labsys.auth.signatures import SignatureCheck
from labsys.cli import DEMO_USERS
from labsys.db import utcnow
from labsys.release import specs
from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import browser, live_server, page, screenshot, sign_in  # noqa: F401 (fixtures)

from .conftest import LotBuilder, enter_results

pytestmark = pytest.mark.e2e


def test_qa_sees_the_failing_criterion_then_releases_a_passing_lot_with_a_signature(live_server, page):  # noqa: F811
    base_url, app = live_server
    runs = {}
    app.extensions["labsys_release_potency"] = runs.get
    with app.app_context():
        users = {name: find_user(name) for name, _n, _r in DEMO_USERS}
        specs.install_default_specification(users["qa2"], utcnow() - dt.timedelta(days=365),
                                            SignatureCheck(users["qa2"], SignatureMeaning.APPROVED, "e2e"))
        builder = LotBuilder(users)
        failing, passing = builder.lot(), builder.lot()
        enter_results(users, failing, overrides={"CD45": ("4.2", "%")})
        enter_results(users, passing)
        for batch in (failing, passing):
            runs[batch.identifier] = {"percent_inhibition": Decimal("31.5"), "run_valid": True,
                                      "run_reference": "PR-E2E-1"}
        failing_id, passing_id = failing.id, passing.id
        passing_identifier = passing.identifier

    sign_in(page, base_url, "qa", DEMO_PASSWORD)
    page.wait_for_selector("h1")
    page.click("text=Open the QA work queue")
    page.wait_for_selector("h1:has-text('QA work queue')")
    page.goto(f"{base_url}/release/lots/{failing_id}")
    failing_rows = page.locator("tr.verdict-row.verdict-oos, tr.verdict-row.verdict-fail")
    assert failing_rows.count() == 1
    assert "CD45" in failing_rows.inner_text() and "Out of specification" in failing_rows.inner_text()
    assert "4.2 %" in failing_rows.inner_text()
    assert page.locator("button[value=release]").is_disabled()
    screenshot(page, "release-review-failing")

    page.goto(f"{base_url}/release/lots/{passing_id}")
    assert page.locator("tr.verdict-row.verdict-oos, tr.verdict-row.verdict-fail").count() == 0
    assert "Every rule passes." in page.content()
    page.fill("#sign_username", "qa")
    page.fill("#sign_password", DEMO_PASSWORD)
    page.fill("#sign_comment", "All criteria met")
    page.click("button[value=release]")
    page.wait_for_selector(".signature-block")
    assert f"Lot {passing_identifier}: Released." in page.content()
    assert "Wang Fang" in page.inner_text(".signature-block")
    screenshot(page, "release-review-released")
