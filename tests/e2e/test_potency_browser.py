"""A technician records a plate in a real browser, uploads its field images, watches the scoring
progress bar finish (Huey on SQLite, consumed in-process, fields scored by a pool of two
processes) and opens the outline viewer."""
from __future__ import annotations

import pytest

from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import screenshot, sign_in, wait_until
from tests.potency.app_support import SMALL_LAYOUT, layout_files

pytestmark = pytest.mark.e2e


def test_a_technician_uploads_a_plate_watches_scoring_and_opens_the_overlay(potency_server, page, tmp_path):
    base_url, _app = potency_server
    blocked = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    sign_in(page, base_url, "technician", DEMO_PASSWORD)
    page.wait_for_selector("h1")
    page.goto(f"{base_url}/potency/new")
    page.fill("#assay_date", "2026-11-24")
    page.fill("#bv2_passage", "9")
    page.fill("#lps_lot", "LPS-E2E")
    page.fill("#lps_ng_per_ml", "100")
    page.fill("#test_lots", "LOT-A, LOT-B")
    page.fill("#reference_lot", "LOT-REF")
    page.select_option("#plate_format", "24")
    page.fill("#min_cells_per_field", "20")
    page.click("button[type=submit].primary")
    page.wait_for_selector("#layout-form")
    # Quick fill row A as unstimulated, then set the rest well by well.
    page.select_option("#qf-target", "row-A")
    page.select_option("#qf-condition", "unstimulated")
    page.click("#qf-apply")
    assert page.input_value("#cond-A06") == "unstimulated"
    for well in ("A03", "A04", "A05", "A06"):
        page.select_option(f"#cond-{well}", "empty" if well in ("A05", "A06") else "lps")
    for well, (condition, lot, ratio, _fraction) in SMALL_LAYOUT.items():
        if condition in ("test", "reference"):
            page.select_option(f"#cond-{well}", condition)
            if condition == "test":
                page.select_option(f"#lot-{well}", lot)
            page.fill(f"#ratio-{well}", ratio)
    screenshot(page, "potency-layout-editor")
    page.click("#layout-form button[type=submit].primary")
    page.wait_for_selector("text=Plate layout saved.")
    page.click("text=Upload field images")
    paths = []
    for name, data in layout_files():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    page.set_input_files("#files", paths)
    page.click("button[type=submit].primary")
    page.wait_for_selector("text=10 image(s) stored.")
    page.click("#start-scoring")
    bar = page.wait_for_selector("#score-progress")
    assert bar.get_attribute("data-state") == "scoring"  # the job runs in the background
    screenshot(page, "potency-scoring-progress")
    page.wait_for_selector("#lot-results", timeout=90_000)  # the page reloads when the bar finishes
    assert page.get_attribute("#score-progress", "value") == "100"
    assert "10 of 10 fields scored" in page.inner_text("#score-progress-text")
    assert page.locator(".hm-well.hm-lps").count() == 2
    screenshot(page, "potency-run-scored")
    page.click("#image-table a.view-field >> nth=0")
    picture = page.wait_for_selector("#field-picture")
    assert "overlay.png" in picture.get_attribute("src")
    wait_until(page, "document.getElementById('field-picture').naturalWidth > 0")
    assert page.evaluate("document.getElementById('field-picture').naturalWidth") == 512
    page.click("text=Raw field")
    wait_until(page, "document.getElementById('field-picture').src.endsWith('raw.png')")
    screenshot(page, "potency-overlay-viewer")
    assert blocked == []
