"""The whole life of one lot, across every role, through the real user interface in a real browser.

A technician registers a donor and her markers, QA signs the eligibility, the cord is received,
a batch is grown over two passages (each count verified by a second technician), filled and
labelled; the potency plate is uploaded and scored, QA approves the run; QC results are entered
and verified; QA releases the lot with an e-signature and selects it for the trial. The
investigator enrols a patient, the pharmacist randomizes (until a patient is in the cell arm),
allocates and thaws the vials, scans the wristband and the vials with a keyboard-wedge scanner
(one wrong vial first: refused in words), a second pharmacist witnesses, the certificate prints;
the investigator records the administration at the bedside; the accountability report balances.

Every step is typed and clicked in the browser. The one thing set up through a service is the
approved default release specification: labsys has no page to create a lab's first
specification (only new versions of an existing one); installation and the demo loader install it.

Each user works in an own browser context (own cookies), as at their own workstation. A
screenshot of each step goes to test-artifacts/screenshots/journey-NN-*.png
(scripts/readme_images.py copies the best into docs/images/)."""
from __future__ import annotations

import datetime as dt
import re
import subprocess
from zoneinfo import ZoneInfo

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import expect

from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import ARTIFACTS, screenshot, sign_in, wait_until

pytestmark = pytest.mark.e2e

LAB_ZONE = ZoneInfo("Asia/Shanghai")
DONOR = "D-JOURNEY-01"
VIALS_FILLED = 10
CELLS_PER_VIAL = 10_000_000

# Potency plate: well → (condition, ratio, true activation fraction of the synthetic fields).
# "lot" wells hold the lot under test; the fraction 0.35 against LPS 0.70 and unstimulated 0.15
# gives about 64 % inhibition (the specification asks ≥ 20 %).
PLATE = {
    "A01": ("unstimulated", None, 0.15), "A02": ("unstimulated", None, 0.15),
    "A03": ("lps", None, 0.70), "A04": ("lps", None, 0.70),
    "B01": ("test", "1:10", 0.35), "B02": ("test", "1:10", 0.35),
    "C01": ("reference", "1:10", 0.40), "C02": ("reference", "1:10", 0.40),
}

# QC results typed one by one: test code → (value, unit).
SINGLE_RESULTS = {
    "APPEARANCE": ("conforms", ""), "VIABLE_CELLS": ("10.1", "x10^6 cells/vial"), "VIABILITY": ("92.5", "%"),
    "STERILITY": ("no growth", ""), "MYCOPLASMA": ("negative", ""), "ENDOTOXIN": ("0.12", "EU/mL"),
    "KARYOTYPE": ("normal", ""),
}
FLOW_PANEL = {"cd73": "99.1", "cd90": "98.7", "cd105": "97.9", "cd34": "0.4", "cd45": "0.3", "cd11b": "0.5",
              "cd19": "0.2", "hla_dr": "0.6"}


def lab_time(value: dt.datetime) -> str:
    """A datetime-local field's value in the lab's time zone."""
    return value.astimezone(LAB_ZONE).strftime("%Y-%m-%dT%H:%M")


class Desk:
    """One browser context per user, signed in once (each person at their own workstation)."""

    def __init__(self, browser, base_url: str):
        self.browser, self.base_url, self.pages = browser, base_url, {}

    def __call__(self, username: str):
        if username not in self.pages:
            context = self.browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US",
                                               accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(20_000)
            sign_in(page, self.base_url, username, DEMO_PASSWORD)
            page.wait_for_selector("h1")
            self.pages[username] = page
        return self.pages[username]

    def close(self):
        for page in self.pages.values():
            page.context.close()


def sign(page, username: str, scope: str = "", comment: str | None = None) -> None:
    """Fill the e-signature fields (user ID and password re-entered) inside ``scope``."""
    prefix = f"{scope} " if scope else ""
    page.fill(f"{prefix}[name=sign_username]", username)
    page.fill(f"{prefix}[name=sign_password]", DEMO_PASSWORD)
    if comment is not None:
        page.fill(f"{prefix}[name=sign_comment]", comment)


