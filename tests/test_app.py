"""Health check, error pages, security headers, CLI commands."""
from __future__ import annotations

from sqlalchemy import func, select

from labsys.audit.models import AuditEntry
from labsys.auth.models import User


def test_healthz_answers_json_without_sign_in(client, engine_name):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["engine"] == engine_name


def test_an_unknown_page_gets_a_clear_404_page(login_as):
    response = login_as("qa").get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_an_unknown_api_address_answers_json(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"] == "Not Found"


def test_a_forbidden_page_says_why(login_as):
    response = login_as("technician").get("/admin/users")
    assert response.status_code == 403
    assert "Your role does not allow this action." in response.get_data(as_text=True)


def test_every_response_carries_the_security_headers(client, login_as):
    for response in (client.get("/login"), client.get("/healthz"), login_as("qa").get("/")):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["X-Frame-Options"] == "DENY"


def test_cookies_are_secure_when_served_over_https(engine_name, tmp_path, sqlite_template):
    from tests.conftest import LabClient, make_app

    app, cleanup = make_app(engine_name, tmp_path, sqlite_template, SESSION_COOKIE_SECURE=True)
    try:
        with app.app_context():
            response = LabClient(app).http.get("/login", base_url="https://localhost")
            cookie = response.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert "max-age" in response.headers["Strict-Transport-Security"]
    finally:
        cleanup()


def test_users_create_prints_a_one_time_password(app, db):
    result = app.test_cli_runner().invoke(args=["users", "create", "--username", "lab.tech",
                                                "--role", "technician", "--role", "qa"])
    assert result.exit_code == 0, result.output
    assert "One-time password:" in result.output
    password = result.output.split("One-time password:")[1].split()[0]
    user = db.session.scalar(select(User).where(User.username == "lab.tech"))
    from labsys.auth.services import password_matches
    assert password_matches(user, password)
    assert {r.value for r in user.role_set} == {"technician", "qa"} and user.must_change_password


def test_users_create_refuses_a_taken_user_id(app, db, demo_users):
    result = app.test_cli_runner().invoke(args=["users", "create", "--username", "qa", "--role", "qa"])
    assert result.exit_code != 0 and "taken" in result.output


def test_demo_data_is_idempotent_and_prints_the_logins(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo-data"])
    assert first.exit_code == 0, first.output
    counts = (db.session.scalar(select(func.count()).select_from(User)),
              db.session.scalar(select(func.count()).select_from(AuditEntry)))
    second = runner.invoke(args=["demo-data"])
    db.session.rollback()
    assert second.exit_code == 0
    assert (db.session.scalar(select(func.count()).select_from(User)),
            db.session.scalar(select(func.count()).select_from(AuditEntry))) == counts
    for username in ("technician", "technician2", "qa", "qa2", "pharmacist", "pharmacist2", "investigator", "admin"):
        assert username in first.output
    assert "http://127.0.0.1:5000" in first.output


def test_every_role_home_page_has_one_layout_and_a_title(login_as, demo_users):
    for username in ("technician", "qa", "pharmacist", "investigator", "admin"):
        page = login_as(username).get("/").get_data(as_text=True)
        assert page.count('<header class="topbar">') == 1, username
        assert page.count("<h1") >= 1, username
