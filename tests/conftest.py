"""Test harness: every database test runs on SQLite and, when LABSYS_TEST_DATABASE_URL is set,
on PostgreSQL too. Each test gets a fresh, empty database (append-only tables cannot be
truncated, by design): a copied SQLite file, or a new PostgreSQL schema dropped afterwards."""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from labsys import create_app
from labsys.config import TestConfig
from labsys.extensions import db as _db

POSTGRES_URL = os.environ.get("LABSYS_TEST_DATABASE_URL")
ENGINES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
REQUIRE_POSTGRES = os.environ.get("LABSYS_REQUIRE_POSTGRES") == "1"


def pytest_sessionstart(session):
    if REQUIRE_POSTGRES and not POSTGRES_URL:
        pytest.exit("LABSYS_REQUIRE_POSTGRES=1 but LABSYS_TEST_DATABASE_URL is not set", returncode=3)
    if POSTGRES_URL:
        try:
            with create_engine(_psycopg_url(POSTGRES_URL)).connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:  # fail loudly: a silent SQLite-only run would hide bugs
            pytest.exit(f"PostgreSQL test database unreachable at {POSTGRES_URL}: {error}", returncode=3)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """In CI (LABSYS_REQUIRE_POSTGRES=1) a skipped test is a failure: nothing counts unrun."""
    skipped = terminalreporter.stats.get("skipped", [])
    if REQUIRE_POSTGRES and skipped:
        terminalreporter.write_line(f"FAILED: {len(skipped)} test(s) skipped; CI runs every test", red=True)
        config._labsys_skipped = True


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_labsys_skipped", False) and exitstatus == 0:
        session.exitstatus = 1
DEMO_PASSWORD = "demo-password-for-tests"


def lab_today():
    """The lab's calendar date (what the app calls today): dates typed in tests are lab dates.
    From 16:00 UTC the lab in Shanghai is already on the next day."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(TestConfig.LAB_TIMEZONE)).date()


def _psycopg_url(url: str) -> str:
    return re.sub(r"^postgresql(\+psycopg)?://", "postgresql+psycopg://", url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """An SQLite database with the schema, built once and copied for each test."""
    path = tmp_path_factory.mktemp("template") / "labsys.db"
    app = create_app(_config(f"sqlite:///{path}"))
    with app.app_context():
        _db.create_all()
        _db.engine.dispose()
    return path


def _config(url: str, **extra) -> dict:
    config = {k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()}
    config.update(SQLALCHEMY_DATABASE_URI=url, DEMO_PASSWORD=DEMO_PASSWORD, **extra)
    return config


def make_app(engine: str, tmp_path: Path, sqlite_template: Path, **extra):
    """Build an app on a fresh database; returns (app, cleanup)."""
    if engine == "sqlite":
        path = tmp_path / "labsys.db"
        shutil.copy(sqlite_template, path)
        app = create_app(_config(f"sqlite:///{path}", **extra))
        return app, lambda: None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(_psycopg_url(POSTGRES_URL))
    with admin_engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    app = create_app(_config(_psycopg_url(POSTGRES_URL), SQLALCHEMY_ENGINE_OPTIONS={
        "connect_args": {"options": f"-csearch_path={schema}"}}, **extra))
    with app.app_context():
        _db.create_all()

    def cleanup():
        with app.app_context():
            _db.session.remove()
            _db.engine.dispose()
        with admin_engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_engine.dispose()

    return app, cleanup


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def app(engine_name, tmp_path, sqlite_template):
    app, cleanup = make_app(engine_name, tmp_path, sqlite_template)
    with app.app_context():
        yield app
        _db.session.remove()
    cleanup()


@pytest.fixture
def db(app):
    return _db


@pytest.fixture
def demo_users(app):
    """The demo users (technician, technician2, qa, qa2, pharmacist, pharmacist2, investigator,
    admin), all with DEMO_PASSWORD; returns {username: User}."""
    from labsys.auth.services import find_user
    from labsys.cli import DEMO_USERS, ensure_demo_users

    ensure_demo_users()
    return {username: find_user(username) for username, _, _ in DEMO_USERS}


def csrf_token_from(html: str) -> str:
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html) or \
        re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class _IsolatedClient:
    """Each request runs in its own app context (own ``g`` and database session), as in
    production, even though the test itself holds an app context open. After each request the
    test's session is rolled back, so objects reload with what the request committed."""

    def __init__(self, app, client):
        self._app = app
        self._client = client

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name in {"get", "post", "put", "patch", "delete", "open", "head"}:
            def isolated(*args, **kwargs):
                with self._app.app_context():
                    response = attribute(*args, **kwargs)
                # The test's own session starts a fresh transaction, so it sees what the
                # request committed (a long-lived read snapshot would not).
                _db.session.rollback()
                return response
            return isolated
        return attribute


class LabClient:
    """A test client that fetches a real CSRF token before each form post, like a browser."""

    def __init__(self, app):
        self.app = app
        self.http = _IsolatedClient(app, app.test_client())

    def get(self, url, **kwargs):
        return self.http.get(url, **kwargs)

    def token(self, url: str = "/login") -> str:
        return csrf_token_from(self.http.get(url).get_data(as_text=True))

    def post_form(self, url: str, data: dict | None = None, token_from: str | None = None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.token(token_from or url))
        return self.http.post(url, data=data, **kwargs)

    def login(self, username: str, password: str = DEMO_PASSWORD):
        response = self.post_form("/login", {"username": username, "password": password})
        return response

    def logout(self):
        return self.post_form("/logout", token_from="/")


@pytest.fixture
def client(app):
    return LabClient(app)


@pytest.fixture
def login_as(app, demo_users):
    """login_as("qa") -> a LabClient signed in as that demo user."""

    def _login(username: str) -> LabClient:
        client = LabClient(app)
        response = client.login(username)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return client

    return _login


def urls_for_every_get_route(app, skip_endpoints: tuple[str, ...] = ("static",)) -> list[str]:
    """Every GET route of the application, with each URL argument filled from the values the
    features register (labsys.navigation.add_route_examples), taken from the demo data."""
    from flask import url_for
    from itertools import product

    from labsys.navigation import route_examples

    values = route_examples(app)
    urls: list[str] = []
    missing = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint in skip_endpoints:
                continue
            arguments = sorted(rule.arguments)
            absent = [a for a in arguments if not values.get(a)]
            if absent:
                missing.append(f"{rule.rule}: {absent}")
                continue
            for combination in product(*(values[a] for a in arguments)):
                urls.append(url_for(rule.endpoint, **dict(zip(arguments, combination))))
    assert not missing, "no example values for: " + "; ".join(missing)
    return urls


def load_all_demo_data(app) -> None:
    """Every feature's demo data, in flow order (what `flask demo-data` loads)."""
    from labsys.cli import ensure_demo_users
    from labsys.navigation import demo_loaders

    ensure_demo_users()
    for loader in demo_loaders(app):
        loader()
