"""Trial pages: the masking route walk, forms refusing bad input, exports and the API."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.trial import demo, followup, orders, services
from labsys.trial.models import InfusionOrder, Patient

from tests.conftest import load_all_demo_data, urls_for_every_get_route

from .conftest import ARM_NAMES
from tests.conftest import lab_today

ARM_PATTERN = re.compile("|".join(re.escape(name) for name in ARM_NAMES) + "|routine care", re.IGNORECASE)


@pytest.fixture
def demo_trial(app, demo_users):
    """The whole demo data set (every feature), plus one emergency unblinding."""
    load_all_demo_data(app)
    trial = services.get_trial()
    patient = next(p for p in services.patients(trial) if p.randomized)
    services.emergency_unblind(demo_users["investigator"], patient, "Severe allergic reaction",
                               SignatureCheck(demo_users["investigator"], SignatureMeaning.AUTHORED, None))
    return trial


def readable_text(response) -> str:
    """What a person could read in a response: the text of HTML, JSON and CSV, the text layer of a
    PDF (pdftotext), nothing of an image."""
    import subprocess

    if response.mimetype == "application/pdf":
        return subprocess.run(["pdftotext", "-", "-"], input=response.get_data(), capture_output=True,
                              check=True).stdout.decode()
    if response.mimetype.startswith("image/"):
        return ""
    return response.get_data(as_text=True)


def _urls_for_every_get_route(app, trial):
    return urls_for_every_get_route(app)


@pytest.mark.parametrize("username", ["investigator", "qa", "admin", "technician"])
def test_masked_users_never_see_an_arm_on_any_route(app, demo_trial, login_as, username):
    client = login_as(username)
    urls = _urls_for_every_get_route(app, demo_trial)
    assert any("/trial/patients/" in u for u in urls) and any("/api/trial/" in u for u in urls)
    ok = 0
    for url in urls:
        response = client.get(url)
        body = readable_text(response)
        assert not ARM_PATTERN.search(body), f"{url} shows an arm to {username}"
        if not url.endswith("/openapi.json"):  # the spec documents the field; no value is in it
            assert '"arm"' not in body, url
        ok += response.status_code == 200
    assert ok > 20 if username == "investigator" else ok > 2


def test_the_pharmacist_sees_the_arms_the_walk_hides(app, demo_trial, login_as):
    client = login_as("pharmacist")
    patient = next(p for p in services.patients(demo_trial) if p.randomized)
    assert ARM_PATTERN.search(client.get(f"/trial/patients/{patient.id}").get_data(as_text=True))
    assert client.get(f"/api/trial/patients/{patient.study_id}").get_json()["arm"] in ("msc", "control")
    assert ARM_PATTERN.search(client.get("/trial/summary").get_data(as_text=True))


def test_enrolment_of_a_17_year_old_is_refused_on_the_form(app, make_trial, login_as, db):
    make_trial()
    client = login_as("investigator")
    response = client.post_form("/trial/patients/new", {
        "screening_number": "SCR-900", "age_years": "17", "sex": "male", "weight_kg": "70",
        "weight_date": lab_today().isoformat(), "consent_date": lab_today().isoformat(),
        "diagnosis_confirmed": "yes"})
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Age 17 is outside the trial&#39;s range 18–75 years." in body and 'value="SCR-900"' in body
    assert db.session.scalar(select(Patient.id)) is None


def test_a_400_kg_weight_is_refused_on_the_form(app, make_trial, login_as, db):
    make_trial()
    response = login_as("investigator").post_form("/trial/patients/new", {
        "screening_number": "SCR-901", "age_years": "40", "sex": "male", "weight_kg": "400",
        "weight_date": lab_today().isoformat()})
    assert response.status_code == 422
    assert "outside the plausible range" in response.get_data(as_text=True)


def test_enrolment_through_the_form_then_randomization_by_the_pharmacist(app, make_trial, login_as, db):
    trial = make_trial()
    investigator = login_as("investigator")
    data = {"screening_number": "scr-902", "year_of_birth": "1970", "sex": "female", "weight_kg": "65.5",
            "weight_date": lab_today().isoformat(), "consent_date": lab_today().isoformat(),
            "diagnosis_confirmed": "yes"}
    data.update({f"exclusion_{i}": "no" for i in range(len(trial.exclusions))})
    response = investigator.post_form("/trial/patients/new", data)
    assert response.status_code == 302
    patient = db.session.scalar(select(Patient))
    assert patient.screening_number == "SCR-902" and patient.eligibility.value == "eligible"
    assert investigator.post_form(f"/trial/patients/{patient.id}/randomize", {},
                                  token_from=f"/trial/patients/{patient.id}").status_code == 403
    pharmacist = login_as("pharmacist")
    response = pharmacist.post_form(f"/trial/patients/{patient.id}/randomize", {},
                                    token_from=f"/trial/patients/{patient.id}")
    assert response.status_code == 302
    again = pharmacist.post_form(f"/trial/patients/{patient.id}/randomize", {},
                                 token_from=f"/trial/patients/{patient.id}")
    assert again.status_code == 422 and "already randomized" in again.get_data(as_text=True)


def test_randomizing_an_ineligible_patient_is_refused_with_a_message(app, make_trial, enrol, login_as):
    trial = make_trial()
    patient = enrol(trial, consent_date=None)
    response = login_as("pharmacist").post_form(f"/trial/patients/{patient.id}/randomize", {},
                                                token_from=f"/trial/patients/{patient.id}")
    assert response.status_code == 422
    assert "eligibility checklist" in response.get_data(as_text=True)


def test_an_order_for_a_control_patient_without_masking_is_refused_on_the_form(app, make_trial, enrol, pharmacist, login_as, db):
    trial = make_trial(masked=False)
    for _ in range(10):
        patient = enrol(trial)
        if services.randomize_patient(pharmacist, patient) == "control":
            break
    response = login_as("investigator").post_form(f"/trial/patients/{patient.id}/order",
                                                  {"infusion_date": lab_today().isoformat()})
    assert response.status_code == 422
    assert "routine-care arm of an unmasked trial" in response.get_data(as_text=True)
    assert db.session.scalar(select(InfusionOrder.id)) is None


def test_emergency_unblinding_through_the_form_needs_a_signature(app, make_trial, enrol, pharmacist, login_as, db):
    trial = make_trial()
    patient = enrol(trial)
    services.randomize_patient(pharmacist, patient)
    client = login_as("investigator")
    url = f"/trial/patients/{patient.id}/unblind"
    from tests.conftest import DEMO_PASSWORD

    refused = client.post_form(url, {"reason": "Anaphylaxis", "sign_username": "investigator",
                                     "sign_password": "wrong"})
    assert refused.status_code == 403 and not services.unblindings()
    response = client.post_form(url, {"reason": "Anaphylaxis", "sign_username": "investigator",
                                      "sign_password": DEMO_PASSWORD})
    assert response.status_code == 200 and ARM_PATTERN.search(response.get_data(as_text=True))
    report = client.get("/trial/unblindings").get_data(as_text=True)
    assert "Anaphylaxis" in report and patient.kit_number in report and not ARM_PATTERN.search(report)


def test_the_allocation_export_is_for_unblinded_roles_and_audited(app, make_trial, login_as, db):
    make_trial()
    assert login_as("investigator").get("/trial/allocation.csv").status_code == 403
    response = login_as("pharmacist").get("/trial/allocation.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "trial.allocation_export"))


def test_the_summary_csv_for_a_masked_user_has_an_empty_arm_column(app, demo_trial, login_as):
    body = login_as("investigator").get("/trial/summary.csv").get_data(as_text=True)
    rows = [line.split(",") for line in body.splitlines()[1:]]
    assert rows and all(row[2] == "" for row in rows)


def test_the_lot_page_lists_aes_of_patients_who_received_the_lot(app, demo_trial, login_as):
    body = login_as("pharmacist").get("/trial/lots/W000026000123/adverse-events").get_data(as_text=True)
    assert "Transient fever" in body
    assert len(followup.aes_for_lot("W000026000123")) == 1


@pytest.mark.parametrize("username", ["pharmacist", "investigator"])
def test_every_trial_page_renders_for_the_trial_roles(app, demo_trial, login_as, username):
    client = login_as(username)
    for url in _urls_for_every_get_route(app, demo_trial):
        if url.startswith(("/trial", "/api/trial")):
            response = client.get(url)
            assert response.status_code in (200, 403), (url, response.status_code)


def test_trial_pages_render_in_simplified_chinese_and_stay_masked(app, demo_trial, login_as):
    client = login_as("investigator")
    client.post_form("/account/language", {"locale": "zh_CN"}, token_from="/")
    patient = next(p for p in services.patients(demo_trial) if p.randomized)
    body = client.get(f"/trial/patients/{patient.id}").get_data(as_text=True)
    assert "受试者" in body and f"药盒 {patient.kit_number}" in body
    assert not ARM_PATTERN.search(body)
    summary = client.get("/trial/summary").get_data(as_text=True)
    assert "试验汇总" in summary and "氧合指数" in summary


def test_the_patient_api_answers_json_and_hides_the_arm_from_masked_users(app, demo_trial, login_as):
    client = login_as("investigator")
    missing = client.get("/api/trial/patients/P-999")
    assert missing.status_code == 404 and missing.get_json()["error"] == "NotFound"
    patient = next(p for p in services.patients(demo_trial) if p.randomized)
    body = client.get(f"/api/trial/patients/{patient.kit_number}").get_json()
    assert body["study_id"] == patient.study_id and "arm" not in body


def test_an_order_is_cancelled_from_its_page_with_a_reason(app, demo_trial, login_as, db, demo_users):
    waiting = [p for p in services.patients(demo_trial) if p.randomized and orders.active_order(p) is None]
    order = orders.open_orders()[0] if orders.open_orders() else orders.order_infusion(
        demo_users["investigator"], waiting[0], lab_today())
    client = login_as("investigator")
    url = f"/trial/orders/{order.id}"
    assert client.post_form(f"{url}/cancel", {"reason": ""}, token_from=url).status_code == 302
    assert db.session.get(InfusionOrder, order.id).status.value == "open"
    client.post_form(f"{url}/cancel", {"reason": "Patient withdrew consent"}, token_from=url)
    db.session.expire_all()
    assert db.session.get(InfusionOrder, order.id).status.value == "cancelled"


def test_the_pharmacist_configures_the_trial_and_generates_the_list_through_the_pages(app, login_as, db):
    from labsys.trial.models import AllocationEntry, Trial

    assert login_as("investigator").get("/trial/setup").status_code == 403
    pharmacist = login_as("pharmacist")
    data = {"registry_number": "NCT04282928", "title": "HUC-MSC in severe viral pneumonia",
            "control_arm_name": "Routine care", "msc_arm_name": "HUC-MSC + routine care", "ratio_control": "1",
            "ratio_msc": "1", "block_sizes": "2,3", "target_enrolment": "40", "age_min": "18", "age_max": "75",
            "dose_cells_per_kg": "1000000", "dose_tolerance": "0.20", "apply_post_thaw_viability": "y",
            "endotoxin_limit_eu_per_kg": "5", "masked": "y", "follow_up_days": "90", "visit_days": "1,7,28,90",
            "exclusions": "Pregnancy\nActive malignancy"}
    refused = pharmacist.post_form("/trial/setup", data)
    assert refused.status_code == 422 and "multiples of 2" in refused.get_data(as_text=True)
    assert db.session.scalar(select(Trial.id)) is None
    data["block_sizes"] = "2,4"
    assert pharmacist.post_form("/trial/setup", data).status_code == 302
    trial = db.session.scalar(select(Trial))
    assert trial.exclusions == ["Pregnancy", "Active malignancy"] and trial.visit_day_list == [1, 7, 28, 90]
    assert pharmacist.post_form("/trial/allocation", {}).status_code == 422  # confirmation missing
    assert pharmacist.post_form("/trial/allocation", {"confirm": "y"}).status_code == 302
    assert len(db.session.scalars(select(AllocationEntry.id)).all()) >= 40
    page = pharmacist.get("/trial/allocation").get_data(as_text=True)
    assert "HUC-MSC + routine care" in page and "Routine care" in page
