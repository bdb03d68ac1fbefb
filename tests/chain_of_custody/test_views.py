"""Pharmacy pages: allocation, thaw, scan-to-dispense with a witness, records and PDFs."""
from __future__ import annotations

import json
import subprocess

import zxingcpp
from PIL import Image
from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import signatures_for
from labsys.batches.states import VialStatus
from labsys.chain_of_custody import services
from labsys.documents import codec
from labsys.trial import orders as trial_orders
from labsys.trial.demo import DEMO_TRIAL
from tests.conftest import DEMO_PASSWORD


def test_the_pharmacist_allocates_the_proposed_vials_and_records_thaws_through_the_pages(login_as, db, users,
                                                                                          released_lot, patient_in_arm):
    released_lot()
    patient = patient_in_arm()
    order = trial_orders.active_order(patient)
    client = login_as("pharmacist")
    index = client.get("/pharmacy/").get_data(as_text=True)
    assert patient.kit_number in index
    page = client.get(f"/pharmacy/orders/{order.id}").get_data(as_text=True)
    proposal = services.propose_vials(order)
    assert all(v.identifier in page for v in proposal.vials)
    response = client.post_form(f"/pharmacy/orders/{order.id}/allocate",
                                {"vials": ",".join(v.identifier for v in proposal.vials)})
    assert response.status_code == 302
    vial = proposal.vials[0]
    assert client.post_form(f"/pharmacy/vials/{vial.id}/thaw", {"temperature_c": "banana"},
                            token_from=f"/pharmacy/orders/{order.id}").status_code == 422
    response = client.post_form(f"/pharmacy/vials/{vial.id}/thaw", {"temperature_c": "37.0"},
                                token_from=f"/pharmacy/orders/{order.id}")
    assert response.status_code == 302
    db.session.refresh(vial)
    assert VialStatus(vial.status) == VialStatus.THAWED
    thawed = services.timeline(vial)[-1]
    assert thawed.event_type == "thawed" and float(thawed.temperature_c) == 37.0
    timeline = client.get(f"/pharmacy/vials/{vial.id}").get_data(as_text=True)
    assert "thawed" in timeline and "allocated" in timeline and "37.0" in timeline and "data-use-by" in timeline


def test_a_tampered_allocation_is_refused_with_the_reason_on_the_page(login_as, released_lot, patient_in_arm):
    lot = released_lot(select=False)
    released_lot()
    order = trial_orders.active_order(patient_in_arm())
    client = login_as("pharmacist")
    response = client.post_form(f"/pharmacy/orders/{order.id}/allocate",
                                {"vials": ",".join(v.identifier for v in lot.vials[:4])})
    assert response.status_code == 422
    assert "not released and selected" in response.get_data(as_text=True)
    assert not services.active_allocations(order)


def _dispense_form(patient, vials, witness="pharmacist2", witness_password=DEMO_PASSWORD):
    return {"patient": services.patient_payload(patient), "vials": "\n".join(services.vial_payload(v) for v in vials),
            "sign_username": "pharmacist", "sign_password": DEMO_PASSWORD, "sign_comment": "",
            "witness_username": witness, "witness_password": witness_password}


def test_dispensing_through_the_page_needs_a_different_witness_with_their_own_password(login_as, db, users, ready):
    lot, patient, order, vials = ready()
    client = login_as("pharmacist")
    page = client.get("/pharmacy/dispense").get_data(as_text=True)
    assert 'id="scan-input"' in page and "<script>" not in page and "custody.js" in page and "jsQR.js" in page
    response = client.post_form("/pharmacy/dispense", _dispense_form(patient, vials, witness="pharmacist"))
    assert response.status_code == 403 and "different person" in response.get_data(as_text=True)
    response = client.post_form("/pharmacy/dispense", _dispense_form(patient, vials, witness_password="wrong"))
    assert response.status_code == 403
    db.session.refresh(users["pharmacist2"])
    assert users["pharmacist2"].failed_logins >= 1
    assert all(VialStatus(db.session.merge(v).status) == VialStatus.THAWED for v in vials)
    response = client.post_form("/pharmacy/dispense", _dispense_form(patient, vials))
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    dispensing = services.dispensings()[0]
    assert {SignatureMeaning(s.meaning) for s in signatures_for(dispensing)} == {SignatureMeaning.DISPENSED,
                                                                                SignatureMeaning.WITNESSED}
    record = client.get(response.headers["Location"]).get_data(as_text=True)
    assert dispensing.number in record and "Liu Yang" in record and "Zhang Wei" in record


