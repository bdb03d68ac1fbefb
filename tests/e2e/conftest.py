"""Browser tests: the app served on 127.0.0.1 (real HTTP, SQLite file database) and driven by
Playwright in Debian's headless Chromium."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from labsys import create_app
from tests.conftest import _config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_server(tmp_path, sqlite_template):
    """Serve a fresh app with the demo users; yields (base_url, app)."""
    path = tmp_path / "e2e.db"
    shutil.copy(sqlite_template, path)
    app = create_app(_config(f"sqlite:///{path}"))
    with app.app_context():
        from labsys.cli import ensure_demo_users
        ensure_demo_users()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def potency_server(tmp_path, sqlite_template):
    """A live server whose potency scoring jobs run: Huey on SQLite, consumed by a thread of this
    process, fields scored by a pool of two processes. Yields (base_url, app)."""
    path = tmp_path / "e2e.db"
    shutil.copy(sqlite_template, path)
    app = create_app(_config(f"sqlite:///{path}", POTENCY_IMAGE_DIR=str(tmp_path / "images"),
                             POTENCY_HUEY_FILE=str(tmp_path / "huey.db"), POTENCY_SCORING_PROCESSES=2))
    with app.app_context():
        from labsys.cli import ensure_demo_users
        ensure_demo_users()
    from labsys.potency.jobs import get_huey

    huey, _task = get_huey(app)
    stop = threading.Event()

    def consume():  # the Huey consumer's loop, in a thread of this process
        while not stop.is_set():
            task = huey.dequeue()
            if task is None:
                time.sleep(0.2)
                continue
            with app.app_context():
                huey.execute(task)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    stop.set()
    thread.join(timeout=5)
    consumer.join(timeout=30)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str, **options) -> Path:
    """Save the whole page (or what ``options`` say, e.g. ``clip=...``) under test-artifacts/screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), **{"full_page": True, **options})
    return path


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit].primary")


def wait_until(page, expression: str, timeout: float = 20.0) -> None:
    """Poll a JavaScript expression (page.wait_for_function may need eval, which the app's
    Content Security Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)
