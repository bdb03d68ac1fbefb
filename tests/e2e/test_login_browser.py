"""A person signs in with a real browser and sees their dashboard."""
from __future__ import annotations

import pytest

from tests.conftest import DEMO_PASSWORD
from tests.e2e.conftest import screenshot, sign_in

pytestmark = pytest.mark.e2e


def test_a_qa_reviewer_signs_in_and_sees_the_dashboard(live_server, page):
    base_url, _ = live_server
    page.goto(base_url + "/")
    assert page.url.startswith(base_url + "/login")
    assert page.locator("#username").evaluate("el => el === document.activeElement")
    page.fill("#username", "qa")
    page.fill("#password", "wrong-password")
    page.click("button[type=submit].primary")
    assert "Wrong user ID or password." in page.content()
    sign_in(page, base_url, "qa", DEMO_PASSWORD)
    page.wait_for_selector("h1")
    assert page.url == base_url + "/"
    assert "Welcome, Wang Fang" in page.inner_text("h1")
    assert page.locator("nav.mainnav a", has_text="Audit trail").count() == 1
    assert page.locator("nav.mainnav a", has_text="Users").count() == 0
    screenshot(page, "foundation-qa-dashboard")


def test_the_interface_switches_to_simplified_chinese(live_server, page):
    base_url, _ = live_server
    sign_in(page, base_url, "technician", DEMO_PASSWORD)
    page.wait_for_selector("h1")
    page.click("button[name=locale][value=zh_CN]")
    page.wait_for_selector("h1")
    assert "欢迎" in page.inner_text("h1")
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    screenshot(page, "foundation-dashboard-zh")
