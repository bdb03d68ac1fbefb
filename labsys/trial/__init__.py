"""The trial: configuration, patients, concealed randomization, masking, dose, infusion orders
and follow-up (NCT04282928)."""
from __future__ import annotations

from flask import Flask

from labsys.i18n import lazy_gettext as _l


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
    from labsys.navigation import add_route_examples

    add_route_examples(app, route_examples)


def route_examples() -> dict[str, list]:
    """Real values for the trial's URL arguments, from whatever is in the database."""
    from labsys.trial import orders, services

    trial = services.get_trial()
    if trial is None:
        return {}
    patients = services.patients(trial)
    preparations = [orders.preparation_of(o) for o in orders.all_orders()]
    lots = sorted({p.lot_identifier for p in preparations if p is not None})
    return {
        "patient_id": [p.id for p in patients],
        "order_id": [o.id for o in orders.all_orders()],
        "study_day": trial.visit_day_list,
        "lot_identifier": lots or ["W000026000123"],
        "study_id": [p.study_id for p in patients if p.study_id] + [p.kit_number for p in patients if p.kit_number],
    }
