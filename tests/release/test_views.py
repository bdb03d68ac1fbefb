"""Release pages through the CSRF-aware client: review and decision, result entry with field
errors, verification, corrections, the flow panel, specifications, queue, selection, recall."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from labsys.batches.models import Batch
from labsys.batches.states import BatchStatus, VialStatus
from labsys.release import results, specs
from labsys.release.models import QCResult, ReleaseDecision, SpecStatus, SpecificationVersion

from tests.conftest import DEMO_PASSWORD

from .conftest import enter_results, enter_results_via_services, passing_potency


def sign_fields(username: str, comment: str = "reviewed") -> dict:
    return {"sign_username": username, "sign_password": DEMO_PASSWORD, "sign_comment": comment}


def test_qa_sees_every_rule_with_verdict_words_and_releases_a_passing_lot(lots, users, potency_runs, login_as, db):
    batch = lots.lot()
    enter_results_via_services(users, batch)
    passing_potency(potency_runs, batch)
    qa = login_as("qa")
    page = qa.get(f"/release/lots/{batch.id}").get_data(as_text=True)
    assert page.count('class="verdict-row') == 6 + 16
    assert "Every rule passes." in page and "Audit trail since fill" in page
    audit = page[page.index("Audit trail since fill"):]
    assert audit.count("<code>qc_result.enter</code>") == 15 and audit.count("<code>qc_result.verify</code>") == 15
    response = qa.post_form(f"/release/lots/{batch.id}/decide",
                            {"decision": "release", "expected_version": str(batch.version), **sign_fields("qa")},
                            token_from=f"/release/lots/{batch.id}")
    assert response.status_code == 302
    assert db.session.get(Batch, batch.id).status == BatchStatus.RELEASED
    page = qa.get(f"/release/lots/{batch.id}").get_data(as_text=True)
    assert "Certificate of analysis (PDF)" in page and "Released" in page


def test_a_failing_criterion_shows_out_of_specification_and_release_is_refused(lots, users, potency_runs, login_as, db):
    batch = lots.lot()
    enter_results(users, batch, overrides={"ENDOTOXIN": ("0.9", "EU/mL")})
    passing_potency(potency_runs, batch)
    qa = login_as("qa")
    page = qa.get(f"/release/lots/{batch.id}").get_data(as_text=True)
    assert re.search(r'verdict-row verdict-oos" data-code="ENDOTOXIN"', page)
    assert "Out of specification" in page and "1 rule(s) fail." in page
    response = qa.post_form(f"/release/lots/{batch.id}/decide", {"decision": "release", **sign_fields("qa")},
                            token_from=f"/release/lots/{batch.id}")
    assert response.status_code == 422
    assert "0.9 EU/mL is above the limit ≤ 0.5 EU/mL" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(ReleaseDecision.id))) == 0


def test_a_wrong_signature_password_writes_nothing(lots, users, potency_runs, login_as, db):
    batch = lots.lot()
    qa = login_as("qa")
    response = qa.post_form(f"/release/lots/{batch.id}/decide",
                            {"decision": "reject", "sign_username": "qa", "sign_password": "wrong", "sign_comment": "x"},
                            token_from=f"/release/lots/{batch.id}")
    assert response.status_code == 403
    assert db.session.get(Batch, batch.id).status == BatchStatus.QUARANTINE


def test_rejecting_marks_vials_destroyed(lots, users, login_as, db):
    batch = lots.lot(vial_count=2)
    qa = login_as("qa")
    response = qa.post_form(f"/release/lots/{batch.id}/decide",
                            {"decision": "reject", **sign_fields("qa", "mycoplasma positive")},
                            token_from=f"/release/lots/{batch.id}")
    assert response.status_code == 302
    assert {v.status for v in db.session.get(Batch, batch.id).vials} == {VialStatus.DESTROYED}


def test_deciding_a_lot_already_decided_is_a_clear_error(lots, login_as, db):
    batch = lots.lot()
    qa = login_as("qa")
    url = f"/release/lots/{batch.id}/decide"
    assert qa.post_form(url, {"decision": "reject", **sign_fields("qa", "no")},
                        token_from=f"/release/lots/{batch.id}").status_code == 302
    again = qa.post_form(url, {"decision": "reject", **sign_fields("qa", "again")}, token_from="/release/")
    assert again.status_code == 409
    assert "is not awaiting a QA decision (it is rejected)" in again.get_data(as_text=True)
    assert db.session.scalar(select(func.count(ReleaseDecision.id))) == 1


def test_technicians_cannot_open_the_qa_review(lots, login_as):
    batch = lots.lot()
    assert login_as("technician").get(f"/release/lots/{batch.id}").status_code == 403


def _result_form(code, value, unit="", **extra):
    return {"test_code": code, "value": value, "unit": unit, "performed_by": "A. Analyst",
            "performed_on": "2026-11-20", "method": "", "instrument": "INST-1", **extra}


def test_bad_result_input_re_renders_with_a_field_error_and_writes_nothing(lots, login_as, db):
    batch = lots.lot()
    tech = login_as("technician")
    url = f"/release/lots/{batch.id}/results"
    for data, message in [(_result_form("VIABILITY", "ninety", "%"), "“ninety” is not a number."),
                          (_result_form("VIABILITY", "90", "mg"), "The unit must be % for Viability at fill.")]:
        response = tech.post_form(url, data)
        page = response.get_data(as_text=True)
        assert response.status_code == 422 and message in page
        assert 'value="A. Analyst"' in page  # typed values kept
    assert db.session.scalar(select(func.count(QCResult.id))) == 0


def test_a_result_for_a_test_not_in_the_specification_is_refused(lots, users, login_as, db):
    batch = lots.lot()
    with_app_refusal = None
    try:
        results.enter_result(users["technician"], batch, results.ResultInput("GLUCOSE", "5", "mM", "A", None))
    except Exception as error:  # the form only offers the specification's tests; the service refuses others
        with_app_refusal = error
    assert "not in specification" in with_app_refusal.message + " ".join(with_app_refusal.reasons)
    response = login_as("technician").post_form(f"/release/lots/{batch.id}/results", _result_form("GLUCOSE", "5", "mM"))
    assert response.status_code == 422 and "Not a valid choice" in response.get_data(as_text=True)


def test_entering_verifying_and_correcting_a_result_through_the_pages(lots, login_as, db):
    batch = lots.lot()
    tech, tech2 = login_as("technician"), login_as("technician2")
    url = f"/release/lots/{batch.id}/results"
    assert tech.post_form(url, _result_form("ENDOTOXIN", "0.2", "EU/mL"),
                          ).status_code == 302
    result = db.session.scalar(select(QCResult))
    tech.post_form(f"/release/results/{result.id}/verify", {}, token_from=url)
    assert db.session.get(QCResult, result.id).verified_by_id is None
    assert tech2.post_form(f"/release/results/{result.id}/verify", {}, token_from=url).status_code == 302
    assert db.session.get(QCResult, result.id).verified_by_id is not None
    correct_url = f"/release/results/{result.id}/correct"
    response = tech.post_form(correct_url, {**_result_form("ENDOTOXIN", "0.25", "EU/mL"), "reason": ""})
    assert response.status_code == 422 and "A reason is required" in response.get_data(as_text=True)
    response = tech.post_form(correct_url, {**_result_form("ENDOTOXIN", "0.25", "EU/mL"), "reason": "misread"})
    assert response.status_code == 302
    history = tech.get(url).get_data(as_text=True)
    assert "0.2 EU/mL" in history and "0.25 EU/mL" in history and "misread" in history


def test_the_flow_panel_form_saves_eight_markers_or_shows_the_bad_one(lots, login_as, db):
    batch = lots.lot()
    tech = login_as("technician")
    url = f"/release/lots/{batch.id}/flow-panel"
    values = {"cd73_value": "99", "cd90_value": "98.5", "cd105_value": "97", "cd34_value": "0.3",
              "cd45_value": "0.2", "cd11b_value": "0.4", "cd19_value": "0.1", "hla_dr_value": "0.5"}
    base = {"method": "Flow cytometry", "instrument": "FACSCanto II", "performed_by": "B. Analyst",
            "performed_on": "2026-11-20"}
    response = tech.post_form(url, {**base, **values, "cd19_value": "low"}, token_from=f"/release/lots/{batch.id}/results")
    assert response.status_code == 422 and "“low” is not a number." in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(QCResult.id))) == 0
    response = tech.post_form(url, {**base, **values}, token_from=f"/release/lots/{batch.id}/results")
    assert response.status_code == 302
    assert db.session.scalar(select(func.count(QCResult.id))) == 8


def test_raw_data_files_are_attached_and_downloadable(lots, login_as, db):
    import io

    batch = lots.lot()
    tech = login_as("technician")
    url = f"/release/lots/{batch.id}/results"
    data = _result_form("MYCOPLASMA", "negative")
    data["raw_data"] = (io.BytesIO(b"ct,40\n"), "pcr.csv")
    response = tech.post_form(url, data, content_type="multipart/form-data")
    assert response.status_code == 302
    result = db.session.scalar(select(QCResult))
    attachment = result.attachments[0]
    assert attachment.filename == "pcr.csv" and attachment.size_bytes == 6
    assert tech.get(f"/release/attachments/{attachment.id}").data == b"ct,40\n"


def test_a_new_specification_version_is_drafted_edited_and_approved_with_a_signature(spec, login_as, db):
    qa = login_as("qa")
    response = qa.post_form(f"/release/specifications/{spec.specification_id}/drafts",
                            {"change_summary": "Post-thaw viability"}, token_from="/release/specifications")
    assert response.status_code == 302
    draft = db.session.scalar(select(SpecificationVersion).where(SpecificationVersion.status == SpecStatus.DRAFT))
    page_url = f"/release/specifications/versions/{draft.id}"
    bad = qa.post_form(f"{page_url}/criteria", {"test_code": "VIABILITY_THAW", "name": "Post-thaw viability",
                                                "kind": "numeric", "unit": "%"}, token_from=page_url)
    assert bad.status_code == 422 and "needs a lower or an upper limit" in bad.get_data(as_text=True)
    good = qa.post_form(f"{page_url}/criteria", {"test_code": "VIABILITY_THAW", "name": "Post-thaw viability",
                                                 "kind": "numeric", "unit": "%", "lower_limit": "70"},
                        token_from=page_url)
    assert good.status_code == 302
    approved = qa.post_form(f"{page_url}/approve", sign_fields("qa", "approved"), token_from=page_url)
    assert approved.status_code == 302
    db.session.rollback()
    assert specs.current_version().id == draft.id
    assert db.session.get(SpecificationVersion, spec.id).status == SpecStatus.SUPERSEDED
    assert "≥ 70 %" in qa.get(page_url).get_data(as_text=True)


def test_the_queue_and_home_panel_count_the_qa_work(lots, users, login_as):
    batch = lots.lot()
    enter_results(users, batch, overrides={"STERILITY": ("pending", None)}, verify=False)
    qa = login_as("qa")
    queue = qa.get("/release/").get_data(as_text=True)
    assert re.search(r"Lots awaiting review: <strong>1</strong>", queue)
    assert re.search(r"Results awaiting verification: <strong>14</strong>", queue)
    assert re.search(r"Sterility results pending: <strong>1</strong>", queue)
    home = qa.get("/").get_data(as_text=True)
    assert "QC and release" in home and re.search(r"Lots awaiting review: <strong>1</strong>", home)


def test_the_selection_page_ranks_lots_and_qa_selects_one_with_a_signature(lots, users, potency_runs, login_as, db):
    from labsys.release import decisions, selection
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck

    low, high, untested = lots.lot(), lots.lot(), lots.lot()
    for batch, value in ((low, "22"), (high, "47.5")):
        enter_results(users, batch)
        passing_potency(potency_runs, batch, value)
        decisions.decide_lot(users["qa2"], batch, True, SignatureCheck(users["qa2"], SignatureMeaning.RELEASED, None),
                             None, None)
    qa = login_as("qa")
    page = qa.get("/release/selection").get_data(as_text=True)
    order = re.findall(r'data-lot="([0-9A-Z]+)"', page)
    assert order == [high.identifier, low.identifier, untested.identifier]
    assert "no approved run" in page
    response = qa.post_form(f"/release/selection/{high.id}", sign_fields("qa", "highest potency"),
                            token_from="/release/selection")
    assert response.status_code == 302
    assert selection.is_selected_for_trial(db.session.get(Batch, high.id))
    assert not selection.is_selected_for_trial(db.session.get(Batch, low.id))


def test_the_recall_page_lists_dispensed_vials(lots, users, potency_runs, login_as, db):
    from labsys.audit.services import Actor, unit_of_work
    from labsys.batches.vials import apply_vial_transition
    from labsys.release import decisions
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck

    batch = lots.lot(vial_count=3)
    enter_results(users, batch, overrides={"STERILITY": ("pending", None)})
    passing_potency(potency_runs, batch)
    decisions.decide_lot(users["qa2"], batch, True, SignatureCheck(users["qa2"], SignatureMeaning.RELEASED, None),
                         None, None)
    vial = db.session.get(Batch, batch.id).vials[1]
    with unit_of_work(Actor.system("test"), "vial.dispense"):
        for status in (VialStatus.ALLOCATED, VialStatus.THAWED, VialStatus.DISPENSED):
            apply_vial_transition(Actor.system("test"), vial, status)
    tech, tech2 = login_as("technician"), login_as("technician2")
    pending = results.current_result(batch, "STERILITY")
    response = tech.post_form(f"/release/results/{pending.id}/correct",
                              {**_result_form("STERILITY", "growth"), "reason": "14-day read: growth"})
    assert response.status_code == 302
    late = results.current_result(batch, "STERILITY")
    tech2.post_form(f"/release/results/{late.id}/verify", {}, token_from=f"/release/lots/{batch.id}/results")
    assert db.session.get(Batch, batch.id).status == BatchStatus.RECALLED
    page = login_as("qa").get(f"/release/lots/{batch.id}/recall").get_data(as_text=True)
    assert vial.identifier in page
    # The custody feature names recipients; this vial was moved by hand, so no study ID is known.
    assert "patient records not available" not in page


def test_the_review_page_speaks_simplified_chinese(lots, users, potency_runs, login_as):
    batch = lots.lot()
    enter_results(users, batch, overrides={"VIABILITY": ("70", "%")})
    passing_potency(potency_runs, batch)
    qa = login_as("qa")
    qa.post_form("/account/language", {"locale": "zh_CN", "next": "/"}, token_from="/")
    page = qa.get(f"/release/lots/{batch.id}").get_data(as_text=True)
    assert "QA 审核" in page and "超标（OOS）" in page
    assert "Viability at fill：70 % 低于限度 ≥ 80 %。" in page
