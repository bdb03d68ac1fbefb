"""Pages with the CSRF-aware client: field-level errors with nothing saved, access by role,
verification, deviations, lists with search and pagination, the batch record and its PDF."""
import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from labsys.batches.models import Batch, Cord, Deviation, Donor, Passage, Vial
from labsys.timefmt import to_lab

from .conftest import CLEAN
from tests.conftest import lab_today

DEMO_PASSWORD = "demo-password-for-tests"


@pytest.fixture(params=["sqlite"])
def engine_name(request):
    """Pages are engine-independent: these run on SQLite only; every rule and constraint they
    touch is exercised on both engines in test_services.py. This keeps the PostgreSQL leg short."""
    return request.param


def local(value: dt.datetime) -> str:
    return to_lab(value).strftime("%Y-%m-%dT%H:%M")


def count(db, model):
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


def errors_of(html: str) -> list[str]:
    return re.findall(r'<ul class="field-errors" id="([a-z_]+)-errors"', html)


def donor_form(**overrides):
    data = {"code": "D-100", "consent_date": lab_today().isoformat(), "screening_outcome": "acceptable",
            "specimen_date": lab_today().isoformat()}
    data.update({m.value: "non_reactive" for m in CLEAN})
    data.update(overrides)
    return data


def test_roles_outside_the_lab_cannot_open_batches(login_as):
    assert login_as("investigator").get("/batches/").status_code == 403
    assert login_as("pharmacist").get("/batches/donors").status_code == 403
    assert login_as("technician").get("/batches/").status_code == 200


def test_a_technician_registers_a_donor(db, login_as):
    client = login_as("technician")
    response = client.post_form("/batches/donors/new", donor_form())
    assert response.status_code == 302
    donor = db.session.scalars(select(Donor)).one()
    assert donor.code == "D-100" and donor.eligibility.value == "pending"


def test_a_future_specimen_date_is_a_field_error_and_nothing_is_saved(db, login_as):
    client = login_as("technician")
    tomorrow = (lab_today() + dt.timedelta(days=1)).isoformat()
    response = client.post_form("/batches/donors/new", donor_form(specimen_date=tomorrow, code=""))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert set(errors_of(html)) >= {"code"}
    assert count(db, Donor) == 0


def test_qa_signs_eligibility_from_the_donor_page(db, lab, login_as):
    donor = lab.donor(determine=False)
    client = login_as("qa")
    page = client.get(f"/batches/donors/{donor.id}").get_data(as_text=True)
    assert "Sign the determination" in page
    wrong = client.post_form(f"/batches/donors/{donor.id}/determine",
                             {"sign_username": "qa", "sign_password": "wrong"}, token_from=f"/batches/donors/{donor.id}")
    assert wrong.status_code == 403
    response = client.post_form(f"/batches/donors/{donor.id}/determine",
                                {"sign_username": "qa", "sign_password": DEMO_PASSWORD},
                                token_from=f"/batches/donors/{donor.id}")
    assert response.status_code == 302
    db.session.rollback()
    assert db.session.get(Donor, donor.id).eligibility.value == "eligible"


