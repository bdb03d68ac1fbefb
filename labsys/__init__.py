"""labsys: lab information and release system for HUC-MSC cell-therapy lots."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from flask import Flask, g, request, session
from flask_login import current_user

__version__ = "0.1.0"

# Feature packages in flow order; each has ``init_app(app)`` registering its blueprints,
# menus, dashboard panels, CLI commands and demo data.
FEATURES = [
    "labsys.audit",
    "labsys.auth",
    "labsys.main",
    "labsys.batches",
    "labsys.potency",
    "labsys.release",
    "labsys.trial",
    "labsys.chain_of_custody",
]

PACKAGE_DIR = Path(__file__).resolve().parent


def create_app(config: dict[str, Any] | object | None = None) -> Flask:
    """Application factory. ``config`` is a mapping or object of settings overriding Config."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static",
                instance_path=str(_instance_path()))
    configure(app, config)
    register_extensions(app)
    register_features(app)
    register_template_helpers(app)
    register_security_headers(app)
    from labsys.errors import register_errorhandlers

    register_errorhandlers(app)
    register_commands(app)
    return app


def _instance_path() -> Path:
    from labsys.config import INSTANCE_DIR

    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    return INSTANCE_DIR


def configure(app: Flask, config: dict[str, Any] | object | None) -> None:
    from labsys.config import Config

    app.config.from_object(Config)
    if isinstance(config, dict):
        app.config.update(config)
    elif config is not None:
        app.config.from_object(config)
    # Every feature keeps its own catalog next to its code: labsys/<feature>/translations.
    directories = sorted(str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.glob("**/translations") if p.is_dir())
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", ";".join(directories) or "translations")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql://"):
        app.config["SQLALCHEMY_DATABASE_URI"] = app.config["SQLALCHEMY_DATABASE_URI"].replace(
            "postgresql://", "postgresql+psycopg://", 1)


def select_locale() -> str:
    """The signed-in user's language, else the one picked on the sign-in page, else the browser's."""
    from flask import current_app, has_request_context

    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    choices = current_app.config["LANGUAGES"]
    if current_user and current_user.is_authenticated and current_user.locale in choices:
        return current_user.locale
    if session.get("locale") in choices:
        return session["locale"]
    best = request.accept_languages.best_match(["en", "zh", "zh-CN", "zh-Hans"])
    return "zh_CN" if best and best.startswith("zh") else "en"


def register_extensions(app: Flask) -> None:
    from labsys.extensions import babel, csrf, db, limiter, login_manager, migrate

    db.init_app(app)
    from labsys.db import ping_idle_connections

    with app.app_context():
        ping_idle_connections(db.engine, app.config["DB_PING_IDLE_SECONDS"])
    from labsys.batches.search import outside_models

    migrate.init_app(app, db, directory=str(PACKAGE_DIR.parent / "migrations"), render_as_batch=True,
                     compare_type=True, render_item=_render_migration_type, include_name=outside_models)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    _check_decorated_limits_only(app, limiter)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=lambda: app.config["LAB_TIMEZONE"])


def _check_decorated_limits_only(app: Flask, limiter: Any) -> None:
    """labsys limits one route (the sign-in POST, ``@limiter.limit``), and a decorated view checks
    its own limit when it is called. Flask-Limiter's app-wide before-request hook is only needed
    for default, application or blueprint limits, of which labsys has none; it cost every other
    request ≈ 0.13 ms (a fifth of /healthz) resolving that no limit applies, so it is removed.
    Should such limits ever be configured, the hook stays."""
    manager = limiter.limit_manager
    if manager._default_limits or manager._application_limits or manager._blueprint_limits:
        return
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if hook != limiter._check_request_limit]


def _render_migration_type(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Migrations spell UTC timestamps as plain ``sa.DateTime(timezone=True)``."""
    from labsys.db import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def register_features(app: Flask) -> None:
    for name in FEATURES:
        importlib.import_module(name).init_app(app)


def register_template_helpers(app: Flask) -> None:
    from labsys.navigation import nav_for
    from labsys.timefmt import format_date, format_datetime, format_number

    app.jinja_env.filters["labtime"] = format_datetime
    app.jinja_env.filters["labdate"] = format_date
    app.jinja_env.filters["labnumber"] = format_number
    app.jinja_env.tests["startingwith"] = lambda value, prefix: str(value).startswith(prefix)
    app.jinja_env.add_extension("jinja2.ext.do")

    @app.context_processor
    def inject_translations() -> dict[str, Any]:
        """The page's catalog, looked up once per page: ``_()`` and ``gettext()`` in a template
        then translate without asking Flask-Babel for the request's locale and catalog on each
        of a page's ~80 strings (templates imported without context use the global ones)."""
        from jinja2.ext import _make_new_gettext, _make_new_ngettext

        from labsys.i18n import catalog as request_catalog

        catalog = request_catalog()
        gettext = _make_new_gettext(catalog.ugettext)
        return {"_": gettext, "gettext": gettext, "ngettext": _make_new_ngettext(catalog.ungettext)}

    @app.context_processor
    def inject_navigation() -> dict[str, Any]:
        from labsys.i18n import locale_name

        items = nav_for(app, current_user.role_set) if current_user.is_authenticated else []
        return {"nav_items": items, "languages": app.config["LANGUAGES"],
                "current_locale": locale_name() or "None", "labsys_version": __version__}


def register_security_headers(app: Flask) -> None:
    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                           "script-src 'self'; object-src 'none'; base-uri 'self'; "
                           "form-action 'self'; frame-ancestors 'none'")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Permissions-Policy", "geolocation=(), microphone=(), camera=(self)")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.is_secure or app.config["SESSION_COOKIE_SECURE"]:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        # A signed-in user's pages are never stored. Flask-Login keeps the loaded user in
        # g._login_user; reading it (not current_user.is_authenticated, which reads the user's
        # row again after a rollback) costs no query.
        user = g.get("_login_user")
        if user is not None and not user.is_anonymous:
            headers.setdefault("Cache-Control", "no-store")
        return response


def register_commands(app: Flask) -> None:
    from labsys.cli import demo_data_command, users_cli

    app.cli.add_command(users_cli)
    app.cli.add_command(demo_data_command)
    from labsys.perfdata import perf_data_command

    app.cli.add_command(perf_data_command)
    from labsys import backup

    backup.init_app(app)
