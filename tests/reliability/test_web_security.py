"""Web security checks that walk the whole application: CSRF on every POST route, no open
redirect, security headers on every response, the technician refused everywhere outside the
bench, masking through the API, and bandit finding no high-severity issue.

Already covered elsewhere (not repeated here): the session cookie changes at sign-in
(tests/auth/test_login.py::test_the_session_cookie_changes_at_sign_in), sign-out and deactivation
end sessions server-side (test_sign_out_ends_the_session_on_the_server,
test_deactivating_a_user_ends_their_sessions_at_once), lockout after five failures
(test_five_wrong_passwords_lock_the_account_with_an_audit_entry), rate limiting
(test_login_attempts_are_rate_limited), the role matrix with placeholder ids
(tests/auth/test_access.py::test_every_role_restricted_route_refuses_other_roles), the masking walk
of every GET page, CSV and PDF (tests/trial/test_views.py::test_masked_users_never_see_an_arm_on_any_route)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labsys.auth.roles import AUTHENTICATED, PUBLIC, Role
from labsys.auth.views import safe_next
from tests.conftest import DEMO_PASSWORD, LabClient, load_all_demo_data, urls_for_every_get_route
from tests.reliability.walk import last_audit_id, post_routes, regulated_writes, stored_counts

ROOT = Path(__file__).resolve().parents[2]
USER_OF_ROLE = {Role.TECHNICIAN: "technician", Role.QA: "qa", Role.PHARMACIST: "pharmacist",
                Role.INVESTIGATOR: "investigator", Role.ADMIN: "admin"}


@pytest.fixture
def demo(app, demo_users):
    load_all_demo_data(app)
    return demo_users


def test_every_post_route_refuses_a_request_without_csrf_token_and_writes_nothing(app, demo, login_as):
    clients = {username: login_as(username) for username in USER_OF_ROLE.values()}
    refused = 0
    before, audit_since = stored_counts(), last_audit_id()
    for endpoint, url, access in post_routes(app):
        if access == PUBLIC:
            username = None
        elif access == AUTHENTICATED:
            username = "pharmacist"
        else:  # a user whose role may use the route, so only the missing token refuses it
            username = USER_OF_ROLE[sorted(access)[0]]
        if username is None:
            client = LabClient(app)
        else:
            client = clients[username]
        for data in ({}, {"csrf_token": "forged-token"}, {"csrf_token": ""}):
            response = client.http.post(url, data=data)
            assert response.status_code == 400, (endpoint, url, data, response.status_code)
            body = response.get_data(as_text=True)
            assert "security token" in body or "CSRFError" in body, (endpoint, body[:200])
            refused += 1
        # A JSON body with a session cookie needs the X-CSRFToken header just the same.
        response = client.http.post(url, json={"payload": "x"})
        assert response.status_code == 400, (endpoint, "json", response.status_code)
    assert refused >= 3 * 70
    assert regulated_writes(before, stored_counts(), audit_since) == {}


HOSTILE_NEXT = [
    "https://evil.example/", "http://evil.example", "//evil.example", "///evil.example", "/\\evil.example",
    "\\\\evil.example", "/\\/evil.example", "javascript:alert(1)", "JavaScript:alert(1)", "http:evil.example",
    "https:/evil.example", "/\t/evil.example", "/\n/evil.example", " //evil.example", "data:text/html,x",
    "evil.example", "%2F%2Fevil.example", "\x00//evil.example", "/%09/evil.example".replace("%09", "\t"),
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_safe_next_refuses_every_way_off_the_site(target):
    assert safe_next(target) is None


def test_sign_in_never_redirects_off_the_site(app, demo_users):
    for target in [t for t in HOSTILE_NEXT if "\x00" not in t]:  # a NUL is refused with 400 before sign-in
        client = LabClient(app)
        for source in ("form", "query"):
            token = client.token("/login")
            url = "/login" if source == "form" else "/login?next=" + target
            data = {"csrf_token": token, "username": "qa", "password": DEMO_PASSWORD}
            if source == "form":
                data["next"] = target
            response = client.http.post(url, data=data)
            assert response.status_code == 302, (target, response.status_code)
            assert response.headers["Location"] == "/", (target, response.headers["Location"])
            client.logout()


def _assert_security_headers(response, where):
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "object-src 'none'" in csp, where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("X-Frame-Options") == "DENY", where
    assert headers.get("Referrer-Policy") == "same-origin", where


def test_every_response_carries_the_security_headers_pages_errors_static_and_api(app, demo, login_as):
    import re

    anonymous = LabClient(app)
    qa = login_as("qa")
    urls = list({_endpoint_of(app, url): url for url in urls_for_every_get_route(app)}.values())  # one per route
    seen = 0
    for client in (anonymous, qa):
        for url in urls:
            _assert_security_headers(client.get(url), (url, client is qa))
            seen += 1
    static = re.findall(r'(?:href|src)="(/static/[^"]+)"', qa.get("/").get_data(as_text=True))
    assert static
    errors = [qa.get(u) for u in static] + [
        qa.get("/no/such/page"), qa.get("/api/v1/no-such"), qa.http.post("/no/such/page"),
        qa.get("/logout"), qa.http.post("/api/v1/scan", json={}), anonymous.get("/api/v1/me"),
        anonymous.http.post("/api/v1/scan", json={}, headers={"Authorization": "Bearer lsk_wrong"}),
        login_as("technician").get("/admin/users"), anonymous.http.post("/login", data={}),
        qa.http.post("/potency/1/upload", environ_overrides={  # refused from the declared length, unread
            "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": str(app.config["MAX_CONTENT_LENGTH"] + 1),
            "CONTENT_TYPE": "multipart/form-data; boundary=x"}),
    ]
    statuses = set()
    for response in errors:
        _assert_security_headers(response, response.status_code)
        statuses.add(response.status_code)
        seen += 1
    assert {200, 400, 401, 403, 404, 405, 413} <= statuses, statuses
    assert seen > 150


def test_the_rate_limited_answer_carries_the_security_headers(engine_name, tmp_path, sqlite_template):
    from tests.conftest import make_app

    app, cleanup = make_app(engine_name, tmp_path, sqlite_template, RATELIMIT_ENABLED=True,
                            LOGIN_RATE_LIMIT="2 per minute")
    try:
        with app.app_context():
            client = LabClient(app)
            responses = [client.login("nobody", "wrong-password") for _ in range(3)]
        assert responses[-1].status_code == 429
        for response in responses:
            _assert_security_headers(response, response.status_code)
    finally:
        cleanup()


def test_a_technician_reaches_no_qa_pharmacy_or_admin_action_on_any_route(app, demo, login_as):
    """With real records in every URL: every GET and POST of a route the technician's role does not
    carry answers 403 and writes nothing, pages and API alike."""
    technician = login_as("technician")
    token = technician.token("/")
    headers = {"X-CSRFToken": token}
    before, audit_since = stored_counts(), last_audit_id()
    refused = {"GET": 0, "POST": 0}
    for url in urls_for_every_get_route(app):
        endpoint = _endpoint_of(app, url)
        access = _access(app, endpoint)
        if isinstance(access, frozenset) and Role.TECHNICIAN not in access:
            response = technician.get(url)
            assert response.status_code == 403, (url, response.status_code)
            refused["GET"] += 1
    for endpoint, url, access in post_routes(app):
        if not isinstance(access, frozenset) or Role.TECHNICIAN in access:
            continue
        for response in (technician.http.post(url, data={"csrf_token": token, "reason": "x", "decision": "release",
                                                         "sign_username": "technician", "sign_password": DEMO_PASSWORD}),
                         technician.http.post(url, json={"patient": "x", "vials": []}, headers=headers)):
            assert response.status_code == 403, (endpoint, url, response.status_code)
            refused["POST"] += 1
    assert refused["GET"] > 60 and refused["POST"] > 60, refused
    assert regulated_writes(before, stored_counts(), audit_since) == {}


def _endpoint_of(app, url: str) -> str:
    return app.url_map.bind("localhost").match(url.split("?")[0])[0]


def _access(app, endpoint):
    from labsys.auth.roles import access_of

    return access_of(app.view_functions[endpoint])


def test_a_masked_investigator_learns_no_arm_through_the_api(app, demo, login_as, db):
    """Every patient wristband, vial and certificate of the demo data scanned through /api/v1 and
    looked up through /api/trial, with a token and with the browser session."""
    from sqlalchemy import select

    from labsys.auth.services import create_api_token
    from labsys.batches.models import Vial
    from labsys.chain_of_custody import services
    from labsys.trial import services as trial_services
    from labsys.trial.masking import arm_name
    from tests.trial.conftest import ARM_NAMES

    trial = trial_services.get_trial()
    patients = [p for p in trial_services.patients(trial) if p.randomized]
    arm_words = set(ARM_NAMES) | {arm_name(trial, "msc"), arm_name(trial, "control"), "routine care"}
    _, secret = create_api_token(demo["investigator"], "walk")
    bearer = {"Authorization": f"Bearer {secret}"}
    payloads = [services.patient_payload(p) for p in patients]
    payloads += [services.vial_payload(v) for v in db.session.scalars(select(Vial).limit(40))]
    payloads += [_certificate_payload(d) for d in services.dispensings()]
    browser = login_as("investigator")
    csrf = {"X-CSRFToken": browser.token("/")}
    answered = 0
    for payload in payloads:
        for response in (browser.http.post("/api/v1/scan", json={"payload": payload}, headers=bearer),
                         browser.http.post("/api/v1/scan", json={"payload": payload}, headers=csrf)):
            assert response.status_code in (200, 404), (payload, response.status_code)
            _assert_no_arm(response, arm_words)
            answered += response.status_code == 200
    for patient in patients:
        for key in (patient.study_id, patient.kit_number):
            response = browser.get(f"/api/trial/patients/{key}")
            assert response.status_code == 200
            _assert_no_arm(response, arm_words)
    for url in ("/api/v1/me", "/api/v1/openapi.json"):
        assert browser.http.get(url, headers=bearer).status_code == 200
    check = browser.http.post("/api/v1/dispense/check", json={"patient": payloads[0], "vials": []}, headers=bearer)
    assert check.status_code == 403
    assert answered >= len(patients) * 2


def _certificate_payload(dispensing) -> str:
    from labsys.documents import codec

    return codec.encode("certificate", dispensing.number)


def _assert_no_arm(response, arm_words):
    text = response.get_data(as_text=True)
    body = response.get_json(silent=True)
    assert not (isinstance(body, dict) and "arm" in body), text[:200]
    lowered = text.lower()
    assert not any(word.lower() in lowered for word in arm_words), text[:200]


def test_bandit_finds_no_high_severity_issue():
    result = subprocess.run([sys.executable, "-m", "bandit", "-r", "labsys", "-lll", "-f", "json", "-q"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    totals = report["metrics"]["_totals"]
    high = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert high == [] and totals["SEVERITY.HIGH"] == 0, high
    assert result.returncode == 0, result.stderr[-2000:]
    assert totals["loc"] > 5000  # it really scanned the package
