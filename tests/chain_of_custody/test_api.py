"""JSON API: /api/v1/scan, /api/v1/dispense/check and the OpenAPI description."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from labsys.audit.models import AuditEntry
from labsys.chain_of_custody import services
from labsys.documents import codec
from labsys.trial.demo import DEMO_TRIAL


def _csrf(client) -> str:
    html = client.get("/pharmacy/dispense").get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def test_scanning_a_vial_answers_its_current_state(client, ready, api_token):
    lot, patient, order, vials = ready(thaw=False)
    response = client.http.post("/api/v1/scan", json={"payload": services.vial_payload(vials[0])},
                           headers=api_token("technician"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["kind"] == "vial" and body["identifier"] == vials[0].identifier
    assert body["status"] == "allocated" and body["allocated_kit"] == patient.kit_number
    assert body["lot"] == lot.identifier and body["lot_selected_for_trial"] is True


def test_unknown_tampered_and_malformed_scans_get_json_reasons_never_500(client, app, users, api_token):
    headers = api_token("pharmacist")
    unknown = codec.encode("vial", "W999926999999A001")
    assert client.http.post("/api/v1/scan", json={"payload": unknown}, headers=headers).status_code == 404
    tampered = unknown[:-3] + ("AAA" if not unknown.endswith("AAA") else "BBB")
    response = client.http.post("/api/v1/scan", json={"payload": tampered}, headers=headers)
    assert response.status_code == 422 and response.get_json()["reasons"]
    bad_bodies = [
        ("{not json", "application/json"), ("[]", "application/json"), ('"text"', "application/json"),
        ('{"payload": 12}', "application/json"), ('{"payload": null}', "application/json"),
        ('{"payload": ["LS1"]}', "application/json"), ("payload=x", "application/x-www-form-urlencoded"),
        ('{"payload": "' + "A" * 100_000 + '"}', "application/json"), ("\xff\xfe", "application/json"),
    ]
    for body, content_type in bad_bodies:
        response = client.http.post("/api/v1/scan", data=body.encode("utf-8", "surrogateescape"),
                               content_type=content_type, headers=headers)
        assert 400 <= response.status_code < 500, (body[:40], response.status_code)
        assert response.get_json()["message"], body[:40]


def test_masked_users_never_receive_the_arm_but_the_pharmacist_does(client, users, patient_in_arm, api_token):
    patient = patient_in_arm()
    payload = services.patient_payload(patient)
    for username in ("investigator", "qa", "technician"):
        response = client.http.post("/api/v1/scan", json={"payload": payload}, headers=api_token(username))
        assert response.status_code == 200
        body = response.get_json()
        assert body["kit_number"] == patient.kit_number and "arm" not in body
        text = response.get_data(as_text=True)
        assert DEMO_TRIAL["msc_arm_name"] not in text and DEMO_TRIAL["control_arm_name"] not in text
    body = client.http.post("/api/v1/scan", json={"payload": payload}, headers=api_token("pharmacist")).get_json()
    assert body["arm"] == DEMO_TRIAL["msc_arm_name"]


def test_the_dispense_check_passes_for_the_right_vials_and_writes_nothing(db, login_as, ready):
    lot, patient, order, vials = ready()
    client = login_as("pharmacist")
    before = db.session.scalar(select(func.count(AuditEntry.seq)))
    response = client.http.post("/api/v1/dispense/check", headers={"X-CSRFToken": _csrf(client)},
                                json={"patient": services.patient_payload(patient),
                                      "vials": [services.vial_payload(v) for v in vials]})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["ok"] is True and body["summary"] == "All checks passed"
    assert all(set(c) == {"rule", "passed", "message"} and c["passed"] for c in body["checks"])
    assert db.session.scalar(select(func.count(AuditEntry.seq))) == before


def test_the_dispense_check_names_every_failing_rule(login_as, ready, released_lot):
    lot, patient, order, vials = ready()
    other = released_lot()
    client = login_as("pharmacist")
    response = client.http.post("/api/v1/dispense/check", headers={"X-CSRFToken": _csrf(client)},
                                json={"patient": services.patient_payload(patient),
                                      "vials": [services.vial_payload(other.vials[0]), "LS1.VIAL.FORGED"]})
    body = response.get_json()
    assert body["ok"] is False
    failed = {c["rule"] for c in body["checks"] if not c["passed"]}
    assert {"vial_signature_valid", "vial_thawed_within_hold_time", "dose_within_tolerance"} <= failed


def test_browser_calls_need_the_csrf_header_and_the_check_is_for_pharmacists_only(login_as, client, api_token):
    pharmacist = login_as("pharmacist")
    response = pharmacist.http.post("/api/v1/dispense/check", json={"patient": "x", "vials": []})
    assert response.status_code in (400, 403) and response.get_json()
    anonymous = client.http.post("/api/v1/dispense/check", json={"patient": "x", "vials": []})
    assert anonymous.status_code in (400, 401) and "checks" not in anonymous.get_json()
    assert client.http.get("/api/v1/openapi.json").status_code == 401
    response = client.http.post("/api/v1/dispense/check", json={"patient": "x", "vials": []},
                           headers=api_token("investigator"))
    assert response.status_code == 403


@pytest.mark.parametrize("body", [{"patient": 1, "vials": []}, {"patient": "x", "vials": "LS1"},
                                  {"patient": "x", "vials": [1, 2]}, {"vials": []}, {"patient": "x"},
                                  {"patient": "x", "vials": ["v"] * 500}])
def test_the_dispense_check_refuses_malformed_bodies_with_400(client, api_token, body):
    response = client.http.post("/api/v1/dispense/check", json=body, headers=api_token("pharmacist"))
    assert response.status_code == 400 and response.get_json()["reasons"]


def test_huge_codes_in_a_dispense_check_fail_the_checks_without_error(client, api_token):
    response = client.http.post("/api/v1/dispense/check", json={"patient": "P" * 50_000, "vials": ["V" * 50_000]},
                           headers=api_token("pharmacist"))
    assert response.status_code == 200 and response.get_json()["ok"] is False


def test_the_openapi_description_is_a_valid_openapi_3_document(client, api_token):
    spec = client.http.get("/api/v1/openapi.json", headers=api_token("technician")).get_json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] and spec["info"]["version"]
    assert {"/scan", "/dispense/check", "/me"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert method in {"get", "post"} and operation["responses"], path
            for code in operation["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", code), (path, code)
    assert set(spec["components"]["securitySchemes"]) == {"bearerToken", "session"}
    assert spec["paths"]["/dispense/check"]["post"]["requestBody"]["content"]["application/json"]


def test_certificate_codes_resolve_to_the_dispensing_or_the_lot_release(client, users, ready, api_token):
    from labsys.auth.models import SignatureMeaning
    from labsys.auth.signatures import SignatureCheck

    lot, patient, order, vials = ready()
    dispensing = services.dispense(users["pharmacist"], SignatureCheck(users["pharmacist"], SignatureMeaning.DISPENSED, None),
                                   SignatureCheck(users["pharmacist2"], SignatureMeaning.WITNESSED, None),
                                   services.patient_payload(patient), [services.vial_payload(v) for v in vials])
    headers = api_token("qa")
    body = client.http.post("/api/v1/scan", json={"payload": services.dispensing_payload(dispensing)},
                            headers=headers).get_json()
    assert body["number"] == dispensing.number and body["vials"] == dispensing.vial_list
    body = client.http.post("/api/v1/scan", json={"payload": codec.encode("certificate", lot.identifier)},
                            headers=headers).get_json()
    assert body["lot"] == lot.identifier and body["decision"] == "released"