def test_a_late_cord_is_refused_with_the_reason_on_the_field(db, lab, login_as):
    donor = lab.donor()
    client = login_as("technician")
    collected = lab.now - dt.timedelta(hours=60)
    response = client.post_form(f"/batches/donors/{donor.id}/cords/new", {
        "collected_at": local(collected), "received_at": local(collected + dt.timedelta(hours=30)),
        "transport_temperature_c": "4", "weight_g": "40", "inspection": "conforms", "delivery_type": "vaginal",
        "gestational_age_weeks": "39"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "received_at" in errors_of(html) and "the limit is 24 h" in html
    assert 'value="' + local(collected) + '"' in html  # typed values are kept
    assert count(db, Cord) == 0


def test_a_cord_is_received_and_its_batch_started(db, lab, login_as):
    donor = lab.donor()
    client = login_as("technician")
    collected = lab.now - dt.timedelta(hours=20)
    response = client.post_form(f"/batches/donors/{donor.id}/cords/new", {
        "collected_at": local(collected), "received_at": local(collected + dt.timedelta(hours=5)),
        "transport_temperature_c": "4.5", "weight_g": "42.5", "inspection": "conforms", "delivery_type": "caesarean",
        "gestational_age_weeks": "39"})
    assert response.status_code == 302
    cord = db.session.scalars(select(Cord)).one()
    response = client.post_form(f"/batches/cords/{cord.id}/start", {}, token_from=f"/batches/cords/{cord.id}")
    assert response.status_code == 302
    batch = db.session.scalars(select(Batch)).one()
    assert response.headers["Location"].endswith(f"/batches/{batch.id}")


def passage_form(batch, number, **overrides):
    start = batch.cord.received_at + dt.timedelta(hours=3)
    data = {"passage_number": str(number), "started_at": local(start), "ended_at": local(start + dt.timedelta(hours=5)),
            "equipment": "BSC-1", "harvested_viable_cells": "2000000", "viability_percent": "94.5",
            "confluence_percent": "80", "flask_count": "2"}
    data.update(overrides)
    return data


def test_impossible_passage_values_are_field_errors_and_nothing_is_saved(db, lab, login_as):
    batch = lab.batch()
    client = login_as("technician")
    response = client.post_form(f"/batches/{batch.id}/passages/new", passage_form(
        batch, 0, viability_percent="120", harvested_viable_cells="-5", flask_count="0"))
    assert response.status_code == 422
    assert set(errors_of(response.get_data(as_text=True))) == {"viability_percent", "harvested_viable_cells",
                                                               "flask_count"}
    assert count(db, Passage) == 0


def test_a_passage_beyond_the_limit_is_refused_on_the_passage_number(db, lab, app, login_as):
    app.config["MAX_PASSAGE"] = 0
    batch = lab.batch()
    lab.passage(batch, 0)
    client = login_as("technician")
    start = batch.cord.received_at + dt.timedelta(hours=20)
    response = client.post_form(f"/batches/{batch.id}/passages/new", passage_form(
        batch, 1, seeded_viable_cells="1000000", started_at=local(start),
        ended_at=local(start + dt.timedelta(hours=3))))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "passage_number" in errors_of(html) and "beyond the passage limit P0" in html
    assert count(db, Passage) == 1


def test_the_batch_page_flags_unverified_entries_and_a_second_person_verifies(db, lab, login_as):
    batch = lab.batch()
    passage = lab.passage(batch, 0, harvested=2_000_000, verify=False)
    technician = login_as("technician")
    page = technician.get(f"/batches/{batch.id}").get_data(as_text=True)
    assert 'id="unverified-alert"' in page and "1 critical entry awaits" in page
    own = technician.post_form(f"/batches/passages/{passage.id}/verify", {
        "harvested_viable_cells": "2000000", "viability_percent": "95.0", "sign_username": "technician",
        "sign_password": DEMO_PASSWORD})
    assert own.status_code == 422 and "A different person must verify" in own.get_data(as_text=True)
    second = login_as("technician2")
    mismatch = second.post_form(f"/batches/passages/{passage.id}/verify", {
        "harvested_viable_cells": "2000001", "viability_percent": "95.0", "sign_username": "technician2",
        "sign_password": DEMO_PASSWORD})
    assert mismatch.status_code == 422 and "harvested_viable_cells" in errors_of(mismatch.get_data(as_text=True))
    ok = second.post_form(f"/batches/passages/{passage.id}/verify", {
        "harvested_viable_cells": "2000000", "viability_percent": "95.00", "sign_username": "technician2",
        "sign_password": DEMO_PASSWORD})
    assert ok.status_code == 302
    page = technician.get(f"/batches/{batch.id}").get_data(as_text=True)
    assert 'id="unverified-alert"' not in page and "Zhou Jie" in page


def test_qa_closes_a_deviation_with_a_signature(db, lab, login_as):
    batch = lab.batch()
    technician = login_as("technician")
    response = technician.post_form(f"/batches/{batch.id}/deviations/new", {"description": "Door left open"})
    deviation = db.session.scalars(select(Deviation)).one()
    url = f"/batches/deviations/{deviation.id}"
    assert response.headers["Location"].endswith(url)
    technician.post_form(url, {"action": "assess", "impact_assessment": "None", "capa": "Retrain"})
    refused = technician.post_form(url, {"action": "close", "close-sign_username": "technician",
                                         "close-sign_password": DEMO_PASSWORD})
    assert refused.status_code == 403
    qa = login_as("qa")
    closed = qa.post_form(url, {"action": "close", "close-sign_username": "qa", "close-sign_password": DEMO_PASSWORD})
    assert closed.status_code == 302
    db.session.rollback()
    assert db.session.get(Deviation, deviation.id).status.value == "closed"
    assert "Wang Fang" in qa.get(url).get_data(as_text=True)


def test_fill_form_creates_the_vials(db, lab, login_as):
    batch = lab.batch()
    lab.passage(batch, 0, harvested=60_000_000)
    client = login_as("technician")
    at = batch.passages[-1].step.ended_at + dt.timedelta(hours=1)
    bad = client.post_form(f"/batches/{batch.id}/fill", {
        "vial_count": "7", "viable_cells_per_vial": "10000000", "volume_ml": "5", "cryoprotectant": "10% DMSO",
        "viability_percent": "93", "started_at": local(at), "filled_at": local(at), "equipment": "BSC-1"})
    assert bad.status_code == 422 and "vial_count" in errors_of(bad.get_data(as_text=True))
    assert count(db, Vial) == 0
    good = client.post_form(f"/batches/{batch.id}/fill", {
        "vial_count": "6", "viable_cells_per_vial": "10000000", "volume_ml": "5", "cryoprotectant": "10% DMSO",
        "viability_percent": "93", "started_at": local(at), "filled_at": local(at), "equipment": "BSC-1"})
    assert good.status_code == 302
    assert count(db, Vial) == 6


def test_reagent_lots_are_registered_and_released_by_qa(db, login_as):
    technician = login_as("technician")
    today = lab_today()
    bad = technician.post_form("/batches/reagents", {"item": "PBS", "lot": "P1", "expiry_date": "2020-01-01",
                                                     "received_on": today.isoformat()})
    assert bad.status_code == 422 and "expiry_date" in errors_of(bad.get_data(as_text=True))
    technician.post_form("/batches/reagents", {"item": "PBS", "lot": "P1",
                                               "expiry_date": (today + dt.timedelta(days=90)).isoformat(),
                                               "received_on": today.isoformat()})
    from labsys.batches.models import Reagent

    reagent = db.session.scalars(select(Reagent)).one()
    assert technician.post_form(f"/batches/reagents/{reagent.id}/status", {"status": "released"},
                                token_from="/batches/reagents").status_code == 403
    login_as("qa").post_form(f"/batches/reagents/{reagent.id}/status", {"status": "released"},
                             token_from="/batches/reagents")
    db.session.rollback()
    assert db.session.get(Reagent, reagent.id).status.value == "released"


def test_lists_search_and_paginate(db, lab, login_as):
    batch = lab.filled(vials=5)
    client = login_as("technician")
    page = client.get("/batches/vials?per_page=2").get_data(as_text=True)
    assert "Page 1 of 3" in page
    found = client.get(f"/batches/vials?q={batch.identifier}003").get_data(as_text=True)
    assert f"{batch.identifier}003" in found and f"{batch.identifier}004" not in found
    assert batch.identifier in client.get("/batches/?q=D-001").get_data(as_text=True)
    assert "No batches match." in client.get("/batches/?q=NOPE").get_data(as_text=True)
    assert "D-001" in client.get("/batches/donors?q=d-00").get_data(as_text=True)


def test_the_batch_record_shows_history_chart_and_prints_as_pdf(db, lab, login_as):
    batch = lab.filled(vials=3)
    client = login_as("qa")
    html = client.get(f"/batches/{batch.id}").get_data(as_text=True)
    for expected in ("D-001", "Li Na", "Zhou Jie", "<svg", "class=\"growth-chart\"", batch.identifier + "001",
                     "batch.fill", "batch.passage.record", "batch.passage.verify", batch.check_character):
        assert expected in html, expected
    pdf = client.get(f"/batches/{batch.id}/record.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")


def test_a_box_shows_its_grid_and_vials_can_be_moved_from_the_vial_page(db, lab, login_as):
    from labsys.batches import vials as vial_services

    batch = lab.filled(vials=2)
    box = vial_services.create_box(lab.tech, vial_services.create_rack(
        lab.tech, vial_services.create_tank(lab.tech, "T1"), "R1"), "BX-9", 2, 3)
    client = login_as("technician")
    response = client.post_form(f"/batches/{batch.id}/store", {"box_id": str(box.id)}, token_from=f"/batches/{batch.id}")
    assert response.status_code == 302
    grid = client.get(f"/batches/boxes/{box.id}").get_data(as_text=True)
    assert grid.count('class="occupied') == 2 and grid.count('class="empty"') == 4
    vial = vial_services.vials_of(batch)[0]
    taken = client.post_form(f"/batches/vials/{vial.id}", {"box_id": str(box.id), "row": "1", "column": "2"})
    assert taken.status_code == 422 and "holds vial" in taken.get_data(as_text=True)
    moved = client.post_form(f"/batches/vials/{vial.id}", {"box_id": str(box.id), "row": "2", "column": "3",
                                                          "note": "Balance"})
    assert moved.status_code == 302
    assert "T1/R1/BX-9/B3" in client.get(f"/batches/vials/{vial.id}").get_data(as_text=True)


def test_the_batch_pages_and_field_errors_read_in_chinese(db, lab, login_as):
    batch = lab.filled(vials=2)
    client = login_as("technician")
    client.post_form("/account/language", {"locale": "zh_CN", "next": "/"}, token_from="/")
    page = client.get(f"/batches/{batch.id}").get_data(as_text=True)
    assert "批生产记录" in page and "冻存管" in page
    other = lab.batch("D-002")
    response = client.post_form(f"/batches/{other.id}/passages/new", passage_form(other, 0, viability_percent="150"))
    assert response.status_code == 422 and "须在 0 至 100 % 之间" in response.get_data(as_text=True)


def test_a_deviation_can_be_raised_against_a_cord_and_blocks_its_batch(db, lab, login_as):
    batch = lab.batch()
    client = login_as("technician")
    response = client.post_form(f"/batches/cords/{batch.cord_id}/deviations/new", {"description": "Label torn"})
    assert response.status_code == 302
    deviation = db.session.scalars(select(Deviation)).one()
    assert deviation.cord_id == batch.cord_id and deviation.batch_id is None
    from labsys.batches.services import open_deviations

    assert open_deviations(batch) == [deviation]
    empty = client.post_form(f"/batches/cords/{batch.cord_id}/deviations/new", {"description": ""})
    assert empty.status_code == 422 and "description" in errors_of(empty.get_data(as_text=True))


def test_qa_takes_a_vial_out_of_use_with_a_reason(db, lab, login_as):
    from labsys.batches import vials as vial_services

    batch = lab.filled(vials=1)
    vial = vial_services.vials_of(batch)[0]
    assert login_as("technician").post_form(f"/batches/vials/{vial.id}/status", {"status": "destroyed"},
                                            token_from=f"/batches/vials/{vial.id}").status_code == 403
    qa = login_as("qa")
    assert "Take out of use" in qa.get(f"/batches/vials/{vial.id}").get_data(as_text=True)
    qa.post_form(f"/batches/vials/{vial.id}/status", {"status": "destroyed", "reason": "Cracked vial"})
    db.session.rollback()
    assert db.session.get(Vial, vial.id).status.value == "destroyed"
    page = qa.get(f"/batches/vials/{vial.id}").get_data(as_text=True)
    assert "status.destroyed" in page and "Cracked vial" in page and "Take out of use" not in page


def test_the_fill_is_verified_from_the_batch_page(db, lab, login_as):
    batch = lab.filled(vials=2)
    technician = login_as("technician")
    page = technician.get(f"/batches/{batch.id}").get_data(as_text=True)
    assert f'/batches/fills/{batch.fill.id}/verify">Fill</a>' in page
    second = login_as("technician2")
    response = second.post_form(f"/batches/fills/{batch.fill.id}/verify", {
        "viable_cells_per_vial": "10000000", "viability_percent": "93", "sign_username": "technician2",
        "sign_password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert 'id="unverified-alert"' not in technician.get(f"/batches/{batch.id}").get_data(as_text=True)


def test_the_batch_list_search_finds_lots_by_identifier_or_donor_code_once_each(db, lab, login_as):
    """A term matches a donation identifier from its start or inside it, or a donor code anywhere
    and in any case; a lot that matches both ways is listed once; LIKE's wildcards in a term are
    taken literally; the status filter still narrows a search."""
    first, second, third = lab.batch("D-001"), lab.batch("MX-204"), lab.batch("D-1_2")
    lots = {"first": first.identifier, "second": second.identifier, "third": third.identifier}
    client = login_as("technician")

    def found(term: str, status: str = "") -> set[str]:
        page = client.get("/batches/", query_string={"q": term, "status": status}).get_data(as_text=True)
        names = {name for name, identifier in lots.items() if identifier in page}
        assert (f"{len(names)} in all" in page) if names else ("No batches match." in page)
        return names

    assert found(first.identifier) == {"first"}
    assert found(second.identifier[-7:]) == {"second"}
    assert found("mx-2") == {"second"}
    assert found("d-1_") == {"third"}
    assert found("-_0") == set()  # '_' is a character here, not "any character" ("D-001" has "-00")
    assert found("0") == {"first", "second", "third"}  # every identifier, and two donor codes
    assert found("0", status="released") == set()


def test_the_donor_list_search_matches_codes_anywhere_in_any_case_and_wildcards_literally(db, lab, login_as):
    lab.donor("D-001"), lab.donor("MX-204"), lab.donor("D-1_2")
    client = login_as("technician")

    def found(term: str) -> set[str]:
        page = client.get("/batches/donors", query_string={"q": term}).get_data(as_text=True)
        return {code for code in ("D-001", "MX-204", "D-1_2") if code in page}

    assert found("mx-2") == {"MX-204"}
    assert found("d-") == {"D-001", "D-1_2"}
    assert found("1_2") == {"D-1_2"}
    assert found("-_0") == set()  # '_' is a character here ("D-001" has "-00")
