"""``gettext`` and ``lazy_gettext`` for labsys's code, with the request's catalog looked up once.

Flask-Babel's own ``gettext`` finds the domain, the locale and the catalog again on every call
(several context-local look-ups, ≈ 8 µs); a page or a dispensing check translates 40–80 strings
(menus, status labels, every rule's message). These functions give the same result: the catalog
Flask-Babel returns for the request's locale, remembered on the application context beside the
locale Flask-Babel keeps there itself (and looked up again when that locale changes, as inside
``force_locale``). Outside an application context they fall back
to Flask-Babel, which answers with the untranslated string."""
from __future__ import annotations

from typing import Any

import flask_babel
from flask import g, has_app_context
from flask_babel.speaklater import LazyString


def _request_state() -> tuple[Any, Any, str | None]:
    """(locale, translations, locale name) for the current locale, remembered on the application
    context. The locale is read each time where Flask-Babel keeps it on the context (``force_locale``
    and ``refresh()`` change or clear it there), through ``get_locale`` when it is not there."""
    store = g._get_current_object()  # ``g`` itself: each access through the proxy costs a look-up
    locale = getattr(getattr(store, "_flask_babel", None), "babel_locale", None)
    if locale is None:
        locale = flask_babel.get_locale()
    state = getattr(store, "_labsys_i18n", None)
    # Identity, not equality: Flask-Babel keeps one Locale object on the context until it changes
    # it (Locale.__eq__ compares the text of both, a few µs a call; a list page makes ≈ 50 of these calls).
    if state is None or state[0] is not locale:
        state = store._labsys_i18n = (locale, flask_babel.get_translations(), None if locale is None else str(locale))
    return state


def catalog() -> Any:
    """The request's translations (Flask-Babel's ``get_translations``), looked up once."""
    if not has_app_context():
        return flask_babel.get_translations()
    return _request_state()[1]


def locale_name() -> str | None:
    """The request's locale as text (``en``, ``zh_CN``); None outside a context."""
    if not has_app_context():
        return None
    return _request_state()[2]


def gettext(string: str, **variables: Any) -> str:
    text = catalog().ugettext(string)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    variables.setdefault("num", num)
    text = catalog().ungettext(singular, plural, num)
    return text % variables


def lazy_gettext(string: str, **variables: Any) -> LazyString:
    """Translated when it is shown, in the language of the request that shows it."""
    return LazyString(gettext, string, **variables)


def N_(string: str) -> str:
    """Mark a message for extraction (``N_`` is one of Babel's default keywords) that is
    translated later, where it is shown."""
    return string
