"""The trial: configuration, patients, concealed randomization, masking, dose, infusion orders
and follow-up (NCT04282928)."""
from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l


def init_app(app: Flask) -> None:
    from labsys.auth.roles import Role
    from labsys.navigation import add_demo_loader, add_nav, add_panel
    from labsys.trial import demo, masking, models, sealing, views  # noqa: F401  (models: mappers)

    sealing.ensure_key(app.instance_path)
    app.register_blueprint(views.bp)
    app.register_blueprint(views.api)
    masking.register_template_helpers(app)
    add_nav(app, _l("Trial"), "trial.index", [Role.PHARMACIST, Role.INVESTIGATOR], order=500)
    add_panel(app, "trial/_panel.html", [Role.PHARMACIST, Role.INVESTIGATOR], views.panel_context, order=500)
    add_demo_loader(app, demo.load_demo_data, order=500)
