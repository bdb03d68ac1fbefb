"""Layout in a real browser (issue 11): pages fit a 768 px tablet without sideways scrolling of the
page, the QA menu fits one line at 1280 px, and the scan-to-dispense page works by keyboard only."""
from __future__ import annotations

import shutil
import threading

import pytest
from werkzeug.serving import make_server

from labsys import create_app
from tests.chain_of_custody.test_pharmacy_browser import _prepare
from tests.conftest import DEMO_PASSWORD, _config, load_all_demo_data
from tests.e2e.conftest import browser, live_server, page, screenshot, sign_in  # noqa: F401  (fixtures)
from tests.test_ux import pages_to_walk


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, sqlite_template):
    """The app with every feature's demo data, served on 127.0.0.1 for this module's tests (they
    only read); yields (base_url, app)."""
    path = tmp_path_factory.mktemp("layout") / "layout.db"
    shutil.copy(sqlite_template, path)
    app = create_app(_config(f"sqlite:///{path}"))
    with app.app_context():
        load_all_demo_data(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join(timeout=5)


def _switch_language(page, locale: str) -> None:
    page.click(f".lang-switch button[value={locale}]")
    page.wait_for_load_state()


@pytest.mark.parametrize("username, locale", [("qa", "en"), ("pharmacist", "en"), ("technician", "zh_CN"),
                                              ("investigator", "zh_CN")])
def test_pages_fit_a_768_px_tablet_without_sideways_scrolling(demo_server, browser, username, locale):
    base_url, app = demo_server
    context = browser.new_context(viewport={"width": 768, "height": 1024})
    page = context.new_page()
    sign_in(page, base_url, username, DEMO_PASSWORD)
    _switch_language(page, locale)
    checked, too_wide = 0, []
    for url, _ in pages_to_walk(app):
        try:
            response = page.goto(base_url + url)
        except Exception:  # a download, not a page
            continue
        if response is None or response.status != 200 or "text/html" not in response.headers["content-type"]:
            continue
        checked += 1
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            too_wide.append(f"{url}: {overflow}px")
        # the menu takes its own row and no link of it is cut off
        nav_right = page.evaluate("Math.max(...[...document.querySelectorAll('.mainnav a')]"
                                  ".map(a => a.getBoundingClientRect().right))")
        assert nav_right <= 768, url
    screenshot(page, f"tablet-{username}-{locale}-last-page")
    context.close()
    assert checked > 10
    assert too_wide == []


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_the_qa_menu_fits_one_line_at_1280_px(demo_server, page, locale):
    base_url, _ = demo_server
    sign_in(page, base_url, "qa", DEMO_PASSWORD)
    _switch_language(page, locale)
    tops = page.evaluate("[...document.querySelectorAll('.mainnav a')].map(a => a.getBoundingClientRect().top)")
    assert len(tops) >= 8  # Home and the seven QA areas
    assert max(tops) - min(tops) < 2, tops
    link_height = page.evaluate("document.querySelector('.mainnav a').offsetHeight")
    assert page.evaluate("document.querySelector('.mainnav').offsetHeight") < 2 * link_height
    screenshot(page, f"qa-menu-1280-{locale}")


def test_a_printed_page_hides_the_menu_and_buttons_and_prints_black_on_white(demo_server, page):
    base_url, _ = demo_server
    sign_in(page, base_url, "qa", DEMO_PASSWORD)
    page.goto(f"{base_url}/release/lots/1")
    page.emulate_media(media="print")
    assert page.locator(".topbar").is_hidden()
    assert page.locator("main button").first.is_hidden()
    colours = page.evaluate("[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.querySelector('h1')).color]")
    assert colours == ["rgb(255, 255, 255)", "rgb(0, 0, 0)"]


def _focused(page) -> str:
    return page.evaluate("document.activeElement.id")


def test_the_scan_page_works_with_the_keyboard_alone(live_server, page):
    base_url, app = live_server
    wristband, right, wrong = _prepare(app)
    sign_in(page, base_url, "pharmacist", DEMO_PASSWORD)
    page.goto(f"{base_url}/pharmacy/dispense")
    assert _focused(page) == "scan-input"
    for code in (wristband, wrong):
        page.keyboard.type(code)
        page.keyboard.press("Enter")
    page.locator("#check-result.check-failed").wait_for()
    failed = page.locator("#check-result li.check-fail").first.inner_text()
    assert failed.startswith("\u2718")  # a cross, not only red
    assert _focused(page) == "scan-input"
    # Tab order: scan field, camera, start again; Enter on "Start again" returns to the scan field
    page.keyboard.press("Tab")
    assert _focused(page) == "camera-start"
    page.keyboard.press("Tab")
    assert _focused(page) == "scan-reset"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # the focus ring is visible
    page.keyboard.press("Enter")
    assert _focused(page) == "scan-input"
    for code in [wristband, *right]:
        page.keyboard.type(code)
        page.keyboard.press("Enter")
    page.locator("#check-result.check-passed").wait_for()
    assert _focused(page) == "scan-input"
    page.keyboard.press("Enter")  # empty scan field: on to the signature
    assert _focused(page) == "sign_username"
    page.keyboard.type("pharmacist")
    page.keyboard.press("Tab")
    assert _focused(page) == "sign_password"
    page.keyboard.type(DEMO_PASSWORD)
    page.keyboard.press("Tab")
    assert _focused(page) == "sign_comment"
    page.keyboard.press("Tab")
    assert _focused(page) == "witness_username"
    page.keyboard.type("pharmacist2")
    page.keyboard.press("Tab")
    assert _focused(page) == "witness_password"
    page.keyboard.type("wrong password")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # refused: the cursor is in the field to correct, the scans and user IDs are kept
    assert _focused(page) == "witness_password"
    assert page.locator(".field-errors").first.inner_text().startswith("The witness signature was refused")
    assert page.input_value("#form-vials").count("\n") == len(right) - 1
    assert page.input_value("#witness_username") == "pharmacist2"
    page.keyboard.type(DEMO_PASSWORD)
    for _ in range(3):  # back past the witness user ID and the comment to the signer's password
        page.keyboard.press("Shift+Tab")
    assert _focused(page) == "sign_password"  # passwords are never sent back to the page
    page.keyboard.type(DEMO_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/pharmacy/dispensings/*")
    assert "Zhang Wei" in page.content()
    screenshot(page, "custody-dispensed-by-keyboard")
