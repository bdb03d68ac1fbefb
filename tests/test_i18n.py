"""Both languages are complete, and a user can switch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _i18n():
    spec = importlib.util.spec_from_file_location("i18n", ROOT / "scripts" / "i18n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_message_of_every_catalog_is_translated():
    assert _i18n().untranslated() == []


def test_every_catalog_has_english_and_simplified_chinese():
    for directory, _ in _i18n().catalogs():
        for locale in ("en", "zh_Hans_CN"):
            assert (directory / locale / "LC_MESSAGES" / "messages.po").exists(), (directory, locale)


def test_a_user_switches_to_chinese_and_the_choice_is_kept(login_as, db, demo_users):
    client = login_as("qa")
    response = client.post_form("/account/language", {"locale": "zh_CN", "next": "/"}, token_from="/")
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "欢迎" in page and "审计追踪" in page
    from labsys.auth.models import User
    assert db.session.get(User, demo_users["qa"].id).locale == "zh_CN"


def test_the_sign_in_page_follows_the_browser_language(client):
    page = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert "登录" in page
    assert "Sign in" not in page.split("<main")[1]


def test_form_errors_are_translated(client, demo_users):
    client.http.get("/login", headers={"Accept-Language": "zh-CN"})
    token = client.token("/login")
    page = client.http.post("/login", data={"csrf_token": token, "username": "qa", "password": "bad-password"},
                            headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "Wrong user ID or password." not in page


def test_labsys_gettext_translates_as_flask_babel_does_and_follows_force_locale(app):
    import flask_babel

    from labsys import i18n

    message = "Batches"  # a menu label, in every request
    # Each request in an application context of its own, as in production (the fixture's context
    # would keep its locale on g for every request pushed inside it).
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "en"}):
        assert i18n.gettext(message) == flask_babel.gettext(message) == "Batches"
        assert i18n.locale_name() == "en"
        with flask_babel.force_locale("zh_CN"):
            chinese = flask_babel.gettext(message)
            assert chinese != message and i18n.gettext(message) == chinese
            assert str(i18n.lazy_gettext(message)) == chinese
            assert i18n.locale_name() == str(flask_babel.get_locale()) == "zh_Hans_CN"
        assert i18n.gettext(message) == "Batches"  # back in the request's own language
        assert i18n.gettext("Kit %(kit)s has an open infusion order.", kit="K-1") == \
            flask_babel.gettext("Kit %(kit)s has an open infusion order.", kit="K-1")
    with app.app_context(), app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        assert i18n.gettext(message) == chinese
