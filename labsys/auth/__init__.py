"""Users, roles, sign-in, sessions and e-signatures."""
from __future__ import annotations

from flask import Flask, abort, flash, g, jsonify, redirect, request, url_for
from flask_login import current_user

from labsys.auth.roles import AUTHENTICATED, PUBLIC, access_of, roles_may
from labsys.extensions import csrf, login_manager
from labsys.i18n import gettext as _
from labsys.i18n import lazy_gettext as _l

# Endpoints a user who must change their password may still use.
_PASSWORD_GATE_OPEN = {"auth.change_password", "auth.logout", "auth.set_language", "static",
                       "main.healthz"}


def init_app(app: Flask) -> None:
    from labsys.auth import admin_views, services, views

    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to continue.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load_user(token: str):
        return services.load_session_user(token)

    @login_manager.request_loader
    def load_user_from_token(req):
        """Scanners and scripts send ``Authorization: Bearer <token>`` to /api/ routes only."""
        header = req.headers.get("Authorization", "")
        if req.path.startswith("/api/") and header.startswith("Bearer "):
            user = services.load_token_user(header[7:].strip())
            if user is not None:
                g.api_token_auth = True
            return user
        return None

    @app.before_request
    def check_csrf():
        """CSRF on every state-changing request, except API calls authenticated by a bearer
        token (no cookie is involved, so there is nothing to forge). Browser calls to the API
        send the token in the X-CSRFToken header."""
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return None
        if request.path.startswith("/api/") and request.headers.get("Authorization", "").startswith("Bearer "):
            return None
        csrf.protect()
        return None

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify({"error": "Unauthorized", "message": _("Sign in or send an API token."),
                            "reasons": []}), 401
        flash(_("Please sign in to continue. Sessions end after %(m)d idle minutes.",
                m=app.config["IDLE_TIMEOUT_MINUTES"]), "info")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    @app.before_request
    def enforce_access():
        """Deny by default: a route must declare who may use it (labsys.auth.roles)."""
        if request.endpoint is None:
            return None  # unknown URL: the 404 handler answers
        view = app.view_functions.get(request.endpoint)
        access = access_of(view)
        if request.endpoint == "static":
            return None
        if access is None:
            app.logger.error("route %s declares no access; refused", request.endpoint)
            abort(403)
        if access == PUBLIC:
            return None
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if services.password_change_due(current_user) and request.endpoint not in _PASSWORD_GATE_OPEN:
            if request.path.startswith("/api/"):
                abort(403)
            flash(_("Choose your own password before you continue."), "info")
            return redirect(url_for("auth.change_password"))
        if access != AUTHENTICATED and not roles_may(access, current_user.role_set):
            abort(403)
        g.user = current_user
        return None

    app.register_blueprint(views.bp)
    app.register_blueprint(admin_views.bp)
    from labsys.auth.roles import Role
    from labsys.navigation import add_nav

    add_nav(app, _l("Users"), "admin.users", [Role.ADMIN], order=950)
    from labsys.navigation import add_route_examples

    def examples() -> dict[str, list]:
        from sqlalchemy import select
        from labsys.auth.models import ApiToken, User
        from labsys.extensions import db

        return {"user_id": list(db.session.scalars(select(User.id).limit(3))),
                "token_id": list(db.session.scalars(select(ApiToken.id).limit(2)))}

    add_route_examples(app, examples)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # check_csrf above decides

    from labsys.auth.forms import MEANING_LABELS
    from labsys.auth.models import SignatureMeaning

    app.jinja_env.globals["meaning_label"] = lambda m: MEANING_LABELS[SignatureMeaning(m)]