def text_of(page, selector: str) -> str:
    """An element's text as written in the page (badges are upper-cased by CSS only)."""
    return " ".join((page.locator(selector).first.text_content() or "").split())


def flash_text(page) -> str:
    """The flashed messages of the page just loaded (waits for them: a click only waits for the
    navigation to start)."""
    page.wait_for_load_state()
    page.locator(".flashes .alert").first.wait_for()
    return " ".join(page.locator(".flashes .alert").all_inner_texts())


def decode_qr_codes(pdf: bytes, directory, stem: str) -> list[str]:
    """What a scanner reads off a printed PDF: every page rendered at 200 dpi, decoded by zxing-cpp."""
    path = directory / f"{stem}.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", str(path), str(directory / stem)], check=True)
    codes = []
    for image in sorted(directory.glob(f"{stem}-*.png")):
        codes += [result.text for result in zxingcpp.read_barcodes(Image.open(image))]
    return codes


def pdf_text(pdf: bytes, directory, stem: str) -> str:
    path = directory / f"{stem}.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True,
                          text=True).stdout


def synthetic_plate(directory) -> list[str]:
    """One 512 × 512 synthetic BV2 field per well (labsys/potency/synthetic.py), as 16-bit TIFFs
    named by well, the way a microscope exports them."""
    from labsys.potency.demo import tiff_bytes
    from labsys.potency.synthetic import synthetic_field

    paths = []
    for index, (well, (_condition, _ratio, fraction)) in enumerate(sorted(PLATE.items())):
        field = synthetic_field(shape=(512, 512), cell_count=90, activation_fraction=fraction, seed=100 + 7 * index + 1)
        path = directory / f"{well}_f1.tif"
        path.write_bytes(tiff_bytes(field.image))
        paths.append(str(path))
    return paths


def install_specification(app) -> None:
    """No page creates the lab's first specification (installation and the demo loader do):
    the default one, approved by QA a year ago, through the release service."""
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.services import find_user
    from labsys.auth.signatures import SignatureCheck
    from labsys.db import utcnow
    from labsys.release import specs

    with app.app_context():
        qa2 = find_user("qa2")
        specs.install_default_specification(qa2, utcnow() - dt.timedelta(days=365),
                                            SignatureCheck(qa2, SignatureMeaning.APPROVED, "installation"))


def test_a_lot_from_donor_to_patient_through_the_browser(potency_server, browser, tmp_path):
    base_url, app = potency_server
    install_specification(app)
    desk = Desk(browser, base_url)
    try:
        _journey(desk, base_url, tmp_path)
    finally:
        desk.close()


