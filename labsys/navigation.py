"""Menus and dashboard panels that features register, shown by role.

Each feature's ``init_app`` adds its entries; the base layout shows only what the signed-in
user's roles may use, so the menu and the routes' access declarations agree."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from flask import Flask

from labsys.auth.roles import Role


@dataclass(frozen=True)
class NavItem:
    label: object  # a lazy gettext string
    endpoint: str
    roles: frozenset[Role]
    order: int = 100


@dataclass(frozen=True)
class DashboardPanel:
    """A panel on the home page: a template partial fed by a context function."""

    template: str
    roles: frozenset[Role]
    context: Callable[[], dict] = field(default=lambda: {})
    order: int = 100


def _registry(app: Flask) -> dict:
    return app.extensions.setdefault("labsys_navigation", {"nav": [], "panels": [], "demo": [],
                                                           "examples": []})


def add_nav(app: Flask, label: object, endpoint: str, roles: Iterable[Role], order: int = 100) -> None:
    _registry(app)["nav"].append(NavItem(label, endpoint, frozenset(roles), order))


def add_panel(app: Flask, template: str, roles: Iterable[Role],
              context: Callable[[], dict] | None = None, order: int = 100) -> None:
    _registry(app)["panels"].append(DashboardPanel(template, frozenset(roles), context or (lambda: {}), order))


def add_demo_loader(app: Flask, loader: Callable[[], None], order: int = 100) -> None:
    """Register a function that loads this feature's demo data (idempotently)."""
    _registry(app)["demo"].append((order, loader))


def nav_for(app: Flask, roles: Iterable[Role]) -> list[NavItem]:
    roles = set(roles)
    return sorted((i for i in _registry(app)["nav"] if i.roles & roles), key=lambda i: i.order)


def panels_for(app: Flask, roles: Iterable[Role]) -> list[DashboardPanel]:
    roles = set(roles)
    return sorted((p for p in _registry(app)["panels"] if p.roles & roles), key=lambda p: p.order)


def demo_loaders(app: Flask) -> list[Callable[[], None]]:
    return [loader for _, loader in sorted(_registry(app)["demo"], key=lambda pair: pair[0])]


def add_route_examples(app: Flask, examples: Callable[[], dict[str, list]]) -> None:
    """Register a function naming real values for this feature's URL arguments (taken from the
    demo data), e.g. ``{"batch_id": [1, 2], "identifier": ["W0000260000017"]}``. Route walks
    (access matrix, masking) use them to visit every page with real records."""
    _registry(app)["examples"].append(examples)


def route_examples(app: Flask) -> dict[str, list]:
    merged: dict[str, list] = {}
    for examples in _registry(app)["examples"]:
        for name, values in examples().items():
            merged.setdefault(name, [])
            merged[name] += [v for v in values if v not in merged[name]]
    return merged
