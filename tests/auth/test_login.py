"""Sign-in, lockout, sessions that end server-side, CSRF, rate limiting, password rules."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from labsys.audit.models import AuditEntry
from labsys.auth.models import User, UserSession
from labsys.auth import services
from labsys.audit.services import Actor
from labsys.db import write_transaction
from tests.conftest import DEMO_PASSWORD, LabClient, make_app


def _count(db, model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_a_user_signs_in_and_sees_their_dashboard(client, demo_users):
    response = client.login("technician")
    assert response.status_code == 302
    html = client.get("/").get_data(as_text=True)
    assert "Li Na" in html and "Technician" in html


def test_a_wrong_password_gets_a_generic_message_and_counts(client, demo_users, db):
    response = client.login("technician", "not-the-password")
    assert response.status_code == 401
    assert "Wrong user ID or password." in response.get_data(as_text=True)
    db.session.rollback()
    assert db.session.get(User, demo_users["technician"].id).failed_logins == 1


def test_an_unknown_user_gets_the_same_message_and_an_audit_entry(client, demo_users, db):
    response = client.login("nobody", "whatever-password")
    assert "Wrong user ID or password." in response.get_data(as_text=True)
    assert _count(db, AuditEntry, AuditEntry.action == "login.failed") == 1


def test_five_wrong_passwords_lock_the_account_with_an_audit_entry(app, client, demo_users, db):
    for _ in range(app.config["LOCKOUT_THRESHOLD"]):
        client.login("qa", "wrong-password-123")
    db.session.rollback()
    user = db.session.get(User, demo_users["qa"].id)
    assert user.locked_at is not None
    locked = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user.locked")).all()
    assert len(locked) == 1 and locked[0].entity_id == str(user.id)
    # Even the right password is refused now.
    response = client.login("qa", DEMO_PASSWORD)
    assert response.status_code == 401
    assert "locked" in response.get_data(as_text=True)


def test_a_successful_sign_in_resets_the_failure_count(client, demo_users, db):
    client.login("qa", "wrong-password-123")
    client.login("qa")
    db.session.rollback()
    assert db.session.get(User, demo_users["qa"].id).failed_logins == 0


def test_a_post_without_csrf_token_is_refused_and_changes_nothing(client, demo_users, db):
    before = _count(db, AuditEntry)
    response = client.http.post("/login", data={"username": "qa", "password": DEMO_PASSWORD})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert _count(db, AuditEntry) == before
    assert _count(db, UserSession) == 0


def test_sign_out_ends_the_session_on_the_server(app, login_as, db):
    client = login_as("qa")
    cookie = client.http.get_cookie("session")
    client.logout()
    assert _count(db, UserSession, UserSession.ended_at.is_(None)) == 0
    # Replaying the old cookie does not bring the session back.
    replay = LabClient(app)
    replay.http.set_cookie("session", cookie.value)
    response = replay.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_deactivating_a_user_ends_their_sessions_at_once(app, login_as, demo_users, db):
    victim = login_as("technician")
    assert victim.get("/").status_code == 200
    services.deactivate_user(Actor.system("test"), demo_users["technician"], "left the company")
    response = victim.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    refused = LabClient(app).login("technician")
    assert "deactivated" in refused.get_data(as_text=True)


def test_an_idle_session_ends_after_the_timeout(app, login_as, db):
    client = login_as("qa")
    with write_transaction(db.session):
        record = db.session.scalar(select(UserSession))
        record.last_seen_at = record.last_seen_at - dt.timedelta(minutes=app.config["IDLE_TIMEOUT_MINUTES"] + 1)
        db.session.commit()
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    db.session.rollback()
    assert db.session.scalar(select(UserSession.end_reason)) == "idle timeout"


def test_a_session_ends_at_its_absolute_lifetime_however_active(app, login_as, db):
    client = login_as("qa")
    assert client.get("/").status_code == 200
    assert "session" not in client.get("/").headers.get("Set-Cookie", "")  # not re-sent each request
    with write_transaction(db.session):
        record = db.session.scalar(select(UserSession))
        record.created_at = record.created_at - app.config["PERMANENT_SESSION_LIFETIME"] - dt.timedelta(minutes=1)
        db.session.commit()
    response = client.get("/")  # active a moment ago: not idle, but signed in too long ago
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    db.session.rollback()
    assert db.session.scalar(select(UserSession.end_reason)) == "maximum lifetime"


def test_the_session_cookie_changes_at_sign_in(client, demo_users):
    client.get("/login")
    before = client.http.get_cookie("session")
    client.login("qa")
    after = client.http.get_cookie("session")
    assert before is None or before.value != after.value


def test_next_is_followed_only_within_the_site(client, demo_users):
    token = client.token("/login")
    response = client.http.post("/login", data={"csrf_token": token, "username": "qa",
                                                "password": DEMO_PASSWORD, "next": "https://evil.example/"})
    assert response.headers["Location"] == "/"
    other = LabClient(client.app)
    token = other.token("/login")
    response = other.http.post("/login", data={"csrf_token": token, "username": "qa",
                                               "password": DEMO_PASSWORD, "next": "/audit/"})
    assert response.headers["Location"] == "/audit/"


def test_login_attempts_are_rate_limited(engine_name, tmp_path, sqlite_template):
    app, cleanup = make_app(engine_name, tmp_path, sqlite_template, RATELIMIT_ENABLED=True,
                            LOGIN_RATE_LIMIT="3 per minute")
    try:
        with app.app_context():
            client = LabClient(app)
            statuses = [client.login("someone", "wrong-password").status_code for _ in range(4)]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3] == 429
    finally:
        cleanup()


def test_a_new_user_must_choose_a_password_before_anything_else(app, db, demo_users):
    user, one_time = services.create_user(Actor.system("test"), "newtech", "New Tech", ["technician"])
    client = LabClient(app)
    response = client.login("newtech", one_time)
    assert response.headers["Location"].endswith("/account/password")
    assert client.get("/").headers["Location"].endswith("/account/password")
    weak = client.post_form("/account/password", {"current_password": one_time, "new_password": "short",
                                                  "confirm": "short"})
    assert "at least" in weak.get_data(as_text=True)
    ok = client.post_form("/account/password", {"current_password": one_time,
                                                "new_password": "a-much-better-passphrase",
                                                "confirm": "a-much-better-passphrase"})
    assert ok.status_code == 302
    assert client.get("/").status_code == 200


def test_an_admin_can_issue_a_one_time_password_but_never_choose_one(app, login_as, demo_users, db):
    admin = login_as("admin")
    user_id = demo_users["technician"].id
    response = admin.post_form(f"/admin/users/{user_id}/reset-password", {"reason": "forgot password",
                                                                         "password": "chosen-by-admin-1"},
                               token_from=f"/admin/users/{user_id}")
    assert response.status_code == 200
    db.session.rollback()
    user = db.session.get(User, user_id)
    assert user.must_change_password is True
    assert not services.password_matches(user, "chosen-by-admin-1")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user.password_reset")).one()
    assert entry.reason == "forgot password" and "***" in entry.new_values


def test_an_admin_creates_a_user_through_the_form_and_bad_input_saves_nothing(app, login_as, db):
    admin = login_as("admin")
    before = _count(db, User)
    bad = admin.post_form("/admin/users/new", {"username": "Bad Name!", "full_name": "", "roles": []})
    assert bad.status_code == 200
    page = bad.get_data(as_text=True)
    assert "field-errors" in page and "Nothing was saved" in page
    assert _count(db, User) == before
    good = admin.post_form("/admin/users/new", {"username": "newqa", "full_name": "New QA", "roles": ["qa"]})
    assert good.status_code == 200 and "One-time password" in good.get_data(as_text=True)
    assert _count(db, User) == before + 1


def test_users_are_deactivated_never_deleted(app, db, demo_users):
    import pytest
    from labsys.errors import RuleViolation
    from labsys.audit.services import unit_of_work

    with pytest.raises(RuleViolation):
        with unit_of_work(Actor.system("test"), "user.delete"):
            db.session.delete(demo_users["investigator"])
    db.session.rollback()
    assert db.session.get(User, demo_users["investigator"].id) is not None


def test_password_rotation_is_off_by_default_and_enforced_when_configured(app, login_as, demo_users, db):
    import datetime as dt
    from labsys.audit.services import unit_of_work

    user = demo_users["qa"]
    with unit_of_work(Actor.system("test"), "test.age-password"):
        user.password_changed_at = user.password_changed_at - dt.timedelta(days=400)
    client = login_as("qa")
    assert client.get("/").status_code == 200
    app.config["PASSWORD_MAX_AGE_DAYS"] = 365
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/password")


def test_an_admin_changes_a_users_roles_and_taken_roles_are_revoked_not_deleted(app, login_as, db, demo_users):
    """Found by the form fuzzer: replacing a role failed with a 500 (the removed role row was
    orphaned with no user). A taken role is now marked revoked; giving it back reuses the row."""
    from labsys.auth.models import UserRole

    user, _ = services.create_user(Actor.system("test"), "rolechange", "Role Change", ["technician"])
    admin = login_as("admin")
    response = admin.post_form(f"/admin/users/{user.id}", {"roles": ["qa"]})
    assert response.status_code == 302
    db.session.rollback()
    assert db.session.get(User, user.id).role_set == {"qa"}
    rows = {r.role.value: r.revoked_at for r in db.session.scalars(select(UserRole).where(UserRole.user_id == user.id))}
    assert set(rows) == {"technician", "qa"} and rows["technician"] is not None and rows["qa"] is None
    assert admin.post_form(f"/admin/users/{user.id}", {"roles": ["technician", "admin"]}).status_code == 302
    db.session.rollback()
    assert db.session.get(User, user.id).role_set == {"technician", "admin"}
    assert _count(db, UserRole, UserRole.user_id == user.id) == 3
    entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "user.roles")).all()
    assert len(entries) >= 2
