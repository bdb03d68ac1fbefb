"""The chain-of-custody certificate carries every recorded check and every custody event of every
vial: each vial's checks in its section, the dispensing's own checks in their table, and one
custody-events table whose rows name the vials they happened to."""
from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections import Counter
from decimal import Decimal
from types import SimpleNamespace

from labsys.chain_of_custody import services
from labsys.chain_of_custody.documents import certificate_context, custody_rows, split_checks
from tests.chain_of_custody.test_views import _dispense_form

A, B = "W000026000004001", "W000026000004002"


def _check(rule: str, message: str, passed: bool = True) -> dict:
    return {"rule": rule, "passed": passed, "message": message}


def test_each_vial_run_of_checks_goes_to_the_vial_it_names_and_every_check_is_kept_once():
    checks = [
        _check("patient_signature_valid", "Wristband code is genuine."),
        _check("patient_randomized", "Patient P-1, kit K-1, is randomized."),
        _check("vial_signature_valid", f"Vial code {B} is genuine."),
        _check("vial_exists", f"Vial {B} found."),
        _check("lot_released", "Lot W000026000004 is released and selected for the trial."),
        _check("vial_thawed_within_hold_time", f"Vial {B} thawed 3 min ago (hold time 60 min)."),
        _check("vial_signature_valid", f"Vial code {A} is genuine."),
        _check("vial_not_expired", f"Vial {A} is within its expiry."),
        _check("vial_signature_valid", "Vial code W000026000004009 is genuine."),  # not on this certificate
        _check("vial_exists", "Vial W000026000004009 found."),
        _check("dose_within_tolerance", f"2 vial(s): the dose names {A} too."),
        _check("witness_is_different_person", "Witnessed by a second person."),
    ]
    general, by_vial = split_checks(checks, [A, B])
    assert [c["message"] for c in by_vial[B]] == [c["message"] for c in checks[2:6]]  # the lot check included
    assert [c["message"] for c in by_vial[A]] == [c["message"] for c in checks[6:8]]
    assert general == checks[:2] + checks[8:]  # an unknown vial's run and the dose check stay general
    kept = general + by_vial[A] + by_vial[B]
    assert Counter(c["message"] for c in kept) == Counter(c["message"] for c in checks)


def test_a_vial_whose_identifier_begins_another_does_not_take_its_checks():
    longer = A + "7"
    checks = [_check("vial_signature_valid", f"Vial code {longer} is genuine."), _check("vial_exists", f"Vial {longer} found.")]
    general, by_vial = split_checks(checks, [A, longer])
    assert by_vial[A] == [] and by_vial[longer] == checks and general == []


def _event(event_id, at, event_type, actor="Zhang Wei (pharmacist)", witness=None, source=None, target=None,
           temperature=None):
    return SimpleNamespace(id=event_id, at=at, event_type=event_type, actor_name=actor, witness_name=witness,
                           from_location=source, to_location=target, temperature_c=temperature)


def test_events_share_a_row_only_when_they_print_the_same(app):
    t0 = dt.datetime(2026, 12, 3, 6, 0, 0, tzinfo=dt.timezone.utc)
    items = [
        {"vial": SimpleNamespace(identifier=A), "events": [
            _event(1, t0, "shipped", source=None, target="in transit SHP-1"),
            _event(3, t0 + dt.timedelta(minutes=5), "thawed", target="pharmacy", temperature=Decimal("37.0")),
            _event(5, t0 + dt.timedelta(minutes=9, microseconds=300), "dispensed", witness="Liu Yang", target="kit K-1"),
            _event(6, t0 + dt.timedelta(minutes=9, microseconds=400), "dispensed", witness="Liu Yang", target="kit K-1"),
        ]},
        {"vial": SimpleNamespace(identifier=B), "events": [
            _event(2, t0 + dt.timedelta(microseconds=5), "shipped", source=None, target="in transit SHP-1"),
            _event(4, t0 + dt.timedelta(minutes=7), "thawed", target="pharmacy", temperature=Decimal("37.0")),
            _event(7, t0 + dt.timedelta(minutes=9, microseconds=100), "dispensed", witness="Liu Yang", target="kit K-1"),
        ]},
    ]
    with app.test_request_context():
        rows = custody_rows(items)
    assert [(r["event"].event_type, r["vials"]) for r in rows] == [
        ("shipped", [A, B]),  # the same second, the same facts: one row for both
        ("thawed", [A]), ("thawed", [B]),  # thawed at different times: a row each
        ("dispensed", [A, B]),
        ("dispensed", [A]),  # the vial's second event that prints the same keeps its own row
    ]
    assert rows[0]["when"].endswith("14:00:00 UTC+08:00")
    assert sum(len(r["vials"]) for r in rows) == sum(len(item["events"]) for item in items)


def test_the_certificate_prints_every_check_and_every_custody_event_of_every_vial(login_as, ready, users, tmp_path):
    lot, patient, order, vials = ready(thaw=False)
    # The first vial's thaw prints differently (36.5 °C): it has a row of its own; the events the
    # vials went through together share rows.
    services.thaw(users["pharmacist"], vials[0], Decimal("36.5"))
    for vial in vials[1:]:
        services.thaw(users["pharmacist"], vial)
    assert login_as("pharmacist").post_form("/pharmacy/dispense", _dispense_form(patient, vials)).status_code == 302
    dispensing = services.dispensings()[0]
    response = login_as("investigator").get(f"/pharmacy/dispensings/{dispensing.id}/certificate.pdf")
    assert response.status_code == 200
    path = tmp_path / "certificate.pdf"
    path.write_bytes(response.data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True, text=True).stdout
    flat = re.sub(r"\s+", "", text)

    context = certificate_context(dispensing, users["investigator"])
    checks = context["checks"]
    assert len(checks) > len(vials) * 5
    for check in checks:
        assert re.sub(r"\s+", "", check["message"]) in flat, check
    # Each vial's checks come after its heading and before the next vial's.
    headings = [flat.index(f"Vial{item['vial'].identifier}") for item in context["vials"]]
    assert headings == sorted(headings)
    for number, item in enumerate(context["vials"]):
        start = flat.index(f"Vial{item['vial'].identifier}")
        end = headings[number + 1] if number + 1 < len(headings) else len(flat)
        assert item["checks"] and all(re.sub(r"\s+", "", c["message"]) in flat[start:end] for c in item["checks"])
    # Every event of every vial is in one row of the custody table, with its facts.
    rows = context["custody_rows"]
    covered = Counter((identifier, row["event"].event_type) for row in rows for identifier in row["vials"])
    expected = Counter((v.identifier, e.event_type) for v in vials for e in services.timeline(v))
    assert covered == expected
    assert any(row["vials"] == [vials[0].identifier] and row["event"].temperature_c == Decimal("36.5") for row in rows)
    assert any(len(row["vials"]) == len(vials) for row in rows)
    table = flat[flat.index("Custodyevents"):flat.index("Signatures")]
    for row in rows:
        assert re.sub(r"\s+", "", row["when"]) in table and row["event"].event_type in table
        if len(row["vials"]) == len(vials):
            assert f"all{len(vials)}vials" in table
        else:  # one identifier a line in the cell (pdftotext may interleave the row's other cells)
            assert all(identifier in table for identifier in row["vials"])
    assert "36.5" in table
