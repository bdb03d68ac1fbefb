"""Roles, permissions and the deny-by-default access declaration every route must carry."""
from __future__ import annotations

import enum
from functools import wraps
from typing import Callable, Iterable

from labsys.i18n import lazy_gettext as _l


class Role(str, enum.Enum):
    TECHNICIAN = "technician"
    QA = "qa"
    PHARMACIST = "pharmacist"
    INVESTIGATOR = "investigator"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return str(ROLE_LABELS[self])


ROLE_LABELS = {
    Role.TECHNICIAN: _l("Technician"),
    Role.QA: _l("QA"),
    Role.PHARMACIST: _l("Pharmacist"),
    Role.INVESTIGATOR: _l("Investigator"),
    Role.ADMIN: _l("Administrator"),
}


class Permission(str, enum.Enum):
    """Capabilities that cut across roles."""

    SIGN = "sign"  # may apply an electronic signature
    UNBLINDED = "unblinded"  # may see the treatment arm of a masked trial


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.TECHNICIAN: frozenset({Permission.SIGN}),
    Role.QA: frozenset({Permission.SIGN}),
    Role.PHARMACIST: frozenset({Permission.SIGN, Permission.UNBLINDED}),
    Role.INVESTIGATOR: frozenset({Permission.SIGN}),
    Role.ADMIN: frozenset(),  # admin manages users; it cannot sign anything
}

PUBLIC = "public"
AUTHENTICATED = "authenticated"


def _declare(view: Callable, access: object) -> Callable:
    view._labsys_access = access  # type: ignore[attr-defined]
    return view


def allow(*roles: Role) -> Callable[[Callable], Callable]:
    """Declare which roles may use a route. Routes without a declaration are refused."""
    if not roles:
        raise ValueError("allow() needs at least one role")
    allowed = frozenset(Role(r) for r in roles)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)

        return _declare(wrapper, allowed)

    return decorator


def allow_public(view: Callable) -> Callable:
    """Declare a route open to anyone, signed in or not (login page, health check)."""
    return _declare(view, PUBLIC)


def allow_signed_in(view: Callable) -> Callable:
    """Declare a route open to every signed-in user whatever the role (own account, language)."""
    return _declare(view, AUTHENTICATED)


def access_of(view: Callable | None) -> object | None:
    return getattr(view, "_labsys_access", None)


def roles_may(access: object, roles: Iterable[Role]) -> bool:
    if access == PUBLIC or access == AUTHENTICATED:
        return True
    if isinstance(access, frozenset):
        return bool(access & set(roles))
    return False
