"""Helpers shared by the batches services: field-level refusals, role checks, the unit of work
for a user, and loading records before changing them."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from labsys.audit.services import unit_of_work
from labsys.auth.models import User
from labsys.auth.roles import Role
from labsys.auth.services import actor_of
from labsys.errors import ConcurrentChange, Forbidden, NotFound, RuleViolation
from labsys.extensions import db
from labsys.i18n import gettext as _


def refuse(message: str, problems: Iterable[tuple[str, str]]) -> RuleViolation:
    """A RuleViolation carrying every field problem (``error.problems``) and its messages."""
    problems = list(problems)
    error = RuleViolation(message, [text for _field, text in problems],
                          field=problems[0][0] if problems else None)
    error.problems = problems  # type: ignore[attr-defined]
    return error


def require_role(user: User, *roles: Role) -> None:
    if not user.has_role(*roles):
        raise Forbidden(_("Your role does not allow this action."))


@contextlib.contextmanager
def work(user: User, action: str, reason: str | None = None, reason_required: bool = False) -> Iterator[Any]:
    """``unit_of_work`` for a user, turning a lost race on a versioned row into ConcurrentChange."""
    try:
        with unit_of_work(actor_of(user), action, reason, reason_required=reason_required) as session:
            yield session
    except StaleDataError:
        raise ConcurrentChange(_("Someone else changed this record at the same time. Reload and try again."))


def setting(name: str) -> Any:
    return current_app.config[name]


def get_or_404(model: type, record_id: int) -> Any:
    record = db.session.get(model, record_id)
    if record is None:
        raise NotFound(_("There is no such record."))
    return record
