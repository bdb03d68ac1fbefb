"""Long lists: one page of rows at a time and a search term, the same way on every list page."""
from __future__ import annotations

from flask import current_app, request
from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import Integer, literal

from labsys.db import read
from labsys.extensions import db


def search_term() -> str:
    return request.args.get("q", "").strip()[:80]


def contains(column, term: str):
    """``column`` (upper-case text) contains ``term`` in any case: a LIKE with the term's ``%``,
    ``_`` and ``\\`` taken as characters, the escape character written with the pattern."""
    escaped = term.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")


def starts_with(column, prefix: str):
    """``column`` starts with the non-empty ``prefix``, as a range its index can answer (a LIKE
    'prefix%' reads every row on PostgreSQL without a pattern index)."""
    return (column >= prefix) & (column < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def page_of(query):
    """The requested page (``?page=``) of a select(), PAGE_SIZE rows long, with a total count."""
    return db.paginate(query, per_page=current_app.config["PAGE_SIZE"], error_out=False, count=True)


def page_size_limit(per_page: int):
    """A page's LIMIT written into the statement's text (``LIMIT 25``), the offset left a
    parameter. PostgreSQL plans a prepared statement for its parameters five times, then keeps a
    generic plan only if that plan looks no dearer; with the row count a parameter it guesses a
    tenth of the table, so the list pages stayed on custom plans, planned anew at every execution
    (0.5–0.9 ms of server time for the batch list, as much as running it). With the page size in
    the text the generic plan is the same as the custom one: the batch list's execution went from
    0.85 to 0.33 ms on the volume data. Page sizes are few (25 and the ``per_page`` choices), so
    few statements."""
    return literal(int(per_page), Integer, literal_execute=True)


class RowPagination(Pagination):
    """A page of plain rows (a select() of columns, not of ORM entities), found in two steps: the
    keys of the page's rows, read from the filtered table alone in page order, then the shown
    columns of just those rows (joins and per-row look-ups for 25 rows, not for every row the
    offset skips). The count is a statement of its own, without the joins that only supply
    shown columns (``labsys.db.count_of``).

    ``keys``: a select of the key column of the matching rows, in page order; ``by_keys``: the
    rows (in page order) whose key is in a list or select of keys, or None when ``keys`` selects
    the shown columns themselves (one table, nothing to join); ``count_select``: the number of
    matching rows. ``few``: the filter cannot use an index (a search inside identifiers), so the
    table is read once instead of twice: when at most FEW rows match, their keys give the count
    and the page is cut from them."""

    FEW = 1000

    def _query_items(self) -> list:
        # Plain rows, read on the session's connection without the ORM's per-statement work.
        args = self._query_args
        self._matches: list | None = None
        if args["few"]:
            keys = list(read(args["keys"].limit(self.FEW + 1)).scalars())
            if len(keys) <= self.FEW:
                self._matches = keys
                chosen = keys[self._query_offset:self._query_offset + self.per_page]
                return list(read(args["by_keys"](chosen)).all()) if chosen else []
        chosen = args["keys"].limit(page_size_limit(self.per_page)).offset(self._query_offset)
        if args["by_keys"] is None:  # the keys are the rows
            return list(read(chosen).all())
        return list(read(args["by_keys"](chosen)).all())

    def _query_count(self) -> int:
        if self._matches is not None:
            return len(self._matches)
        return read(self._query_args["count_select"]).scalar() or 0


def page_of_rows(keys, by_keys, count, few: bool = False, per_page: int | None = None) -> RowPagination:
    """The requested page (``?page=``) of rows, as described in RowPagination."""
    return RowPagination(keys=keys, by_keys=by_keys, count_select=count, few=few,
                         per_page=per_page or current_app.config["PAGE_SIZE"], max_per_page=None, error_out=False)
