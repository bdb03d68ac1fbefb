"""Deny by default: every route declares who may use it, and refuses everyone else."""
from __future__ import annotations

import pytest

from labsys.auth.roles import AUTHENTICATED, PUBLIC, Role, access_of, allow, roles_may


def test_allow_refuses_an_empty_role_list():
    with pytest.raises(ValueError):
        allow()


@pytest.mark.parametrize("access, roles, expected", [
    (frozenset({Role.QA}), {Role.QA}, True),
    (frozenset({Role.QA}), {Role.TECHNICIAN}, False),
    (frozenset({Role.QA, Role.ADMIN}), {Role.TECHNICIAN, Role.ADMIN}, True),
    (PUBLIC, set(), True),
    (AUTHENTICATED, {Role.INVESTIGATOR}, True),
    (None, {Role.ADMIN}, False),
])
def test_roles_may_follows_the_declaration(access, roles, expected):
    assert roles_may(access, roles) is expected


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        values = {arg: 1 for arg in rule.arguments}
        for converter_arg, converter in rule._converters.items():
            if type(converter).__name__ not in ("IntegerConverter",):
                values[converter_arg] = "X1"
        with app.test_request_context():
            from flask import url_for
            url = url_for(rule.endpoint, **values)
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        yield rule.endpoint, url, methods, access_of(app.view_functions[rule.endpoint])


def test_every_route_declares_its_access(app):
    undeclared = [endpoint for endpoint, _, _, access in _routes(app) if access is None]
    assert undeclared == []


def test_every_non_public_route_refuses_anonymous_users(app, client):
    token = client.token("/login")
    checked = 0
    for endpoint, url, methods, access in _routes(app):
        if access == PUBLIC:
            continue
        for method in methods:
            if method == "GET":
                response = client.get(url)
            else:
                response = client.http.open(url, method=method, data={"csrf_token": token})
            checked += 1
            if url.startswith("/api/"):
                assert response.status_code == 401, (endpoint, method)
            else:
                assert response.status_code == 302, (endpoint, method, response.status_code)
                assert "/login" in response.headers["Location"], endpoint
    assert checked > 10


def test_every_role_restricted_route_refuses_other_roles(app, demo_users, login_as):
    clients = {role: login_as(username) for role, username in [
        (Role.TECHNICIAN, "technician"), (Role.QA, "qa"), (Role.PHARMACIST, "pharmacist"),
        (Role.INVESTIGATOR, "investigator"), (Role.ADMIN, "admin")]}
    tokens = {role: c.token("/") for role, c in clients.items()}
    refused = 0
    for endpoint, url, methods, access in _routes(app):
        if not isinstance(access, frozenset):
            continue
        for role, role_client in clients.items():
            if role in access:
                continue
            for method in methods:
                if method == "GET":
                    response = role_client.get(url)
                else:
                    response = role_client.http.open(url, method=method, data={"csrf_token": tokens[role]})
                assert response.status_code == 403, (endpoint, role, method, response.status_code)
                refused += 1
    assert refused > 10


def test_a_route_without_a_declaration_is_refused(app, login_as):
    app.add_url_rule("/undeclared", "undeclared", lambda: "secret")
    client = login_as("admin")
    response = client.get("/undeclared")
    assert response.status_code == 403
    assert "secret" not in response.get_data(as_text=True)


def test_home_page_links_every_menu_entry_of_the_role(app, login_as):
    from labsys.navigation import nav_for

    for username, role in [("qa", Role.QA), ("admin", Role.ADMIN), ("technician", Role.TECHNICIAN)]:
        html = login_as(username).get("/").get_data(as_text=True)
        for item in nav_for(app, {role}):
            with app.test_request_context():
                from flask import url_for
                assert f'href="{url_for(item.endpoint)}"' in html, (username, item.endpoint)
