"""Usability rules every page keeps (issue 11): a title and one h1, forms that put the cursor in
their first field and keep what was typed after an error, times with their zone, dates and
numbers written the way the page's language writes them, long lists that page and search."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from flask_babel import refresh

from labsys.extensions import db
from labsys.timefmt import format_date, format_datetime, format_number
from tests.conftest import load_all_demo_data
from tests.trial.conftest import make_trial, pharmacist  # noqa: F401  (fixtures)

ROLES = ["technician", "qa", "pharmacist", "investigator", "admin"]


class PageFacts(HTMLParser):
    """What the rules look at: the <title>, the h1s, and the fields of each post form in <main>."""

    def __init__(self):
        super().__init__()
        self.title = ""
        self.h1_count = 0
        self.in_title = self.in_main = False
        self.forms: list[dict] = []  # {"fields": [...], "autofocus": bool, "primary": bool}
        self._form = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "title":
            self.in_title = True
        elif tag == "h1":
            self.h1_count += 1
        elif tag == "main":
            self.in_main = True
        elif tag == "form" and self.in_main and (attrs.get("method") or "get").lower() == "post":
            self._form = {"fields": [], "autofocus": False, "primary": False, "action": attrs.get("action") or ""}
            self.forms.append(self._form)
        elif self._form is not None:
            if tag in ("input", "select", "textarea") and attrs.get("type") not in ("hidden", "submit"):
                self._form["fields"].append(attrs.get("name"))
            if "autofocus" in attrs:
                self._form["autofocus"] = True
            if tag == "button" and {"primary", "danger"} & set((attrs.get("class") or "").split()):
                self._form["primary"] = True
        if tag in ("input", "select", "textarea", "button") and "autofocus" in attrs and self.in_main:
            self.autofocus_anywhere = True

    autofocus_anywhere = False

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        elif tag == "form":
            self._form = None
        elif tag == "main":
            self.in_main = False

    def handle_data(self, data):
        if self.in_title:
            self.title += data


def facts_of(html: str) -> PageFacts:
    parser = PageFacts()
    parser.feed(html)
    return parser


@pytest.fixture
def demo_app(app, demo_users):
    load_all_demo_data(app)
    return app


def pages_to_walk(app) -> list[tuple[str, bool]]:
    """One URL per HTML page (the first example values), and whether the page is a form page:
    its URL also answers POST, so the form posts back to the page itself."""
    from flask import url_for

    from labsys.navigation import route_examples

    walk = []
    with app.test_request_context():
        values = route_examples(app)
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint == "static" or rule.rule.startswith("/api/"):
                continue
            if re.search(r"\.(pdf|png|csv|json|svg|txt|zip)$|/export|/logout|/download", rule.rule):
                continue
            url = url_for(rule.endpoint, **{a: values[a][0] for a in rule.arguments})
            walk.append((url, "POST" in rule.methods))
    assert len(walk) > 60
    return walk


@pytest.mark.parametrize("username", ROLES)
def test_every_page_has_a_title_one_h1_worded_badges_and_focused_forms(demo_app, login_as, username):
    client = login_as(username)
    pages = form_pages = 0
    failures = []
    for url, is_form_page in pages_to_walk(demo_app):
        response = client.get(url)
        if response.status_code != 200 or response.mimetype != "text/html":
            continue
        pages += 1
        html = response.get_data(as_text=True)
        page = facts_of(html)
        title = page.title.rsplit("·", 1)[0].strip()
        if not title or title == "labsys":
            failures.append(f"{url}: no page title ({page.title!r})")
        if re.search(r'<span class="badge[^"]*">\s*</span>', html):
            failures.append(f"{url}: a status badge with no words (colour alone)")
        if page.h1_count != 1:
            failures.append(f"{url}: {page.h1_count} h1 elements")
        main_forms = [f for f in page.forms if f["fields"] and f["action"] in ("", url)]  # posting back here
        if is_form_page and main_forms:
            form_pages += 1
            if not page.autofocus_anywhere:
                failures.append(f"{url}: a form page with no autofocus field")
            if not any(f["primary"] for f in main_forms):
                failures.append(f"{url}: a form page with no primary button")
    assert pages > 5 and (form_pages > 0 or username == "admin")
    assert failures == [], "\n".join(failures)


def test_a_time_shows_the_lab_zone_in_both_languages(app, demo_users, login_as):
    stored = dt.datetime(2026, 11, 25, 6, 30, tzinfo=dt.timezone.utc)  # 14:30 in Shanghai
    with app.test_request_context(headers={"Accept-Language": "en"}):
        refresh()  # the test's app context outlives one request; Babel caches the locale on it
        english = format_datetime(stored)
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        refresh()
        chinese = format_datetime(stored)
    assert english == "Nov 25, 2026 14:30 UTC+08:00"
    assert chinese == "2026年11月25日 14:30 UTC+08:00"
    with app.test_request_context():
        assert format_datetime(stored.replace(tzinfo=None), seconds=True).endswith("14:30:00 UTC+08:00")


def test_a_page_shows_its_times_with_the_zone_in_english_and_chinese(demo_app, login_as):
    client = login_as("qa")
    body = client.get("/audit/").get_data(as_text=True)
    assert re.search(r"[A-Z][a-z]{2} \d{1,2}, 20\d\d \d\d:\d\d:\d\d UTC\+08:00", body)
    client.post_form("/account/language", {"locale": "zh_CN"}, token_from="/")
    body = client.get("/audit/").get_data(as_text=True)
    assert re.search(r"20\d\d年\d{1,2}月\d{1,2}日 \d\d:\d\d:\d\d UTC\+08:00", body)


def test_a_chinese_page_writes_dates_and_numbers_the_chinese_way(demo_app, login_as):
    from sqlalchemy import select

    from labsys.batches.models import Vial

    vial = db.session.scalars(select(Vial).order_by(Vial.id)).first()
    client = login_as("technician")
    english = client.get(f"/batches/vials/{vial.id}").get_data(as_text=True)
    client.post_form("/account/language", {"locale": "zh_CN"}, token_from="/")
    chinese = client.get(f"/batches/vials/{vial.id}").get_data(as_text=True)
    expiry = vial.expiry_date
    assert f"{expiry:%b} {expiry.day}, {expiry.year}" in english
    assert f"{expiry.year}年{expiry.month}月{expiry.day}日" in chinese
    assert expiry.isoformat() not in chinese.split("<main", 1)[1].split("</main>")[0]
    # Digit grouping from the locale: 10,000,000 in both languages (Babel's zh_Hans_CN data).
    with demo_app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        refresh()
        grouped = format_number(vial.viable_cells)
        assert format_date(expiry) == f"{expiry.year}年{expiry.month}月{expiry.day}日"
        assert format_number(Decimal("9.75"), 1) == "9.8"
    assert grouped in chinese and "," in grouped


def test_numbers_follow_the_page_language(app):
    with app.test_request_context(headers={"Accept-Language": "en"}):
        refresh()
        assert format_number(12_345_678) == "12,345,678"
        assert format_number(93.456, 1) == "93.5"
        assert format_number(None) == "—"


@pytest.mark.parametrize("url, marker", [
    ("/trial/patients", "trial.patients"),
    ("/trial/orders", "trial.order_list"),
    ("/release/results", "release.results_index"),
])
def test_long_lists_search_and_page(demo_app, login_as, url, marker):
    username = "technician" if url.startswith("/release") else "investigator"
    client = login_as(username)
    body = client.get(url).get_data(as_text=True)
    assert 'role="search"' in body and 'name="q"' in body
    nothing = client.get(url + "?q=NO-SUCH-CODE-XYZ").get_data(as_text=True)
    assert re.search(r"No (patients|orders|lot) match", nothing)


def test_the_patient_list_pages_by_page_size(app, demo_users, login_as, make_trial):
    from labsys.trial import services
    from tests.trial.conftest import screening_values

    app.config["PAGE_SIZE"] = 2
    trial = make_trial()
    for number in range(5):
        services.enrol_patient(demo_users["investigator"], trial, screening_values(trial, f"SCR-P{number:03d}"))
    client = login_as("investigator")
    first = client.get("/trial/patients").get_data(as_text=True)
    assert first.count("SCR-P0") == 2 and "Page 1 of 3" in first
    third = client.get("/trial/patients?page=3").get_data(as_text=True)
    assert third.count("SCR-P0") == 1 and "SCR-P004" in third
    found = client.get("/trial/patients?q=p003").get_data(as_text=True)
    assert "SCR-P003" in found and "SCR-P001" not in found
    # LIKE wildcards are taken literally
    assert "SCR-P0" not in client.get("/trial/patients?q=%25").get_data(as_text=True)


def test_a_form_keeps_typed_values_after_an_error(app, demo_users, login_as):
    client = login_as("technician")
    response = client.post_form("/batches/donors/new", {"code": "D-KEEP-ME", "consent_date": "not-a-date"})
    body = response.get_data(as_text=True)
    assert response.status_code in (200, 422)
    assert 'value="D-KEEP-ME"' in body and "has-error" in body
