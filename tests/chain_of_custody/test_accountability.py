"""Accountability per lot: every vial made is accounted for; CSV and PDF exports."""
from __future__ import annotations

import csv
import io
import subprocess

from labsys.auth.models import SignatureMeaning
from labsys.auth.signatures import SignatureCheck
from labsys.chain_of_custody import accountability, services


def test_the_lot_account_balances_through_allocation_and_dispensing(users, ready):
    lot, patient, order, vials = ready()
    services.dispense(users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, None),
                      SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, None),
                      services.patient_payload(patient), [services.vial_payload(v) for v in vials[:4]])
    account = accountability.account_for(lot)
    assert (account.made, account.released, account.allocated, account.dispensed) == (6, 6, 4, 4)
    assert (account.in_stock, account.in_process, account.administered) == (2, 4, 0)
    assert account.balanced
    assert sum(len(trail) for _v, trail in account.trails) >= 6 + 4 * 3


def test_the_csv_and_pdf_exports_carry_the_counts_and_the_custody_trail(login_as, ready, tmp_path):
    lot, patient, order, vials = ready(thaw=False)
    client = login_as("qa")
    page = client.get("/pharmacy/accountability").get_data(as_text=True)
    assert lot.identifier in page
    response = client.get(f"/pharmacy/accountability/{lot.id}.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    header, values = rows[0], rows[1]
    counts = dict(zip(header, values))
    assert counts["made"] == "6" and counts["allocated"] == "4" and counts["in_stock"] == "6"
    assert any(r and r[0] == vials[0].identifier and r[3] == "allocated" for r in rows[3:])
    pdf = client.get(f"/pharmacy/accountability/{lot.id}.pdf")
    assert pdf.status_code == 200
    path = tmp_path / "a.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert lot.identifier in text and vials[0].identifier in text and "allocated" in text
    assert client.get(f"/pharmacy/accountability/{lot.id}.xls").status_code == 404
    assert login_as("technician").get("/pharmacy/accountability").status_code == 403


def test_dispensed_vials_map_to_the_patients_study_id_for_the_recall_page(users, ready):
    lot, patient, order, vials = ready()
    assert services.patients_of_vials(vials) == {}
    services.dispense(users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, None),
                      SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, None),
                      services.patient_payload(patient), [services.vial_payload(v) for v in vials])
    assert services.patients_of_vials(vials) == {v.id: patient.study_id for v in vials}
