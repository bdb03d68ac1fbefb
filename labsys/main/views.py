"""The home page (each role's dashboard) and the unauthenticated health check."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template
from flask_login import current_user
from sqlalchemy import text

from labsys import __version__
from labsys.auth.roles import allow_public, allow_signed_in
from labsys.extensions import db
from labsys.navigation import nav_for, panels_for

bp = Blueprint("main", __name__)


@bp.route("/")
@allow_signed_in
def home():
    panels = [(panel, panel.context()) for panel in panels_for(current_app, current_user.role_set)]
    return render_template("main/home.html", panels=panels,
                           links=nav_for(current_app, current_user.role_set))


@bp.route("/api/v1/me")
@allow_signed_in
def api_me():
    """Who the API token (or browser session) acts as: scanners call it to check their token."""
    return jsonify({"username": current_user.username, "full_name": current_user.full_name,
                    "roles": sorted(r.value for r in current_user.role_set)})


@bp.route("/healthz")
@allow_public
def healthz():
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        database = "ok"
    except Exception as error:  # report, don't crash: this is what monitoring reads
        db.session.rollback()
        database = f"error: {type(error).__name__}"
    status = 200 if database == "ok" else 503
    return jsonify({"app": "labsys", "version": __version__, "status": "ok" if status == 200 else "degraded",
                    "database": database, "engine": db.engine.dialect.name}), status
