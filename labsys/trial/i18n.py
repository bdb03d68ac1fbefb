"""gettext that also works outside a request (CLI demo data, worker threads, pure tests).

Flask-Babel's locale selector reads the request's session, so a plain ``gettext`` inside an app
context but outside a request fails; there the English text is the right answer."""
from __future__ import annotations

from flask import has_request_context
from flask_babel import gettext


def _(text: str, **variables) -> str:
    if has_request_context():
        return gettext(text, **variables)
    return text % variables if variables else text
