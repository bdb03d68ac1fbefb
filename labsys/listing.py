"""Long lists: one page of rows at a time and a search term, the same way on every list page."""
from __future__ import annotations

from flask import current_app, request

from labsys.extensions import db


def search_term() -> str:
    return request.args.get("q", "").strip()[:80]


def contains(term: str) -> str:
    """A LIKE pattern matching ``term`` anywhere, with LIKE's wildcards taken literally."""
    escaped = term.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def page_of(query):
    """The requested page (``?page=``) of a select(), PAGE_SIZE rows long, with a total count."""
    return db.paginate(query, per_page=current_app.config["PAGE_SIZE"], error_out=False, count=True)
