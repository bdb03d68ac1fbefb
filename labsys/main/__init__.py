"""Home page per role, health check."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from labsys.main import views

    app.register_blueprint(views.bp)
