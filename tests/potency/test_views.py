"""Potency pages through the CSRF-aware client: access by role, forms, uploads, review, viewer."""
from __future__ import annotations

import io
import re
import zipfile

import pytest
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.potency import services
from labsys.potency.models import FieldImage, PotencyRun
from labsys.potency.states import RunState
from tests.conftest import DEMO_PASSWORD
from tests.potency.app_support import potency_config  # noqa: F401  (autouse)
from tests.potency.app_support import RUN_DEFAULTS, field_tiff, layout_files, make_run


def _run_form(**overrides):
    data = {"assay_date": "2026-11-24", "bv2_passage": "9", "lps_lot": "LPS-7", "lps_ng_per_ml": "100",
            "test_lots": "LOT-A\nLOT-B", "reference_lot": "LOT-REF", "plate_format": "24",
            "parameter_set": "bv2-default-v1@1", "measure": "activation_fraction", "pixel_size_um": "0.65",
            "min_cells_per_field": "20", "max_replicate_cv_percent": "20", "min_z_prime": "0.4"}
    data.update(overrides)
    return data


@pytest.mark.parametrize("username, status", [("technician", 200), ("qa", 200), ("pharmacist", 403),
                                              ("investigator", 403), ("admin", 403)])
def test_the_run_list_is_for_technicians_and_qa(login_as, username, status):
    assert login_as(username).get("/potency/").status_code == status


def test_a_technician_records_a_run_and_is_sent_to_the_layout(login_as, db):
    client = login_as("technician")
    response = client.post_form("/potency/new", _run_form())
    assert response.status_code == 302 and "/layout" in response.headers["Location"]
    run = db.session.scalar(select(PotencyRun))
    assert run.lots_under_test == ["LOT-A", "LOT-B"] and run.plate_format == 24


def test_a_bad_run_form_re_renders_with_field_errors_and_writes_nothing(login_as, db):
    client = login_as("technician")
    response = client.post_form("/potency/new", _run_form(lps_ng_per_ml="", test_lots="", reference_lot="LOT-REF",
                                                          lps_lot="LPS-typed"))
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter the LPS concentration." in html and 'value="LPS-typed"' in html
    assert db.session.scalar(select(PotencyRun)) is None


def test_qa_cannot_create_runs(login_as):
    assert login_as("qa").get("/potency/new").status_code == 403


def test_the_layout_editor_saves_wells_from_the_grid(login_as, db, demo_users):
    run = make_run(demo_users["technician"], layout={})
    client = login_as("technician")
    page = client.get(f"/potency/{run.id}/layout").get_data(as_text=True)
    assert page.count('class="well-condition"') == 24
    response = client.post_form(f"/potency/{run.id}/layout", {
        "cond-A01": "lps", "cond-A02": "unstimulated", "cond-B01": "test", "lot-B01": "LOT-A", "ratio-B01": "1:10",
        "cond-C01": "reference", "ratio-C01": "1:20"})
    assert response.status_code == 302
    run = db.session.get(PotencyRun, run.id)
    wells = {w.well: w for w in run.wells}
    assert wells["B01"].lot_identifier == "LOT-A" and wells["C01"].lot_identifier == "LOT-REF"
    assert wells["A02"].condition.value == "unstimulated"