def _journey(desk, base_url: str, tmp_path) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    collected = now - dt.timedelta(days=30)
    received = collected + dt.timedelta(hours=5)
    tech, tech2, qa = desk("technician"), desk("technician2"), desk("qa")

    # 1. The technician registers the donor (coded ID, screening, all nine markers).
    tech.goto(f"{base_url}/batches/donors/new")
    tech.fill("#code", DONOR)
    tech.fill("#consent_date", (collected - dt.timedelta(days=20)).date().isoformat())
    tech.select_option("#screening_outcome", "acceptable")
    tech.fill("#specimen_date", (collected - dt.timedelta(days=1)).date().isoformat())
    markers = tech.locator("select[id]").evaluate_all(
        "els => els.map(e => e.id).filter(id => id !== 'screening_outcome')")
    assert len(markers) == 9
    for marker in markers:
        tech.select_option(f"#{marker}", "non_reactive")
    tech.click("button[type=submit].primary")
    tech.wait_for_selector(f"h1:has-text('Donor {DONOR}')")
    assert f"Donor {DONOR} registered." in flash_text(tech)
    assert "Pending" in text_of(tech, "h1")
    assert tech.locator("table.markers tbody tr").count() == 9
    donor_url = tech.url
    screenshot(tech, "journey-01-donor")

    # 2. QA signs the eligibility determination (e-signature: user ID and password again).
    qa.goto(donor_url)
    sign(qa, "qa")
    qa.click("text=Sign the determination")
    assert "Eligibility determined and signed." in flash_text(qa)
    assert "Eligible" in text_of(qa, "h1")
    assert "Approved" in text_of(qa, ".signature-block")
    screenshot(qa, "journey-02-eligibility")

    # 3. Cord receipt, then the batch.
    tech.goto(donor_url)
    tech.click("text=Receive a cord")
    tech.fill("#collected_at", lab_time(collected))
    tech.fill("#received_at", lab_time(received))
    tech.fill("#transport_temperature_c", "4.5")
    tech.fill("#weight_g", "41.2")
    tech.select_option("#delivery_type", "caesarean")
    tech.fill("#gestational_age_weeks", "39")
    tech.click("button[type=submit].primary")
    assert "Cord received." in flash_text(tech)
    screenshot(tech, "journey-03-cord")
    tech.click("text=Start the batch")
    tech.wait_for_selector("h1:has-text('Batch record')")
    batch_url = tech.url
    lot = tech.inner_text("h1 .din").split()[0]
    assert re.fullmatch(r"W\d{12}", lot), lot
    assert "In process" in text_of(tech, "h1")

    # 4. Tissue processing, P0 and P1; technician2 verifies each count by re-entering it.
    tech.click("text=Record tissue processing")
    tech.select_option("#step_type", "tissue_processing")
    tech.select_option("#method", "explant")
    tech.fill("#started_at", lab_time(received + dt.timedelta(hours=1)))
    tech.fill("#ended_at", lab_time(received + dt.timedelta(hours=2)))
    tech.fill("#equipment", "BSC-02")
    tech.click("button[type=submit].primary")
    passages = [  # number, start, end, seeded, harvested, viability, flasks
        (0, received + dt.timedelta(hours=3), received + dt.timedelta(days=10), None, 20_000_000, "94.5", 4),
        (1, received + dt.timedelta(days=11), received + dt.timedelta(days=14), 20_000_000, 120_000_000, "95.0", 8),
    ]
    for number, start, end, seeded, harvested, viability, flasks in passages:
        tech.click(f"text=Record passage P{number}")
        assert tech.input_value("#passage_number") == str(number)
        tech.fill("#started_at", lab_time(start))
        tech.fill("#ended_at", lab_time(end))
        tech.fill("#equipment", "BSC-02, INC-01")
        if seeded:
            tech.fill("#seeded_viable_cells", str(seeded))
        tech.fill("#harvested_viable_cells", str(harvested))
        tech.fill("#viability_percent", viability)
        tech.fill("#flask_count", str(flasks))
        tech.click("button[type=submit].primary")
        assert "1 critical entry awaits second-person verification" in tech.inner_text("#unverified-alert")
        tech2.goto(batch_url)
        tech2.click("#unverified-alert a")
        tech2.fill("#harvested_viable_cells", str(harvested))
        tech2.fill("#viability_percent", viability)
        sign(tech2, "technician2")
        if number == 1:
            screenshot(tech2, "journey-04-passage-verification")
        tech2.click("button[type=submit].primary")
        tech2.wait_for_selector("h1:has-text('Batch record')")
        assert tech2.locator("#unverified-alert").count() == 0
    tech.goto(batch_url)
    assert tech.locator("svg.growth-chart circle").count() == 2

    # 5. Fill, second-person check of the fill, and the label sheet.
    tech.click("text=Fill vials")
    tech.fill("#vial_count", str(VIALS_FILLED))
    tech.fill("#viable_cells_per_vial", str(CELLS_PER_VIAL))
    tech.fill("#volume_ml", "5")
    tech.fill("#viability_percent", "93")
    tech.fill("#started_at", lab_time(received + dt.timedelta(days=14, hours=2)))
    tech.fill("#filled_at", lab_time(received + dt.timedelta(days=14, hours=3)))
    tech.fill("#equipment", "BSC-02, FILL-01")
    tech.click("button[type=submit].primary")
    tech.wait_for_selector(f"text={VIALS_FILLED} vials filled")
    assert "Quarantine" in text_of(tech, "h1")
    tech2.goto(batch_url)
    tech2.click("#unverified-alert a")
    tech2.fill("#viable_cells_per_vial", str(CELLS_PER_VIAL))
    tech2.fill("#viability_percent", "93")
    sign(tech2, "technician2")
    tech2.click("button[type=submit].primary")
    tech2.wait_for_selector("h1:has-text('Batch record')")
    assert tech2.locator("#unverified-alert").count() == 0
    tech.goto(batch_url)
    with tech.expect_download() as download_info:
        tech.click("text=Print vial labels (PDF)")
    labels_pdf = download_info.value.path().read_bytes()
    assert labels_pdf[:4] == b"%PDF"
    vial_codes = decode_qr_codes(labels_pdf, tmp_path, "labels")
    assert len(vial_codes) == VIALS_FILLED
    assert all(code.startswith(f"LS1.VIAL.{lot}") for code in vial_codes)
    tech.goto(batch_url)
    body = tech.inner_text("main")
    for division in range(1, VIALS_FILLED + 1):
        assert f"{lot}{division:03d}" in body
    screenshot(tech, "journey-05-batch-record")

    # 6. Potency: the plate, its synthetic field images uploaded, the progress bar, the viewer.
    tech.goto(f"{base_url}/potency/new")
    tech.fill("#assay_date", (now - dt.timedelta(days=10)).date().isoformat())
    tech.fill("#bv2_passage", "9")
    tech.fill("#lps_lot", "LPS-J-01")
    tech.fill("#lps_ng_per_ml", "100")
    tech.fill("#test_lots", lot)
    tech.fill("#reference_lot", "MSC-REF-01")
    tech.select_option("#plate_format", "24")
    tech.fill("#min_cells_per_field", "20")
    tech.click("button[type=submit].primary")
    tech.wait_for_selector("#layout-form")
    for well, (condition, ratio, _fraction) in PLATE.items():
        tech.select_option(f"#cond-{well}", condition)
        if condition == "test":
            tech.select_option(f"#lot-{well}", lot)
        if ratio:
            tech.fill(f"#ratio-{well}", ratio)
    tech.click("#layout-form button[type=submit].primary")
    tech.wait_for_selector("text=Plate layout saved.")
    tech.click("text=Upload field images")
    tech.set_input_files("#files", synthetic_plate(tmp_path))
    tech.click("button[type=submit].primary")
    tech.wait_for_selector(f"text={len(PLATE)} image(s) stored.")
    tech.click("#start-scoring")
    bar = tech.wait_for_selector("#score-progress")
    assert bar.get_attribute("data-state") == "scoring"
    screenshot(tech, "journey-06-potency-progress")
    tech.wait_for_selector("#lot-results", timeout=120_000)
    assert tech.get_attribute("#score-progress", "value") == "100"
    assert f"{len(PLATE)} of {len(PLATE)} fields scored" in tech.inner_text("#score-progress-text")
    run_url = tech.url
    tech.click("#image-table tr:has-text('B01_f1.tif') a.view-field")
    tech.wait_for_selector("#field-picture")
    wait_until(tech, "document.getElementById('field-picture').naturalWidth > 0")
    assert "overlay.png" in tech.get_attribute("#field-picture", "src")
    assert "LPS + test lot" in tech.inner_text("main") or lot in tech.inner_text("main")
    screenshot(tech, "journey-07-potency-overlay")

    # 7. QA reviews and approves the run (two signatures).
    qa.goto(run_url)
    summary = qa.locator(f"#lot-results tr.summary-row:has-text('{lot}') td").all_inner_texts()
    inhibition = float(summary[6].rstrip(" %"))
    assert 20 <= inhibition <= 100, summary  # the specification asks ≥ 20 %
    validity = [" ".join(t.split()) for t in qa.locator("ul.validity li").all_text_contents()]
    assert len(validity) == 5 and all(t.startswith("Pass") for t in validity), validity
    sign(qa, "qa")
    qa.click("text=Sign review")
    assert "Run reviewed: Reviewed." in flash_text(qa)
    sign(qa, "qa")
    qa.click("text=Approve run")
    assert "Run approved." in flash_text(qa)
    screenshot(qa, "journey-08-potency-approved")

    # 8. QC results: the technician enters each, technician2 verifies each.
    tech.goto(f"{base_url}/release/results")
    tech.click(f"tr:has-text('{lot}') a:has-text('Results')")
    tech.wait_for_selector("h1:has-text('QC results of lot')")
    results_url = tech.url
    single = "form[action$='/results']"
    today = now.astimezone(LAB_ZONE).date().isoformat()
    for code, (value, unit) in SINGLE_RESULTS.items():
        tech.select_option(f"{single} [name=test_code]", code)
        tech.fill(f"{single} [name=value]", value)
        tech.fill(f"{single} [name=unit]", unit)
        tech.fill(f"{single} [name=method]", "SOP-QC")
        tech.fill(f"{single} [name=instrument]", "INST-1")
        tech.fill(f"{single} [name=performed_by]", "A. Analyst")
        tech.fill(f"{single} [name=performed_on]", today)
        tech.click(f"{single} button[type=submit]")
        assert f"Result for {code} saved; a second person must verify it." in flash_text(tech)
    panel = "form[action$='/flow-panel']"
    tech.fill(f"{panel} [name=instrument]", "FACS-1")
    tech.fill(f"{panel} [name=performed_by]", "B. Cytometrist")
    tech.fill(f"{panel} [name=performed_on]", today)
    for marker, value in FLOW_PANEL.items():
        tech.fill(f"{panel} [name={marker}_value]", value)
    tech.click(f"{panel} button[type=submit]")
    assert "Flow cytometry panel saved (8 markers)" in flash_text(tech)
    entered = len(SINGLE_RESULTS) + len(FLOW_PANEL)
    assert tech.locator("table.results tbody tr").count() == entered
    assert tech.locator("table.results .badge-pending").count() == entered
    assert tech.locator("table.results button:has-text('Verify')").count() == 0  # not one's own entries
    screenshot(tech, "journey-09-qc-results")
    tech2.goto(results_url)
    for remaining in range(entered, 0, -1):
        expect(tech2.locator("table.results button:has-text('Verify')")).to_have_count(remaining)
        tech2.locator("table.results button:has-text('Verify')").first.click()
        assert "verified." in flash_text(tech2)
    expect(tech2.locator("table.results .badge-pending")).to_have_count(0)
    assert tech2.locator("table.results tbody tr td:nth-child(7):has-text('Zhou Jie')").count() == entered
    screenshot(tech2, "journey-10-qc-verified")

    # 9. QA sees the lot waiting on the home page, releases it with an e-signature and selects
    # it for the trial.
    qa.goto(base_url)
    assert "Lots awaiting review: 1" in qa.inner_text("main")
    screenshot(qa, "journey-11-home-qa", full_page=False)
    qa.goto(f"{base_url}/release/")
    qa.click(f"tr:has-text('{lot}') a:has-text('Review')")
    qa.wait_for_selector("h1:has-text('QA review of lot')")
    assert "Every rule passes." in qa.inner_text(".alert-success")
    assert qa.locator("tr.verdict-row").count() == qa.locator("tr.verdict-pass").count() == 22
    assert "Every passage count and the fill are verified by a second person." in qa.inner_text(
        "tr[data-code=ENTRIES]")
    assert "inhibition" in qa.inner_text("main")
    sign(qa, "qa", ".decision-form", comment="Meets specification HUC-MSC-RELEASE v1.")
    # The page ends with the audit trail since fill (very long): the picture stops at the decision.
    bottom = qa.locator(".decision-form").evaluate("el => el.getBoundingClientRect().bottom + window.scrollY")
    screenshot(qa, "journey-12-release-review", clip={"x": 0, "y": 0, "width": 1280, "height": bottom + 24})
    qa.click("button[name=decision][value=release]")
    assert f"Lot {lot}: Released." in flash_text(qa)
    assert "Released" in text_of(qa, ".page-head .badge")
    assert "Released" in text_of(qa, ".signature-block")
    screenshot(qa, "journey-13-released", full_page=False)
    coa_href = qa.get_attribute("a:has-text('Certificate of analysis (PDF)')", "href")
    coa = pdf_text(qa.request.get(f"{base_url}{coa_href}").body(), tmp_path, "coa")
    assert lot in coa and "Released" in coa
    qa.goto(f"{base_url}/release/selection")
    row = qa.locator(f"tr[data-lot='{lot}']")
    assert row.locator("td:nth-child(5)").inner_text().strip() == str(VIALS_FILLED)
    row.locator("summary").click()
    sign(qa, "qa", f"tr[data-lot='{lot}']")
    row.locator("button:has-text('Select lot')").click()
    assert f"Lot {lot} selected for the trial." in flash_text(qa)
    assert "Selected" in qa.locator(f"tr[data-lot='{lot}']").inner_text()
    screenshot(qa, "journey-14-lot-selected")

    # 10. The pharmacist configures the trial and generates the sealed allocation list.
    pharmacist, investigator = desk("pharmacist"), desk("investigator")
    pharmacist.goto(f"{base_url}/trial/setup")
    pharmacist.fill("#registry_number", "NCT04282928")
    pharmacist.fill("#title", "HUC-MSC infusion in adults with severe viral pneumonia (Phase 1, masked)")
    pharmacist.fill("#control_arm_name", "Routine care")
    pharmacist.fill("#msc_arm_name", "HUC-MSC + routine care")
    pharmacist.fill("#block_sizes", "2,4")
    pharmacist.fill("#target_enrolment", "20")
    pharmacist.fill("#dose_cells_per_kg", "500000")
    pharmacist.fill("#exclusions", "Pregnancy or breastfeeding\nActive malignancy")
    pharmacist.click("button[type=submit].primary")
    assert "Trial configuration saved." in flash_text(pharmacist)
    pharmacist.goto(f"{base_url}/trial/allocation")
    pharmacist.check("#confirm")
    pharmacist.click("text=Generate the allocation list")
    assert "The allocation list was generated" in flash_text(pharmacist)

    # 11. The investigator enrols patients; the pharmacist randomizes until one is in the cell arm
    # (blocks of 2 and 4 at 1:1: at most two controls come first).
    patient_url = study_id = None
    for number in range(1, 4):
        investigator.goto(f"{base_url}/trial/patients/new")
        investigator.fill("#screening_number", f"SCR-J{number:02d}")
        investigator.fill("#year_of_birth", "1970")
        investigator.select_option("#sex", "female")
        investigator.fill("#weight_kg", "60")
        investigator.fill("#weight_date", today)
        investigator.fill("#consent_date", today)
        investigator.check("input[name=diagnosis_confirmed][value=yes]")
        investigator.check("input[name=exclusion_0][value=no]")
        investigator.check("input[name=exclusion_1][value=no]")
        if number == 1:
            screenshot(investigator, "journey-15-enrolment")
        investigator.click("button[type=submit].primary")
        assert f"Patient SCR-J{number:02d} enrolled (eligibility: eligible)." in flash_text(investigator)
        url = investigator.url
        pharmacist.goto(url)
        pharmacist.click("button:has-text('Randomize')")
        message = flash_text(pharmacist)
        assert "Randomized: study ID" in message
        if "arm: HUC-MSC + routine care" in message:
            patient_url = url
            study_id = re.search(r"study ID (\S+),", message).group(1)
            screenshot(pharmacist, "journey-16-randomized")
            break
        assert "arm: Routine care" in message
    assert patient_url, "three patients and none in the cell arm: the block list is wrong"

    # 12. The investigator orders the infusion (masked: the arm is not shown to them).
    investigator.goto(patient_url)
    assert "HUC-MSC + routine care" not in investigator.inner_text("main")
    investigator.click("text=Order the infusion")
    investigator.fill("#infusion_date", today)
    investigator.click("button[type=submit].primary")
    assert f"Infusion ordered for {today}." in flash_text(investigator)

    # 13. Pharmacy: allocate the proposed vials (60 kg × 0.5 × 10⁶ = 3 vials), thaw each.
    pharmacist.goto(f"{base_url}/pharmacy/")
    pharmacist.locator("main a[href*='/pharmacy/orders/']").first.click()
    assert study_id in pharmacist.inner_text("dl.facts")
    proposal = pharmacist.inner_text("main section.card")
    assert f"Lot {lot}, first expiry first: 3 vial(s), 30,000,000 viable cells" in proposal
    pharmacist.click("text=Confirm allocation")
    assert "3 vial(s) allocated to kit" in flash_text(pharmacist)
    order_url = pharmacist.url
    for _ in range(3):
        form = pharmacist.locator("form[action*='/thaw']").first
        form.locator("[name=temperature_c]").fill("37")
        form.locator("button:has-text('Record thaw')").click()
        assert "thawed; use within" in flash_text(pharmacist)
    assert pharmacist.locator("form[action*='/thaw']").count() == 0
    allocated = [line.split()[0] for line in pharmacist.locator("main table tbody tr").all_inner_texts()]
    assert len(allocated) == 3
    screenshot(pharmacist, "journey-17-thawed")
    wristband_href = pharmacist.get_attribute("a:has-text('Print wristband label (PDF)')", "href")
    wristband_pdf = pharmacist.request.get(f"{base_url}{wristband_href}").body()
    [wristband] = decode_qr_codes(wristband_pdf, tmp_path, "wristband")
    assert wristband.startswith(f"LS1.PATIENT.{study_id}-")
    codes = {code.split(".")[2]: code for code in vial_codes}
    wrong = next(code for identifier, code in codes.items() if identifier not in allocated)

    # 14. Scan to dispense: wristband, then a wrong vial — refused in words — then the right ones.
    pharmacist.goto(f"{base_url}/pharmacy/dispense")
    assert pharmacist.evaluate("document.activeElement.id") == "scan-input"
    scan(pharmacist, wristband)
    scan(pharmacist, wrong)
    result = pharmacist.locator("#check-result")
    result.locator("h2").wait_for()
    refusal = result.inner_text()
    assert "Checks failed: do not dispense" in refusal
    assert f"Vial {wrong.split('.')[2]} has no thaw recorded." in refusal
    assert "All checks passed" not in refusal
    screenshot(pharmacist, "journey-18-dispense-wrong-vial")
    pharmacist.click("#scan-reset")
    scan(pharmacist, wristband)
    for identifier in allocated:
        scan(pharmacist, codes[identifier])
    wait_until(pharmacist, "document.querySelector('#check-result').classList.contains('check-passed')")
    assert "All checks passed" in result.inner_text()
    assert "3 vial(s): 30,000,000 viable cells for a target of 30,000,000" in result.inner_text()
    assert "Delivered dose is 100.0 % of target" in result.inner_text()
    sign(pharmacist, "pharmacist", "#dispense-form")
    pharmacist.fill("#witness_username", "pharmacist2")
    pharmacist.fill("#witness_password", DEMO_PASSWORD)
    screenshot(pharmacist, "journey-19-dispense-checks-passed")
    pharmacist.click("#dispense-submit")
    pharmacist.wait_for_url("**/pharmacy/dispensings/*")
    assert "Dispensed" in flash_text(pharmacist)
    record = pharmacist.inner_text("main")
    assert "Liu Yang" in record and "Zhang Wei" in record  # the pharmacist and the witness
    screenshot(pharmacist, "journey-20-dispensed")
    dispensing_url = pharmacist.url
    dispensing_number = text_of(pharmacist, "h1").split()[-1]
    assert re.fullmatch(r"DSP-\d{4}-\d{5}", dispensing_number), dispensing_number
    href = pharmacist.get_attribute("a:has-text('Print chain-of-custody certificate')", "href")
    certificate = pharmacist.request.get(f"{base_url}{href}")
    assert certificate.status == 200 and certificate.headers["content-type"] == "application/pdf"
    text = pdf_text(certificate.body(), tmp_path, "certificate")
    assert study_id in text
    for identifier in allocated:
        assert identifier in text
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile",
                    str(tmp_path / "certificate.pdf"), str(ARTIFACTS / "journey-21-certificate")], check=True)

    # 15. Bedside: the investigator scans the wristband and the vials and records the infusion.
    investigator.goto(f"{base_url}/bedside/")
    assert dispensing_number in investigator.inner_text("main table")
    investigator.locator("main a[href*='/administer']").first.click()
    administer_url = investigator.url
    investigator.fill("#wristband", wristband)
    investigator.fill("#vials", "\n".join(codes[identifier] for identifier in allocated))
    # The infusion cannot start before the dispensing (just now) nor stop in the future: a test
    # does not wait half an hour, so it runs for the current minute.
    started = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    investigator.fill("#infusion_start", lab_time(started))
    investigator.fill("#infusion_stop", lab_time(started + dt.timedelta(minutes=1)))
    sign(investigator, "investigator")
    screenshot(investigator, "journey-22-bedside")
    investigator.click("button[type=submit].primary")
    assert f"Administration of {dispensing_number} recorded." in flash_text(investigator)
    assert investigator.url == dispensing_url
    screenshot(investigator, "journey-23-administered")
    investigator.goto(administer_url)
    assert "Administered: infusion" in investigator.inner_text("main")
    investigator.goto(f"{base_url}/bedside/")
    assert "Nothing is waiting for administration." in investigator.inner_text("main")

    # 16. Accountability: every vial of the lot accounted for.
    qa.goto(f"{base_url}/pharmacy/accountability")
    row = qa.locator(f"tr:has-text('{lot}')")
    headers = [h.strip() for h in qa.locator("main table thead th").all_inner_texts()]
    counts = dict(zip(headers, [c.strip() for c in row.locator("td").all_inner_texts()]))
    screenshot(qa, "journey-24-accountability", full_page=False)
    assert {name: counts[name] for name in ("Made", "Released", "Allocated", "Dispensed", "Administered",
                                            "Destroyed", "In stock", "Balanced")} == {
        "Made": "10", "Released": "10", "Allocated": "3", "Dispensed": "3", "Administered": "3",
        "Destroyed": "0", "In stock": "7", "Balanced": "yes"}, counts
    report = qa.request.get(base_url + row.locator("a", has_text="PDF").get_attribute("href"))
    assert report.status == 200 and report.body()[:4] == b"%PDF"
    assert lot in pdf_text(report.body(), tmp_path, "accountability")


def scan(page, code: str) -> None:
    """A keyboard-wedge scanner: types the code into the focused field and presses Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")
