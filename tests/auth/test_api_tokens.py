"""Per-user API tokens for scanners: created on the user's page, shown once, stored hashed,
revocable; browser calls to the API still need the CSRF header."""
from __future__ import annotations

import re

from sqlalchemy import select

from labsys.audit.models import AuditEntry
from labsys.auth import services
from labsys.auth.models import ApiToken


def _create_token_through_the_page(client) -> str:
    page = client.post_form("/account", {"name": "pharmacy scanner 1"}).get_data(as_text=True)
    match = re.search(r"(lsk_[A-Za-z0-9_\-]+)", page)
    assert match, "the new token is shown once"
    return match.group(1)


def test_a_token_is_shown_once_and_stored_only_as_a_hash(login_as, db, demo_users):
    client = login_as("pharmacist")
    secret = _create_token_through_the_page(client)
    token = db.session.scalars(select(ApiToken)).one()
    assert secret not in (token.token_hash, token.prefix) and token.prefix == secret[:12]
    assert secret not in client.get("/account").get_data(as_text=True)
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "api_token.create")).one()
    assert secret not in entry.new_values


def test_a_scanner_authenticates_with_its_token(client, login_as, demo_users):
    secret = _create_token_through_the_page(login_as("pharmacist"))
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert response.get_json() == {"username": "pharmacist", "full_name": "Zhang Wei", "roles": ["pharmacist"]}


def test_a_wrong_or_revoked_token_gets_401_with_a_json_reason(client, login_as, db, demo_users):
    owner = login_as("pharmacist")
    secret = _create_token_through_the_page(owner)
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer lsk_forged"}).status_code == 401
    token_id = db.session.scalars(select(ApiToken.id)).one()
    assert owner.post_form(f"/account/tokens/{token_id}/revoke", token_from="/account").status_code == 302
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401 and response.get_json()["error"] == "Unauthorized"


def test_a_token_stops_working_when_its_user_is_deactivated(client, login_as, db, demo_users):
    secret = _create_token_through_the_page(login_as("pharmacist"))
    services.deactivate_user(services.actor_of(demo_users["admin"]), demo_users["pharmacist"], "left")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_nobody_revokes_another_users_token(login_as, db, demo_users):
    _create_token_through_the_page(login_as("pharmacist"))
    token_id = db.session.scalars(select(ApiToken.id)).one()
    other = login_as("pharmacist2")
    assert other.post_form(f"/account/tokens/{token_id}/revoke", token_from="/account").status_code == 404
    assert db.session.get(ApiToken, token_id).revoked_at is None


def test_a_token_is_not_accepted_outside_the_api(client, login_as, demo_users):
    secret = _create_token_through_the_page(login_as("pharmacist"))
    response = client.get("/", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_token_without_a_name_is_refused_with_a_field_error(login_as, db):
    page = login_as("qa").post_form("/account", {"name": ""}).get_data(as_text=True)
    assert "field-errors" in page
    assert db.session.scalars(select(ApiToken)).all() == []


def test_a_token_speaks_for_its_users_roles_and_standing_as_they_are_at_each_call(app, client, login_as, db,
                                                                                     demo_users):
    """The caller is read with the token on every call (plain values, no cached record): a role
    taken away, a lock or a one-time password count from the next call on."""
    secret = _create_token_through_the_page(login_as("pharmacist"))
    bearer = {"Authorization": f"Bearer {secret}"}
    admin, pharmacist = services.actor_of(demo_users["admin"]), demo_users["pharmacist"]
    check = {"patient": "LS1-not-a-wristband", "vials": []}
    assert client.http.post("/api/v1/dispense/check", json=check, headers=bearer).status_code == 200

    services.set_roles(admin, pharmacist, ["pharmacist", "qa"])
    assert client.get("/api/v1/me", headers=bearer).get_json()["roles"] == ["pharmacist", "qa"]
    services.set_roles(admin, pharmacist, ["qa"])
    assert client.get("/api/v1/me", headers=bearer).get_json()["roles"] == ["qa"]
    assert client.http.post("/api/v1/dispense/check", json=check, headers=bearer).status_code == 403

    services.set_roles(admin, pharmacist, ["pharmacist"])
    for _ in range(app.config["LOCKOUT_THRESHOLD"]):
        services.register_failure(pharmacist, "login.failed")
    assert pharmacist.is_locked
    assert client.get("/api/v1/me", headers=bearer).status_code == 401
    one_time = services.unlock_user(admin, pharmacist, "verified by phone")
    assert client.get("/api/v1/me", headers=bearer).status_code == 401  # a password change is due
    services.change_password(pharmacist, one_time, "Cord-Blood-Vial-2026!")
    assert client.get("/api/v1/me", headers=bearer).get_json()["roles"] == ["pharmacist"]
