"""Shipping lab → pharmacy: shipment, temperature log with excursions, receipt by scanning."""
from __future__ import annotations

import io

import pytest

from labsys.batches.states import VialStatus
from labsys.chain_of_custody import services, shipping
from labsys.chain_of_custody.models import ShipmentStatus
from labsys.errors import RuleViolation

LOG = """time,temperature_c
2026-11-25T08:00:00+08:00,-185.0
2026-11-25T09:00:00+08:00,-120.5
2026-11-25T10:00:00Z,-190
"""


def test_shipping_logging_and_receiving_reports_excursions_missing_and_extra_vials(db, users, released_lot):
    lot = released_lot()
    other = released_lot()
    vials = lot.vials[:3]
    shipment = shipping.ship(users["technician"], [v.identifier for v in vials], "ColdChain Express",
                             "Hospital pharmacy", -196, -150)
    for vial in vials:
        db.session.refresh(vial)
        assert vial.box_id is None and VialStatus(vial.status) == VialStatus.AVAILABLE
        assert services.timeline(vial)[-1].event_type == "shipped"
    with pytest.raises(RuleViolation):
        shipping.ship(users["technician"], [vials[0].identifier], "x", "y", -196, -150)  # already in transit
    rows = shipping.record_readings(users["technician"], shipment, shipping.parse_readings(LOG))
    assert [r.excursion for r in rows] == [False, True, False]
    scans = [services.vial_payload(vials[0]), services.vial_payload(vials[1]), services.vial_payload(other.vials[0]),
             "garbage"]
    shipping.receive(users["pharmacist"], shipment, scans, "box slightly damaged")
    db.session.refresh(shipment)
    assert shipment.status == ShipmentStatus.RECEIVED
    assert shipment.missing_vials == vials[2].identifier
    assert shipment.extra_vials == other.vials[0].identifier
    assert "1 unreadable" in shipment.receipt_note
    received = services.timeline(vials[0])[-1]
    assert received.event_type == "received" and "excursion" in received.note
    assert services.timeline(vials[2])[-1].event_type == "shipped"


@pytest.mark.parametrize("log", ["", "time,temp\n", "2026-11-25T08:00:00,-185\n", "yesterday,-185\n",
                                 "2026-11-25T08:00:00Z,cold\n", "2026-11-25T08:00:00Z\n", "2026-11-25T08:00:00Z,NaN\n"])
def test_a_bad_temperature_log_is_refused_with_reasons(log):
    with pytest.raises(RuleViolation) as refused:
        shipping.parse_readings(log)
    assert refused.value.reasons


def test_the_shipment_pages_ship_upload_a_csv_and_receive(login_as, db, released_lot):
    lot = released_lot()
    technician = login_as("technician")
    response = technician.post_form("/pharmacy/shipments", {
        "vials": "\n".join([services.vial_payload(lot.vials[0]), lot.vials[1].identifier]),
        "shipper": "ColdChain Express", "destination": "Hospital pharmacy",
        "min_temperature_c": "-196", "max_temperature_c": "-150"})
    assert response.status_code == 302, response.get_data(as_text=True)[:1500]
    url = response.headers["Location"]
    bad = technician.post_form("/pharmacy/shipments", {"vials": "NOPE", "shipper": "", "destination": "x",
                                                       "min_temperature_c": "-100", "max_temperature_c": "-150"})
    assert bad.status_code == 422
    response = technician.post_form(url, {"action": "readings",
                                          "log_file": (io.BytesIO(LOG.encode()), "log.csv")},
                                    content_type="multipart/form-data")
    assert response.status_code == 302
    page = technician.get(url).get_data(as_text=True)
    assert "EXCURSION" in page and "-120.5" in page
    pharmacist = login_as("pharmacist")
    response = pharmacist.post_form(url, {"action": "receive", "scans": services.vial_payload(lot.vials[0]),
                                          "note": ""})
    assert response.status_code == 302
    page = pharmacist.get(url).get_data(as_text=True)
    assert lot.vials[1].identifier in page and "received" in page