def test_a_bad_layout_lists_every_refused_well(login_as, db, demo_users):
    run = make_run(demo_users["technician"], layout={})
    response = login_as("technician").post_form(f"/potency/{run.id}/layout", {
        "cond-B01": "test", "lot-B01": "", "ratio-B01": "1:10", "cond-B02": "test", "lot-B02": "LOT-A", "ratio-B02": "x"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "B01: choose one of the lots under test" in html and "B02: give the MSC:BV2 ratio" in html
    assert db.session.get(PotencyRun, run.id).wells == []


def test_uploading_many_files_at_once_stores_them(login_as, db, demo_users):
    run = make_run(demo_users["technician"])
    files = [(io.BytesIO(data), name) for name, data in layout_files()[:3]]
    response = login_as("technician").post_form(f"/potency/{run.id}/upload", {"files": files},
                                                content_type="multipart/form-data")
    assert response.status_code == 302
    assert len(db.session.scalars(select(FieldImage)).all()) == 3


def test_a_corrupt_file_in_an_upload_stores_nothing_and_says_why(login_as, db, demo_users):
    run = make_run(demo_users["technician"])
    files = [(io.BytesIO(field_tiff(0.15, 9)), "A01_f1.tif"), (io.BytesIO(b"\x89PNG\r\n\x1a\nbroken"), "A02_f1.png")]
    response = login_as("technician").post_form(f"/potency/{run.id}/upload", {"files": files},
                                                content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "No image was stored." in html and "A02_f1.png" in html
    assert db.session.scalar(select(FieldImage)) is None


def test_scoring_from_the_run_page_shows_results_heatmap_and_progress(login_as, db, demo_users):
    tech = demo_users["technician"]
    run = make_run(tech)
    services.upload_images(tech, run, layout_files())
    client = login_as("technician")
    assert client.post_form(f"/potency/{run.id}/score", token_from=f"/potency/{run.id}").status_code == 302
    progress = client.get(f"/api/potency/runs/{run.id}/progress").get_json()
    assert progress == {"run_id": run.id, "state": "scored", "fields_total": 10, "fields_done": 10,
                        "fields_failed": 0, "percent": 100, "finished": True}
    html = client.get(f"/potency/{run.id}").get_data(as_text=True)
    assert 'id="lot-results"' in html and "LOT-A" in html and 'class="plate-heatmap' in html
    assert re.search(r'<span class="hm-cond">L</span>\s*<span class="hm-score">0\.\d+', html)
    assert 'id="score-progress"' in html and 'data-state="scored"' in html


def test_the_viewer_serves_the_outline_overlay_and_raw_field_as_png(login_as, db, demo_users):
    tech = demo_users["technician"]
    run = make_run(tech)
    services.upload_images(tech, run, layout_files())
    services.start_scoring(tech, run)
    from labsys.potency import jobs

    jobs.score_run(run.id)
    image = db.session.scalar(select(FieldImage))
    client = login_as("qa")
    page = client.get(f"/potency/images/{image.id}").get_data(as_text=True)
    assert "orange outline = activated" in page and f"/potency/images/{image.id}/overlay.png" in page
    for suffix in ("overlay.png", "raw.png"):
        response = client.get(f"/potency/images/{image.id}/{suffix}")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert login_as("pharmacist").get(f"/potency/images/{image.id}/overlay.png").status_code == 403


def test_excluding_a_field_from_the_viewer_needs_a_reason(login_as, db, demo_users):
    tech = demo_users["technician"]
    run = make_run(tech)
    services.upload_images(tech, run, layout_files()[:1])
    image = db.session.scalar(select(FieldImage))
    client = login_as("technician")
    response = client.post_form(f"/potency/images/{image.id}", {"reason": ""})
    assert response.status_code == 422 and "A reason is required." in response.get_data(as_text=True)
    assert client.post_form(f"/potency/images/{image.id}", {"reason": "Bubble over the field"}).status_code == 302
    image = db.session.get(FieldImage, image.id)
    assert image.excluded and image.exclusion_reason == "Bubble over the field"
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "potency.field.exclude"))
    assert entry.reason == "Bubble over the field"


def _scored(demo_users):
    tech = demo_users["technician"]
    run = make_run(tech)
    services.upload_images(tech, run, layout_files())
    services.start_scoring(tech, run)
    from labsys.potency import jobs

    jobs.score_run(run.id)
    return run


def test_qa_reviews_and_approves_with_an_e_signature(login_as, db, demo_users):
    run = _scored(demo_users)
    client = login_as("qa")
    url = f"/potency/{run.id}"
    wrong = client.post_form(f"{url}/review", {"sign_username": "qa", "sign_password": "wrong"}, token_from=url)
    assert wrong.status_code == 403
    assert db.session.get(PotencyRun, run.id).state == RunState.SCORED
    ok = client.post_form(f"{url}/review", {"sign_username": "qa", "sign_password": DEMO_PASSWORD}, token_from=url)
    assert ok.status_code == 302 and db.session.get(PotencyRun, run.id).state == RunState.REVIEWED
    client.post_form(f"{url}/approve", {"sign_username": "qa", "sign_password": DEMO_PASSWORD,
                                        "sign_comment": "Valid run"}, token_from=url)
    assert db.session.get(PotencyRun, run.id).state == RunState.APPROVED
    html = client.get(url).get_data(as_text=True)
    assert "Wang Fang" in html and "Valid run" in html
    assert services.approved_potency_for_lot("LOT-A").run_id == run.id


def test_a_technician_cannot_approve(login_as, demo_users):
    run = _scored(demo_users)
    response = login_as("technician").post_form(f"/potency/{run.id}/approve", {
        "sign_username": "technician", "sign_password": DEMO_PASSWORD}, token_from=f"/potency/{run.id}")
    assert response.status_code == 403


def test_search_finds_runs_by_lot(login_as, demo_users):
    make_run(demo_users["technician"], layout={}, test_lots="LOT-FIND-ME")
    make_run(demo_users["technician"], layout={}, test_lots="OTHER")
    html = login_as("qa").get("/potency/?q=find-me").get_data(as_text=True)
    assert "1 in all" in html


def test_trends_and_calibration_pages_render(login_as, demo_users):
    _scored(demo_users)
    client = login_as("qa")
    trends = client.get("/potency/trends").get_data(as_text=True)
    assert "Levey-Jennings" in trends and 'id="chart-lps"' in trends
    assert client.get("/potency/calibration").status_code == 200


def test_demo_data_builds_a_scored_approved_run_once(app, db, demo_users):
    from labsys.potency.demo import DEMO_TEST_LOTS, load_demo_data

    app.config["POTENCY_SCORING_PROCESSES"] = 1
    load_demo_data()
    load_demo_data()
    runs = db.session.scalars(select(PotencyRun)).all()
    assert len(runs) == 1 and runs[0].state == RunState.APPROVED, runs[0].validity
    for lot in DEMO_TEST_LOTS:
        assert services.approved_potency_for_lot(lot).percent_inhibition is not None


def test_qa_calibrates_from_an_approved_validation_run_and_approves_the_set(login_as, db, demo_users):
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import authenticate_signer
    from labsys.potency.models import CalibratedParameterSet

    tech, qa = demo_users["technician"], demo_users["qa"]
    run = make_run(tech, is_validation=True)
    services.upload_images(tech, run, layout_files())
    services.start_scoring(tech, run)
    from labsys.potency import jobs

    jobs.score_run(run.id)
    run = services.get_run(run.id)
    services.review_run(authenticate_signer(qa, "qa", DEMO_PASSWORD, SignatureMeaning.REVIEWED), run)
    services.approve_run(authenticate_signer(qa, "qa", DEMO_PASSWORD, SignatureMeaning.APPROVED), run)
    client = login_as("qa")
    assert login_as("technician").post_form(f"/potency/{run.id}/calibrate", token_from="/potency/calibration").status_code == 403
    assert client.post_form(f"/potency/{run.id}/calibrate", token_from="/potency/calibration").status_code == 302
    record = db.session.scalar(select(CalibratedParameterSet))
    page = client.get("/potency/calibration").get_data(as_text=True)
    assert f"pset-{record.id}" in page and "Approve parameter set" in page
    tech_client = login_as("technician")
    assert f"{record.name}@{record.version}" not in tech_client.get("/potency/new").get_data(as_text=True)
    response = client.post_form(f"/potency/parameter-sets/{record.id}/approve",
                                {"sign_username": "qa", "sign_password": DEMO_PASSWORD}, token_from="/potency/calibration")
    assert response.status_code == 302
    assert db.session.get(CalibratedParameterSet, record.id).state.value == "approved"
    assert f"{record.name}@{record.version}" in tech_client.get("/potency/new").get_data(as_text=True)


def test_the_run_page_reads_in_simplified_chinese(login_as, demo_users):
    run = _scored(demo_users)
    client = login_as("qa")
    client.post_form("/account/language", {"locale": "zh_CN", "next": "/"}, token_from="/")
    html = client.get(f"/potency/{run.id}").get_data(as_text=True)
    assert "批次结果" in html and "运行有效性" in html and "孔评分（中位数）" in html


def test_the_home_page_shows_the_potency_panel_to_technicians_and_qa_only(login_as, demo_users):
    run = _scored(demo_users)
    assert run.state == RunState.SCORED
    html = login_as("qa").get("/").get_data(as_text=True)
    assert "BV2 potency" in html and "run(s) awaiting QA review or approval" in html
    assert "BV2 potency" not in login_as("pharmacist").get("/").get_data(as_text=True)


def test_progress_of_an_unknown_run_answers_json_404(login_as):
    response = login_as("technician").get("/api/potency/runs/999/progress")
    assert response.status_code == 404 and response.get_json()["error"] == "NotFound"