def test_a_wrong_vial_is_refused_on_the_page_with_every_reason_and_audited(login_as, db, ready, released_lot):
    lot, patient, order, vials = ready()
    other = released_lot()
    client = login_as("pharmacist")
    response = client.post_form("/pharmacy/dispense", _dispense_form(patient, [other.vials[0]]))
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "Not dispensed" in text and other.vials[0].identifier in text
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "custody.dispense_refused")).one()
    assert other.vials[0].identifier in json.loads(entry.new_values)["vials"]
    assert not services.dispensings()


def _decode_pdf(pdf: bytes, tmp_path) -> list[str]:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", str(path), str(tmp_path / "page")], check=True)
    found = []
    for image in sorted(tmp_path.glob("page*.png")):
        found += [r.text for r in zxingcpp.read_barcodes(Image.open(image))]
    return found


def _pdf_text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "text.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True).stdout


def test_the_wristband_carries_a_signed_patient_code_with_study_id_and_kit_but_no_arm(login_as, patient_in_arm,
                                                                                      tmp_path):
    patient = patient_in_arm()
    response = login_as("investigator").get(f"/pharmacy/patients/{patient.id}/wristband.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    codes = _decode_pdf(response.data, tmp_path)
    assert len(codes) == 1
    verdict = codec.verify(codes[0])
    assert verdict.valid and verdict.kind == "patient"
    assert services.patient_from_identifier(verdict.identifier).id == patient.id
    text = _pdf_text(response.data, tmp_path)
    assert patient.study_id in text and patient.kit_number in text
    assert DEMO_TRIAL["msc_arm_name"] not in text and DEMO_TRIAL["control_arm_name"] not in text


def test_the_certificate_qr_codes_resolve_to_the_dispensing_and_each_vial(login_as, ready, tmp_path):
    lot, patient, order, vials = ready()
    client = login_as("pharmacist")
    assert client.post_form("/pharmacy/dispense", _dispense_form(patient, vials)).status_code == 302
    dispensing = services.dispensings()[0]
    investigator = login_as("investigator")
    response = investigator.get(f"/pharmacy/dispensings/{dispensing.id}/certificate.pdf")
    assert response.status_code == 200
    codes = _decode_pdf(response.data, tmp_path)
    verdicts = [codec.verify(c) for c in codes]
    assert all(v.valid for v in verdicts)
    certificates = [v.identifier for v in verdicts if v.kind == "certificate"]
    assert certificates == [dispensing.number]
    assert services.find_dispensing(certificates[0]).id == dispensing.id
    assert sorted(v.identifier for v in verdicts if v.kind == "vial") == sorted(v.identifier for v in vials)
    text = _pdf_text(response.data, tmp_path)
    assert patient.study_id in text and patient.kit_number in text and dispensing.chain_head_hash[:16] in text
    assert "witnessed" in text.lower() and "dispensed" in text.lower()
    assert DEMO_TRIAL["msc_arm_name"] not in text  # the trial is masked: no arm for anyone


def test_masked_viewers_of_a_dispensing_do_not_see_which_product_the_kit_is_assigned(login_as, ready, tmp_path):
    lot, patient, order, vials = ready()
    assert login_as("pharmacist").post_form("/pharmacy/dispense", _dispense_form(patient, vials)).status_code == 302
    dispensing = services.dispensings()[0]
    unblinded = login_as("pharmacist").get(f"/pharmacy/dispensings/{dispensing.id}").get_data(as_text=True)
    assert "assigned the cell product" in unblinded
    for username in ("qa", "investigator"):
        client = login_as(username)
        page = client.get(f"/pharmacy/dispensings/{dispensing.id}").get_data(as_text=True)
        assert "assigned the cell product" not in page and dispensing.number in page
        pdf = client.get(f"/pharmacy/dispensings/{dispensing.id}/certificate.pdf").data
        assert "assigned the cell product" not in _pdf_text(pdf, tmp_path)
