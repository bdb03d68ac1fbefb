"""Bedside administration: scans or an override, infusion times, the investigator's signature."""
from __future__ import annotations

import datetime as dt

import pytest

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck, signatures_for
from labsys.batches.states import VialStatus
from labsys.chain_of_custody import services
from labsys.db import utcnow
from labsys.errors import RuleViolation
from labsys.timefmt import to_lab
from labsys.trial.models import OrderStatus
from tests.conftest import DEMO_PASSWORD


@pytest.fixture
def dispensed(users, ready):
    lot, patient, order, vials = ready()
    dispensing = services.dispense(users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, None),
                                   SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, None),
                                   services.patient_payload(patient), [services.vial_payload(v) for v in vials])
    return patient, order, vials, dispensing


def _check(users):
    return SignatureCheck(users["investigator"], SignatureMeaning.ADMINISTERED, None)


def test_scanned_administration_moves_the_vials_and_the_order_to_administered(db, users, dispensed):
    patient, order, vials, dispensing = dispensed
    start = utcnow()
    record = services.administer(users["investigator"], dispensing, _check(users), services.patient_payload(patient),
                                 [services.vial_payload(v) for v in vials], start, start + dt.timedelta(seconds=30),
                                 now=start + dt.timedelta(minutes=1))
    assert record.wristband_scanned and record.product_scanned and record.override_reason is None
    for vial in vials:
        db.session.refresh(vial)
        assert VialStatus(vial.status) == VialStatus.ADMINISTERED
        assert services.timeline(vial)[-1].event_type == "administered"
    db.session.refresh(order)
    assert order.status == OrderStatus.ADMINISTERED
    assert [SignatureMeaning(s.meaning) for s in signatures_for(record)] == [SignatureMeaning.ADMINISTERED]


def test_a_wrong_wristband_or_vial_is_refused_even_with_an_override(db, users, dispensed, patient_in_arm,
                                                                      released_lot):
    patient, order, vials, dispensing = dispensed
    other = patient_in_arm(order=False)
    start = utcnow()
    with pytest.raises(RuleViolation):
        services.administer(users["investigator"], dispensing, _check(users), services.patient_payload(other),
                            [services.vial_payload(v) for v in vials], start, start, "scanner broken")
    stranger = released_lot().vials[0]
    with pytest.raises(RuleViolation):
        services.administer(users["investigator"], dispensing, _check(users), services.patient_payload(patient),
                            [services.vial_payload(stranger)], start, start, "scanner broken")
    db.session.refresh(vials[0])
    assert VialStatus(vials[0].status) == VialStatus.DISPENSED


def test_missing_scans_need_an_override_reason_which_is_recorded(db, users, dispensed):
    patient, order, vials, dispensing = dispensed
    start = utcnow()
    with pytest.raises(RuleViolation) as refused:
        services.administer(users["investigator"], dispensing, _check(users), "", [], start, start)
    assert any("override" in r for r in refused.value.reasons)
    record = services.administer(users["investigator"], dispensing, _check(users), "", [], start, start,
                                 "wristband scanner out of order; identity checked by two nurses")
    assert not record.wristband_scanned and record.override_reason.startswith("wristband scanner")


def test_the_bedside_page_refuses_times_out_of_order_and_records_a_good_administration(login_as, db, dispensed):
    patient, order, vials, dispensing = dispensed
    client = login_as("investigator")
    url = f"/bedside/dispensings/{dispensing.id}/administer"
    assert dispensing.number in client.get("/bedside/").get_data(as_text=True)
    now = to_lab(utcnow())
    data = {"wristband": services.patient_payload(patient), "vials": "\n".join(services.vial_payload(v) for v in vials),
            "override_reason": "", "sign_username": "investigator", "sign_password": DEMO_PASSWORD, "sign_comment": "",
            "infusion_start": now.strftime("%Y-%m-%dT%H:%M"),
            "infusion_stop": (now - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")}
    response = client.post_form(url, data)
    assert response.status_code == 422 and "stops before it starts" in response.get_data(as_text=True)
    data["infusion_stop"] = data["infusion_start"]
    response = client.post_form(url, data)
    assert response.status_code == 302, response.get_data(as_text=True)[:3000]
    assert services.administration_of(dispensing) is not None
