"""The append-only, hash-chained audit trail."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from labsys.audit import cli, views
    from labsys.auth.roles import Role
    from labsys.navigation import add_nav
    from labsys.i18n import lazy_gettext as _l

    app.register_blueprint(views.bp)
    app.cli.add_command(cli.audit_cli)
    from labsys.audit.privileges import privileges_cli

    app.cli.add_command(privileges_cli)
    add_nav(app, _l("Audit trail"), "audit.trail", [Role.QA, Role.ADMIN], order=900)
